//! What a task on the host's network may reach on loopback.
//!
//! Loopback is no boundary between a task and its host: the masters, the
//! agent, the frameworks' APIs and whatever else the host serves on
//! 127.0.0.1 are one `connect` away from every task that shares the host's
//! network. The filter lets a task's sockets reach, on loopback, only
//! listeners that tasks made (any task's, on any port) and the ports the
//! agent allows (its executor API, `--task-loopback`); everything else on
//! loopback fails with `EPERM`. Other addresses, and tasks with a network
//! namespace of their own, are not touched.
//!
//! Seven programs on the agent's parent cgroup (v2; on a v1 host, the
//! parent in the unified hierarchy that every container also joins):
//! - `cgroup/sock_create` marks every IPv4 and IPv6 socket a container
//!   makes: its priority becomes [`TASK_PRIORITY`], whose low 16 bits are
//!   0, so queueing disciplines (which look at those bits) treat it as the
//!   default priority 0; in the host's namespace it refuses protocols the
//!   others cannot follow;
//! - `cgroup/connect4`, `connect6`, `sendmsg4` and `sendmsg6`: in the
//!   host's network namespace, a destination on loopback (127.0.0.0/8,
//!   `::1`, the unspecified addresses, which mean the local host, and IPv4
//!   mapped into IPv6) is let through if its port is allowed or the socket
//!   listening there (TCP) or bound there (UDP) carries the mark;
//! - `cgroup/bind4` and `bind6`: no share of a port a host socket holds
//!   (`SO_REUSEPORT`, `SO_REUSEADDR`), on any address.

use std::io;
use std::ops::RangeInclusive;
use std::path::Path;

use super::CgroupError;
use super::bpf::{
    self, ADD64_K, AND32_K, Asm, BE16, CALL, Insn, JEQ_K, JEQ32_K, JLE32_K, JLT32_K, JNE_X, JNE32_K, LDX_W, Label,
    MOV32_K, MOV64_K, MOV64_X, ST_H, ST_W, STX_H, STX_W,
};

/// The priority of every socket made in a container; it tells a task's
/// listener from the host's. A task that sets its socket's priority
/// (`SO_PRIORITY`, `IP_TOS`) makes its listener the host's for others.
pub const TASK_PRIORITY: u32 = 0x6d7a_0000;

/// Ports on loopback tasks may reach by default besides each other's:
/// DNS, for stub resolvers on 127.0.0.53 (systemd-resolved) or 127.0.0.1.
pub const DEFAULT_PORTS: [RangeInclusive<u16>; 1] = [53..=53];

/// Most port ranges one filter holds (each costs two instructions).
pub const MAX_RANGES: usize = 256;

/// The filter of one agent: allowed ports and the network namespace it
/// applies in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopbackFilter {
    ports: Vec<RangeInclusive<u16>>,
    host_netns: u64,
}

impl LoopbackFilter {
    /// A filter for the network namespace this process is in, allowing
    /// `ports` (merged; at most [`MAX_RANGES`] ranges after merging).
    pub fn new(ports: &[RangeInclusive<u16>]) -> io::Result<Self> {
        let filter = Self::for_netns(ports, current_netns_cookie()?);
        if filter.ports.len() > MAX_RANGES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} port ranges; at most {MAX_RANGES}", filter.ports.len()),
            ));
        }
        Ok(filter)
    }

    fn for_netns(ports: &[RangeInclusive<u16>], host_netns: u64) -> Self {
        let mut sorted: Vec<RangeInclusive<u16>> = ports.iter().filter(|r| !r.is_empty()).cloned().collect();
        sorted.sort_by_key(|r| *r.start());
        let mut merged: Vec<RangeInclusive<u16>> = Vec::new();
        for r in sorted {
            match merged.last_mut() {
                Some(last) if u32::from(*r.start()) <= u32::from(*last.end()) + 1 => {
                    *last = *last.start()..=(*last.end()).max(*r.end());
                }
                _ => merged.push(r),
            }
        }
        LoopbackFilter {
            ports: merged,
            host_netns,
        }
    }

    /// The allowed ports, merged.
    pub fn ports(&self) -> &[RangeInclusive<u16>] {
        &self.ports
    }
}

/// Parses `--task-loopback`: `all` (no filter), `none` (only other tasks
/// and the executor API), or ports and ranges, comma-separated (`53,8500-8502`).
pub fn parse_ports(text: &str) -> Result<Option<Vec<RangeInclusive<u16>>>, String> {
    let text = text.trim();
    match text {
        "all" => return Ok(None),
        "none" => return Ok(Some(Vec::new())),
        _ => {}
    }
    let port = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{s:?} is not a port (1-65535)"))
    };
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let range = match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (port(a)?, port(b)?);
                if a > b {
                    return Err(format!("{item:?}: the range ends before it starts"));
                }
                a..=b
            }
            None => {
                let p = port(item)?;
                p..=p
            }
        };
        out.push(range);
    }
    if out.is_empty() {
        return Err("no ports: say `none` for none, `all` for no filter".into());
    }
    // One is kept for the executor API's port.
    if out.len() >= MAX_RANGES {
        return Err(format!("{} ranges; at most {}", out.len(), MAX_RANGES - 1));
    }
    Ok(Some(out))
}

/// The cookie of this process's network namespace (`SO_NETNS_COOKIE`,
/// Linux 5.14), as `bpf_get_netns_cookie` returns it for a socket there.
fn current_netns_cookie() -> io::Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: a valid socket, and a u64 with its length for the kernel to fill.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

// Program and attach types, helpers (`linux/bpf.h`).
const BPF_PROG_TYPE_CGROUP_SOCK: u32 = 9;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const BPF_CGROUP_INET_SOCK_CREATE: u32 = 2;
const BPF_CGROUP_INET4_CONNECT: u32 = 10;
const BPF_CGROUP_INET6_CONNECT: u32 = 11;
const BPF_CGROUP_UDP4_SENDMSG: u32 = 14;
const BPF_CGROUP_UDP6_SENDMSG: u32 = 15;
const BPF_CGROUP_INET4_BIND: u32 = 8;
const BPF_CGROUP_INET6_BIND: u32 = 9;
const HELPER_SK_LOOKUP_TCP: i32 = 84;
const HELPER_SK_LOOKUP_UDP: i32 = 85;
const HELPER_SK_RELEASE: i32 = 86;
const HELPER_GET_NETNS_COOKIE: i32 = 122;
/// `netns` argument of the lookups: the socket's own namespace.
const CURRENT_NETNS: i32 = -1;

// Offsets in `struct bpf_sock_addr` and `struct bpf_sock`.
const USER_IP4: i16 = 4;
const USER_IP6: i16 = 8;
const USER_PORT: i16 = 24;
const SOCK_ADDR_PROTOCOL: i16 = 36;
const SOCK_PROTOCOL: i16 = 12;
const SOCK_PRIORITY: i16 = 20;
const IPPROTO_TCP: i32 = 6;
const IPPROTO_UDP: i32 = 17;
/// Protocols a task may open sockets of on the host's network: TCP and
/// UDP, which the filters follow; ICMP and ICMPv6 (ping sockets, which
/// have no port to reach a service by); MPTCP, whose subflows are TCP.
const FOLLOWED_PROTOCOLS: [i32; 5] = [IPPROTO_TCP, IPPROTO_UDP, 1, 58, 262];

/// A u32 as loaded from an address in network order: the bytes as they
/// are, whatever the host's byte order.
const fn wire(bytes: [u8; 4]) -> i32 {
    u32::from_ne_bytes(bytes) as i32
}

const LOOPBACK4: i32 = wire([127, 0, 0, 1]);
const FIRST_OCTET: i32 = wire([0xff, 0, 0, 0]);
const NET127: i32 = wire([127, 0, 0, 0]);
const MAPPED: i32 = wire([0, 0, 0xff, 0xff]);
const LOOPBACK6_LAST: i32 = wire([0, 0, 0, 1]);

/// Which socket-address hook a program is for (the mark's is apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    Connect4,
    Connect6,
    Sendmsg4,
    Sendmsg6,
    Bind4,
    Bind6,
}

impl Hook {
    const ALL: [Hook; 6] = [
        Hook::Connect4,
        Hook::Connect6,
        Hook::Sendmsg4,
        Hook::Sendmsg6,
        Hook::Bind4,
        Hook::Bind6,
    ];

    fn attach_type(self) -> u32 {
        match self {
            Hook::Connect4 => BPF_CGROUP_INET4_CONNECT,
            Hook::Connect6 => BPF_CGROUP_INET6_CONNECT,
            Hook::Sendmsg4 => BPF_CGROUP_UDP4_SENDMSG,
            Hook::Sendmsg6 => BPF_CGROUP_UDP6_SENDMSG,
            Hook::Bind4 => BPF_CGROUP_INET4_BIND,
            Hook::Bind6 => BPF_CGROUP_INET6_BIND,
        }
    }

    fn v6(self) -> bool {
        matches!(self, Hook::Connect6 | Hook::Sendmsg6 | Hook::Bind6)
    }

    fn name(self) -> &'static str {
        match self {
            Hook::Connect4 => "mezzo_lo_conn4",
            Hook::Connect6 => "mezzo_lo_conn6",
            Hook::Sendmsg4 => "mezzo_lo_send4",
            Hook::Sendmsg6 => "mezzo_lo_send6",
            Hook::Bind4 => "mezzo_lo_bind4",
            Hook::Bind6 => "mezzo_lo_bind6",
        }
    }

    fn connect(self) -> bool {
        matches!(self, Hook::Connect4 | Hook::Connect6)
    }

    fn program(self, f: &LoopbackFilter) -> Vec<Insn> {
        match self {
            Hook::Bind4 | Hook::Bind6 => bind_program(self.v6(), f),
            _ => filter_program(self, f),
        }
    }
}

/// `cgroup/sock_create`: every new socket gets [`TASK_PRIORITY`] (a store
/// into the context must come from a register); in the host's network
/// namespace, one of a protocol the filters cannot follow (SCTP, UDP-Lite,
/// DCCP: their connects and datagrams pass no hook, or are looked up in
/// another protocol's table) is refused (`EPERM`).
fn mark_program(f: &LoopbackFilter) -> Vec<Insn> {
    let mut a = Asm::default();
    let (mark, refuse) = (a.label(), a.label());
    outside_host_netns(&mut a, f, mark);
    a.op(LDX_W, 2, 6, SOCK_PROTOCOL, 0);
    for protocol in FOLLOWED_PROTOCOLS {
        a.jump(JEQ32_K, 2, protocol, mark);
    }
    a.goto(refuse);
    a.bind(mark);
    a.op(MOV32_K, 2, 0, 0, TASK_PRIORITY as i32);
    a.op(STX_W, 6, 2, SOCK_PRIORITY, 0);
    a.ret(1);
    a.bind(refuse);
    a.ret(0);
    a.finish()
}

/// Keeps the context in r6 and jumps to `to` unless the socket is in the
/// host's network namespace (the agent's).
fn outside_host_netns(a: &mut Asm, f: &LoopbackFilter, to: Label) {
    a.op(MOV64_X, 6, 1, 0, 0);
    a.op(CALL, 0, 0, 0, HELPER_GET_NETNS_COOKIE);
    a.ld_imm64(1, f.host_netns);
    a.jump_reg(JNE_X, 0, 1, to);
}

/// The program's end: `deny` returns 0 (`EPERM`), `allow` 1.
fn verdicts(mut a: Asm, allow: Label, deny: Label) -> Vec<Insn> {
    a.bind(deny);
    a.ret(0);
    a.bind(allow);
    a.ret(1);
    a.finish()
}

/// The program for `hook`. Registers: r6 the context, r7 the destination
/// address (IPv4, or the last word of IPv6), r8 the port as the context
/// holds it (network order in the low 16 bits), r9 the priority of the
/// socket found there.
fn filter_program(hook: Hook, f: &LoopbackFilter) -> Vec<Insn> {
    let mut a = Asm::default();
    let (allow, deny) = (a.label(), a.label());
    outside_host_netns(&mut a, f, allow);
    if hook.v6() {
        let (mapped, local6) = (a.label(), a.label());
        for word in 0..2 {
            a.op(LDX_W, 2, 6, USER_IP6 + 4 * word, 0);
            a.jump(JNE32_K, 2, 0, allow);
        }
        a.op(LDX_W, 2, 6, USER_IP6 + 8, 0);
        a.op(LDX_W, 7, 6, USER_IP6 + 12, 0);
        a.jump(JEQ32_K, 2, MAPPED, mapped);
        a.jump(JNE32_K, 2, 0, allow);
        a.jump(JEQ32_K, 7, LOOPBACK6_LAST, local6);
        a.jump(JNE32_K, 7, 0, allow);
        // `::`: the kernel would pick the destination after this program
        // (the source's address, for a socket bound to mapped IPv4); it
        // goes where the filter looked instead.
        a.op(MOV32_K, 7, 0, 0, LOOPBACK6_LAST);
        a.op(STX_W, 6, 7, USER_IP6 + 12, 0);
        a.bind(local6);
        tail(&mut a, hook, f, true, allow, deny);
        a.bind(mapped);
    } else {
        a.op(LDX_W, 7, 6, USER_IP4, 0);
    }
    // An IPv4 destination in r7.
    let local4 = a.label();
    a.op(MOV64_X, 2, 7, 0, 0);
    a.op(AND32_K, 2, 0, 0, FIRST_OCTET);
    a.jump(JEQ32_K, 2, NET127, local4);
    a.jump(JNE32_K, 7, 0, allow);
    // `0.0.0.0`: the kernel would route to the source's address (a socket
    // bound to 127.0.0.2, or a datagram's `IP_PKTINFO`) after this
    // program; it goes where the filter looked instead.
    a.op(MOV32_K, 7, 0, 0, LOOPBACK4);
    let at = if hook.v6() { USER_IP6 + 12 } else { USER_IP4 };
    a.op(STX_W, 6, 7, at, 0);
    a.bind(local4);
    tail(&mut a, hook, f, false, allow, deny);
    verdicts(a, allow, deny)
}

/// For a destination on loopback (r7, normalised from unspecified): allow
/// an allowed port, else look up the socket there (a tuple on the stack)
/// and allow it if it carries the mark.
fn tail(a: &mut Asm, hook: Hook, f: &LoopbackFilter, v6: bool, allow: Label, deny: Label) {
    a.op(LDX_W, 8, 6, USER_PORT, 0);
    a.op(MOV64_X, 3, 8, 0, 0);
    a.op(BE16, 3, 0, 0, 16);
    for r in &f.ports {
        let (lo, hi) = (i32::from(*r.start()), i32::from(*r.end()));
        if lo == hi {
            a.jump(JEQ32_K, 3, lo, allow);
        } else {
            a.op(JLT32_K, 3, 0, 1, lo);
            a.jump(JLE32_K, 3, hi, allow);
        }
    }
    let tuple = if v6 {
        for at in [-40i16, -24] {
            for w in 0..3 {
                a.op(ST_W, 10, 0, at + 4 * w, 0);
            }
            a.op(STX_W, 10, 7, at + 12, 0);
        }
        tuple_ports(a, TUPLE6)
    } else {
        tuple4(a)
    };
    // The socket table of the connecting socket's protocol: TCP or UDP
    // for a connect, UDP for a datagram; any other (ICMP, SCTP, MPTCP)
    // reaches loopback on allowed ports only.
    let tables = if hook.connect() {
        Tables::ByProtocol
    } else {
        Tables::Udp
    };
    lookup(
        a,
        tuple,
        tables,
        Found {
            marked: allow,
            other: deny,
            none: deny,
        },
    );
}

/// Where a `struct bpf_sock_tuple` is on the stack, and its size: source
/// and destination address, then the ports. The source is the
/// destination (only the listening or bound socket matters).
type Tuple = (i16, i32);
const TUPLE4: Tuple = (-16, 12);
const TUPLE6: Tuple = (-40, 36);

/// The IPv4 tuple of the address in r7 and the port in r8.
fn tuple4(a: &mut Asm) -> Tuple {
    a.op(STX_W, 10, 7, -16, 0);
    a.op(STX_W, 10, 7, -12, 0);
    tuple_ports(a, TUPLE4)
}

/// The tuple's ports (after either family's addresses): none, and r8.
fn tuple_ports(a: &mut Asm, tuple: Tuple) -> Tuple {
    a.op(ST_H, 10, 0, -8, 0);
    a.op(STX_H, 10, 8, -6, 0);
    tuple
}

/// Which socket table a lookup searches.
#[derive(Clone, Copy)]
enum Tables {
    /// TCP's or UDP's, as the socket's protocol (other protocols: `none`).
    ByProtocol,
    Udp,
}

/// Where a lookup goes on: a socket with the mark, one without, none.
struct Found {
    marked: Label,
    other: Label,
    none: Label,
}

/// Looks up the socket at the tuple on the stack (`start`, `size`), in
/// the socket's own network namespace, and jumps by what it finds.
fn lookup(a: &mut Asm, (start, size): Tuple, tables: Tables, to: Found) {
    let (tcp, udp) = (a.label(), a.label());
    let mut searched = vec![(udp, HELPER_SK_LOOKUP_UDP)];
    if let Tables::ByProtocol = tables {
        a.op(LDX_W, 2, 6, SOCK_ADDR_PROTOCOL, 0);
        a.jump(JEQ32_K, 2, IPPROTO_TCP, tcp);
        a.jump(JEQ32_K, 2, IPPROTO_UDP, udp);
        a.goto(to.none);
        searched.insert(0, (tcp, HELPER_SK_LOOKUP_TCP));
    }
    for (label, helper) in searched {
        a.bind(label);
        a.op(MOV64_X, 1, 6, 0, 0);
        a.op(MOV64_X, 2, 10, 0, 0);
        a.op(ADD64_K, 2, 0, 0, i32::from(start));
        a.op(MOV64_K, 3, 0, 0, size);
        a.op(MOV64_K, 4, 0, 0, CURRENT_NETNS);
        a.op(MOV64_K, 5, 0, 0, 0);
        a.op(CALL, 0, 0, 0, helper);
        a.jump(JEQ_K, 0, 0, to.none);
        a.op(LDX_W, 9, 0, SOCK_PRIORITY, 0);
        a.op(MOV64_X, 1, 0, 0, 0);
        a.op(CALL, 0, 0, 0, HELPER_SK_RELEASE);
        a.jump(JEQ32_K, 9, TASK_PRIORITY as i32, to.marked);
        a.goto(to.other);
    }
}

/// `cgroup/bind4` and `bind6`: in the host's network namespace, a bind to
/// a port where a socket of the host's (without the mark) already is
/// fails with `EPERM`. With `SO_REUSEPORT` (same user) a task could join
/// a host service's group and take some of its connections, with
/// `SO_REUSEADDR` some of its datagrams; any address, not only loopback.
/// Binds to port 0, and among tasks' own sockets, go on.
fn bind_program(v6: bool, f: &LoopbackFilter) -> Vec<Insn> {
    let mut a = Asm::default();
    let (allow, deny) = (a.label(), a.label());
    outside_host_netns(&mut a, f, allow);
    a.op(LDX_W, 8, 6, USER_PORT, 0);
    a.jump(JEQ32_K, 8, 0, allow);
    let found = || Found {
        marked: allow,
        other: deny,
        none: allow,
    };
    if v6 {
        let native = a.label();
        a.op(LDX_W, 2, 6, USER_IP6, 0);
        a.jump(JNE32_K, 2, 0, native);
        a.op(LDX_W, 2, 6, USER_IP6 + 4, 0);
        a.jump(JNE32_K, 2, 0, native);
        a.op(LDX_W, 2, 6, USER_IP6 + 8, 0);
        a.jump(JNE32_K, 2, MAPPED, native);
        // Mapped IPv4: the IPv4 tables.
        a.op(LDX_W, 7, 6, USER_IP6 + 12, 0);
        let tuple = tuple4(&mut a);
        lookup(&mut a, tuple, Tables::ByProtocol, found());
        a.bind(native);
        for w in 0..4i16 {
            a.op(LDX_W, 2, 6, USER_IP6 + 4 * w, 0);
            a.op(STX_W, 10, 2, -40 + 4 * w, 0);
            a.op(STX_W, 10, 2, -24 + 4 * w, 0);
        }
        let tuple = tuple_ports(&mut a, TUPLE6);
        lookup(&mut a, tuple, Tables::ByProtocol, found());
    } else {
        a.op(LDX_W, 7, 6, USER_IP4, 0);
        let tuple = tuple4(&mut a);
        lookup(&mut a, tuple, Tables::ByProtocol, found());
    }
    verdicts(a, allow, deny)
}

impl LoopbackFilter {
    /// Attaches the marking program and the six socket-address programs
    /// (connect, sendmsg, bind) to the v2 cgroup `dir`, replacing those of an earlier agent at once (see
    /// [`bpf::attach`]); the mark first, so no socket made after a filter
    /// is in place goes unmarked.
    pub(super) fn attach(&self, dir: &Path) -> Result<(), CgroupError> {
        let mark = mark_program(self);
        bpf::attach(
            dir,
            &bpf::Program {
                prog_type: BPF_PROG_TYPE_CGROUP_SOCK,
                attach_type: BPF_CGROUP_INET_SOCK_CREATE,
                name: "mezzo_lo_mark",
                insns: &mark,
            },
            "the loopback filter's socket mark",
        )?;
        for hook in Hook::ALL {
            let insns = hook.program(self);
            let p = bpf::Program {
                prog_type: BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
                attach_type: hook.attach_type(),
                name: hook.name(),
                insns: &insns,
            };
            bpf::attach(dir, &p, "the loopback filter (`--task-loopback all` turns it off)")?;
        }
        Ok(())
    }
}

/// Takes the filter off `dir` (an agent restarted with `--task-loopback
/// all`), filters first.
pub(super) fn detach(dir: &Path) -> Result<(), CgroupError> {
    for hook in Hook::ALL {
        bpf::detach(dir, hook.attach_type())?;
    }
    bpf::detach(dir, BPF_CGROUP_INET_SOCK_CREATE)
}

/// How many of the filter's seven programs are attached to `dir` itself.
#[cfg(test)]
pub(super) fn attached(dir: &Path) -> io::Result<u32> {
    let mut n = bpf::attached(dir, BPF_CGROUP_INET_SOCK_CREATE)?;
    for hook in Hook::ALL {
        n += bpf::attached(dir, hook.attach_type())?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_and_merge() {
        assert_eq!(parse_ports("all"), Ok(None));
        assert_eq!(parse_ports("none"), Ok(Some(vec![])));
        assert_eq!(parse_ports(" 53, 8500-8502 "), Ok(Some(vec![53..=53, 8500..=8502])));
        for bad in ["", "0", "65536", "9-3", "x", ",", "1-"] {
            assert!(parse_ports(bad).is_err(), "{bad:?}");
        }
        let f = LoopbackFilter::for_netns(&[9..=9, 1..=3, 4..=5, 2..=2, 7..=8], 1);
        assert_eq!(f.ports(), &[1..=5, 7..=9]);
    }

    #[test]
    fn programs_jump_only_forward_to_their_own_instructions() {
        let f = LoopbackFilter::for_netns(&[53..=53, 8000..=8100], 7);
        for hook in Hook::ALL {
            let p = hook.program(&f);
            for (at, i) in p.iter().enumerate() {
                let class = i.code & 7;
                if (class == 5 || class == 6) && i.code != CALL && i.code != bpf::EXIT {
                    let to = at as i64 + 1 + i64::from(i.off);
                    assert!(to > at as i64 && (to as usize) < p.len(), "{hook:?} insn {at}: {i:?}");
                }
            }
        }
    }
}
