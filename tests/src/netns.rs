//! Network namespaces on a private bridge, for partition tests (needs root
//! and iproute2's `ip`).
//!
//! [`Net::new`] creates, in the root namespace, a bridge `mezzo<tag>-br`
//! holding `10.211.X.1/24` (X random per run, skipping subnets already in
//! use), and N namespaces `mezzo-ns-<tag>-<i>`, each joined to the bridge by
//! a veth pair (`mezzo<tag>-v<i>` on the bridge, `mezzo<tag>-p<i>` inside,
//! holding `10.211.X.(i+2)/24`) with loopback up. `<tag>` is the test
//! process's pid and a per-process counter in hex, so every name starts
//! with `mezzo` and fits the 15-character limit of interface names.
//!
//! The namespaces get no default route: their only reachable network is
//! the bridge's /24, so their traffic cannot leave it. Processes in the
//! root namespace reach them through the bridge address
//! ([`Net::gateway`]).
//!
//! Cleanup: dropping the `Net` (also while a test panics) SIGKILLs every
//! process still inside its namespaces, waits for them, then deletes the
//! namespaces (which deletes their veth ends, and so the pairs), any
//! remaining root-side veth and the bridge. Declare the `Net` *before* the
//! daemons that run inside it, so that Rust drops the daemons first (they
//! are killed the ordinary way, their logs complete) and the network
//! last. Leftovers of a test process that was itself SIGKILLed are swept
//! by the next [`Net::new`] (names carry the owner's pid), which also
//! kills their processes: those inside the namespaces, and the `mezzo`
//! processes of the root namespace with an argument on the stale subnet.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip").args(args).output().context("run `ip` (iproute2)")?;
    ensure!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip ARGS`, ignoring failure (cleanup).
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip").args(args).output();
}

/// One namespace on the bridge.
#[derive(Debug)]
struct Host {
    ns: String,
    veth: String,
    ip: Ipv4Addr,
}

/// A bridge and N namespaces; everything is deleted on drop.
#[derive(Debug)]
pub struct Net {
    tag: String,
    bridge: String,
    subnet: u8,
    hosts: Vec<Host>,
}

impl Net {
    /// Creates the bridge and `n` namespaces (at most 16).
    pub fn new(n: usize) -> Result<Net> {
        ensure!(n <= 16, "at most 16 namespaces");
        sweep_leftovers();
        let count = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xf;
        let tag = format!("{:x}", (std::process::id() << 4) | count);
        let subnet = free_subnet()?;
        let bridge = format!("mezzo{tag}-br");
        // Built up step by step: if a step fails, dropping `net` removes
        // what exists so far.
        let mut net = Net {
            tag,
            bridge,
            subnet,
            hosts: Vec::new(),
        };
        ip(&["link", "add", &net.bridge, "type", "bridge"])?;
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", net.bridge), "1");
        ip(&["addr", "add", &format!("{}/24", net.gateway()), "dev", &net.bridge])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        for i in 0..n {
            let host = Host {
                ns: format!("mezzo-ns-{}-{i:x}", net.tag),
                veth: format!("mezzo{}-v{i:x}", net.tag),
                ip: Ipv4Addr::new(10, 211, subnet, i as u8 + 2),
            };
            let peer = format!("mezzo{}-p{i:x}", net.tag);
            ip(&["netns", "add", &host.ns])?;
            let ns = host.ns.clone();
            let veth = host.veth.clone();
            let addr = format!("{}/24", host.ip);
            net.hosts.push(host);
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer])?;
            ip(&["link", "set", &peer, "netns", &ns])?;
            ip(&["link", "set", &veth, "master", &net.bridge])?;
            ip(&["link", "set", &veth, "up"])?;
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &peer])?;
            ip(&["-n", &ns, "link", "set", &peer, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// The bridge's address, the root namespace's side of the network.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 211, self.subnet, 1)
    }

    /// Namespace `i`'s name.
    pub fn ns(&self, i: usize) -> &str {
        &self.hosts[i].ns
    }

    /// Namespace `i`'s address.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        self.hosts[i].ip
    }

    /// The command prefix that runs a program inside namespace `i`.
    pub fn prefix(&self, i: usize) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.hosts[i].ns.clone()]
    }

    /// Cuts namespace `i` off the bridge (its bridge-side veth goes down):
    /// it can reach no one and no one can reach it.
    pub fn partition(&self, i: usize) -> Result<()> {
        ip(&["link", "set", &self.hosts[i].veth, "down"])?;
        Ok(())
    }

    /// Joins namespace `i` to the bridge again.
    pub fn heal(&self, i: usize) -> Result<()> {
        ip(&["link", "set", &self.hosts[i].veth, "up"])?;
        Ok(())
    }

    /// A GET from inside namespace `i` (with `curl`, at most 1 s, adding
    /// `curl_args`, e.g. the CA and a client certificate): the HTTP status
    /// and the body. Redirects are not followed.
    pub async fn http_get(&self, i: usize, url: &str, curl_args: &[String]) -> Result<(u16, String)> {
        let out = tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.hosts[i].ns, "curl", "-sS", "--noproxy", "*"])
            .args(curl_args)
            .args(["--max-time", "1", "-w", "\n%{http_code}", url])
            .kill_on_drop(true)
            .output()
            .await
            .context("run curl in a namespace")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let code: u16 = code.trim().parse().unwrap_or(0);
        if code == 0 {
            bail!(
                "GET {url} from {}: {}",
                self.hosts[i].ns,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok((code, body.to_owned()))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Processes keep a namespace (and its veth) alive after `ip netns
        // del`: kill them first.
        let deadline = Instant::now() + Duration::from_secs(5);
        for h in &self.hosts {
            loop {
                let pids = pids_in(&h.ns);
                if pids.is_empty() || Instant::now() > deadline {
                    break;
                }
                for pid in pids {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for h in &self.hosts {
            ip_quiet(&["netns", "del", &h.ns]);
            ip_quiet(&["link", "del", &h.veth]);
        }
        ip_quiet(&["link", "del", &self.bridge]);
    }
}

/// Pids of the processes in namespace `ns` (none once they are reaped).
fn pids_in(ns: &str) -> Vec<i32> {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A random X such that nothing on this host uses 10.211.X.0/24.
fn free_subnet() -> Result<u8> {
    use std::hash::{BuildHasher, Hasher};
    let used = ip(&["-4", "-o", "addr", "show"])? + ip(&["-4", "route", "show", "table", "all"])?.as_str();
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let seed = h.finish();
    for k in 0..254u64 {
        let x = ((seed.wrapping_add(k) % 253) + 1) as u8;
        if !used.contains(&format!("10.211.{x}.")) {
            return Ok(x);
        }
    }
    bail!("no free 10.211.X.0/24 subnet")
}

/// The owner pid in a tag (`pid << 4 | counter`, hex).
fn owner(tag: &str) -> Option<i32> {
    u32::from_str_radix(tag, 16).ok().map(|t| (t >> 4) as i32)
}

/// Deletes namespaces and links left by test processes that no longer
/// exist (a SIGKILLed test runs no `Drop`).
pub fn sweep_leftovers() {
    let dead = |tag: &str| owner(tag).is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists());
    if let Ok(list) = ip(&["netns", "list"]) {
        for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if let Some((tag, _)) = ns.strip_prefix("mezzo-ns-").and_then(|r| r.rsplit_once('-'))
                && dead(tag)
            {
                for pid in pids_in(ns) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                ip_quiet(&["netns", "del", ns]);
            }
        }
    }
    if let Ok(links) = ip(&["-o", "link", "show"]) {
        for l in links.lines() {
            // "7: mezzo1a2b3c-v0@if6: <...>"
            let Some(name) = l.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n)) else {
                continue;
            };
            if let Some((tag, kind)) = name.strip_prefix("mezzo").and_then(|r| r.split_once('-'))
                && (kind == "br" || kind.starts_with('v') || kind.starts_with('p'))
                && dead(tag)
            {
                if kind == "br" {
                    kill_root_daemons(name);
                }
                ip_quiet(&["link", "del", name]);
            }
        }
    }
}

/// SIGKILLs the `mezzo` processes of the root namespace (agents) that a
/// dead test left on bridge `bridge`: those with an argument on its subnet.
fn kill_root_daemons(bridge: &str) {
    let Ok(addrs) = ip(&["-4", "-o", "addr", "show", "dev", bridge]) else {
        return;
    };
    // "5: mezzo1a2b3-br    inet 10.211.7.1/24 ..."
    let Some(subnet) = addrs
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.rsplit_once('.'))
        .map(|(net, _)| format!("{net}."))
    else {
        return;
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_mezzo = args
            .first()
            .is_some_and(|a| std::path::Path::new(a).file_name().is_some_and(|n| n == "mezzo"));
        if is_mezzo && args.iter().any(|a| a.contains(&subnet)) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}
