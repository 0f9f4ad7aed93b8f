//! Benchmark driver for `scripts/bench --isolation-vs-crun`: Mezzo's
//! isolated launch against crun, side by side in one run.
//!
//! Mezzo: the agent's Linux containerizer (the library, as the agent's task
//! supervisor calls it) launches `/bin/true` with the default isolation
//! (cgroups in every hierarchy, pid/mount/uts/ipc namespaces, as `nobody`,
//! through the agent's container launcher). One launch
//! is timed from the moment the agent would receive it: the supervisor's
//! checkpoint write (`task.pb`), then `Containerizer::launch`, until
//!
//! - *executing*: the container's init takes the launch claim (a symlink
//!   in the run dir, seen with inotify), its last step before it starts
//!   the task's process: the cgroups, namespaces and the task's root are
//!   ready, and the task's `execve` is a few system calls away;
//! - *exited*: `Container::wait` returns the exit status the init
//!   recorded;
//! - *cycle*: `Container::cleanup` has removed the cgroups too.
//!
//! crun: `crun run` of `/bin/true` in a minimal busybox rootfs (its wall
//! time: create, start, wait, delete), with crun's default namespaces (net
//! included) and again without a network namespace (Mezzo's default set).
//!
//! Also Mezzo with a busybox OCI image as the task's root (an overlay of
//! its layers, imported into the store by the warm-up), like crun's rootfs.
//!
//! Throughput is whole cycles per second, one at a time and two at a time.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use hdrhistogram::Histogram;
use mezzo_agent::containerizer::{CommandSpec, ContainerSpec, Containerizer, LinuxConfig, LinuxContainerizer};
use mezzo_proto::resources::Resources;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

#[derive(Debug, Parser)]
#[command(about = "Isolated launch latency and rate: Mezzo's containerizer vs crun")]
struct Args {
    /// The `mezzo` binary (its `__container-init` supervises each container).
    #[arg(long)]
    exe: PathBuf,
    /// crun bundle with a busybox rootfs and `/bin/true` as the process;
    /// crun is skipped without it.
    #[arg(long)]
    crun_bundle: Option<PathBuf>,
    /// The same bundle without a network namespace.
    #[arg(long)]
    crun_bundle_nonet: Option<PathBuf>,
    /// Measured launches per system and concurrency.
    #[arg(long, default_value_t = 500)]
    launches: usize,
    /// Launches in flight at once, one measured run per value.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    concurrency: Vec<usize>,
    /// Unmeasured launches first.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Parent cgroup of Mezzo's containers.
    #[arg(long, default_value = "mezzo-isobench")]
    cgroup_parent: String,
    /// Where sandboxes and run dirs go.
    #[arg(long)]
    dir: PathBuf,
    /// Measure only the systems whose name contains one of these.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The agent's loopback filter on Mezzo's containers: `auto` (on where
    /// a cgroup2 hierarchy can hold it, as an agent has it), `on`, `off`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
    loopback_filter: String,
}

/// Latencies in microseconds.
struct Hist(Histogram<u64>);

impl Hist {
    fn new() -> Hist {
        Hist(Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"))
    }
    fn record(&mut self, d: Duration) {
        let _ = self.0.record((d.as_micros() as u64).max(1));
    }
    fn ms(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1000.0
    }
    fn line(&self) -> String {
        format!("p50 {:6.2} ms  p99 {:6.2} ms", self.ms(0.5), self.ms(0.99))
    }
}

#[derive(Default)]
struct Sample {
    /// `Containerizer::launch` returned (the container's init is started).
    launched: Option<Duration>,
    exec: Option<Duration>,
    exit: Option<Duration>,
    cycle: Duration,
}

struct Mezzo {
    c: LinuxContainerizer,
    dir: PathBuf,
    isolated_network: bool,
    /// Run `/bin/true` of this image (warm: imported by the warm-up).
    image: Option<mezzo_proto::image::ImageRef>,
}

impl Mezzo {
    async fn launch(&self, n: usize) -> Result<Sample> {
        let sandbox = self.dir.join("sandboxes").join(format!("t{n}"));
        let run_dir = self.dir.join("meta").join(format!("t{n}"));
        std::fs::create_dir_all(&sandbox)?;
        std::fs::create_dir_all(&run_dir)?;
        let watch = ClaimWatch::new(&run_dir)?;
        let spec = ContainerSpec {
            id: format!("bench/t{n}"),
            sandbox: sandbox.clone(),
            command: CommandSpec::Exec {
                program: "/bin/true".into(),
                args: vec![],
            },
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            resources: Resources::parse("cpus:1;mem:64")?,
            user: None,
            run_dir: run_dir.clone(),
            isolated_network: self.isolated_network,
            image: self.image.clone(),
            image_credentials: None,
            progress: None,
            mounts: vec![],
            unconfined: false,
            secret_files: Vec::new(),
            secret_env: Vec::new(),
        };
        let t0 = Instant::now();
        // What the task's supervisor does before it launches: checkpoint.
        std::fs::create_dir_all(&run_dir)?;
        mezzo_agent::paths::write_replace(&run_dir.join(mezzo_agent::paths::TASK_CHECKPOINT), &[0u8; 160])?;
        let mut container = self.c.launch(spec).await?;
        let launched = t0.elapsed();
        let exec = watch.wait(t0).await?;
        let status = container.wait().await?;
        let exit = t0.elapsed();
        container.cleanup().await?;
        let cycle = t0.elapsed();
        ensure!(
            matches!(status, mezzo_agent::containerizer::ExitStatus::Code(0)),
            "launch {n}: /bin/true ended with {status:?}"
        );
        let _ = std::fs::remove_dir_all(&sandbox);
        let _ = std::fs::remove_dir_all(&run_dir);
        Ok(Sample {
            launched: Some(launched),
            exec: Some(exec),
            exit: Some(exit),
            cycle,
        })
    }
}

/// inotify on a run dir: the moment the init takes the launch claim, read
/// by a blocking thread that takes the time as soon as the event arrives
/// and sends it before it closes the inotify instance (closing one waits
/// for an SRCU grace period, several ms here, which must not count).
struct ClaimWatch(tokio::sync::oneshot::Receiver<Result<Instant>>);

impl ClaimWatch {
    /// The init takes the launch claim (a symlink in the run dir) as its
    /// last step before the task's process exists: after the cgroups, the
    /// namespaces and the task's root are ready.
    fn new(dir: &Path) -> Result<ClaimWatch> {
        let ino = Inotify::init(InitFlags::IN_CLOEXEC)?;
        ino.add_watch(dir, AddWatchFlags::IN_CREATE)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let seen = (|| loop {
                let events = ino.read_events()?;
                let at = Instant::now();
                if events.iter().any(|e| {
                    e.name.as_deref() == Some(std::ffi::OsStr::new(mezzo_agent::containerizer::claim::CLAIM_FILE))
                }) {
                    return Ok(at);
                }
            })();
            let _ = tx.send(seen);
            drop(ino);
        });
        Ok(ClaimWatch(rx))
    }

    async fn wait(self, t0: Instant) -> Result<Duration> {
        let at = tokio::time::timeout(Duration::from_secs(10), self.0)
            .await
            .context("no launch claim within 10 s")??;
        Ok(at?.saturating_duration_since(t0))
    }
}

struct Crun {
    bundle: PathBuf,
}

impl Crun {
    async fn launch(&self, n: usize) -> Result<Sample> {
        let id = format!("mezzo-crunbench-{}-{n}", std::process::id());
        let t0 = Instant::now();
        let out = tokio::process::Command::new("crun")
            .arg("run")
            .arg("--bundle")
            .arg(&self.bundle)
            .arg(&id)
            .stdin(std::process::Stdio::null())
            .output()
            .await?;
        let cycle = t0.elapsed();
        if !out.status.success() {
            bail!("crun run {id}: {} {}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        Ok(Sample {
            launched: None,
            exec: None,
            exit: None,
            cycle,
        })
    }
}

enum System {
    Mezzo(Mezzo),
    Crun(Crun),
}

impl System {
    async fn launch(&self, n: usize) -> Result<Sample> {
        match self {
            System::Mezzo(m) => m.launch(n).await,
            System::Crun(c) => c.launch(n).await,
        }
    }
}

/// Runs `launches` launches, `concurrency` at a time; prints one line per
/// figure and returns the rate.
async fn measure(name: &str, sys: Arc<System>, launches: usize, warmup: usize, concurrency: usize) -> Result<f64> {
    for n in 0..warmup {
        sys.launch(1_000_000 + n).await?;
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (sys, next) = (sys.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= launches {
                    return Ok::<_, anyhow::Error>(samples);
                }
                samples.push(sys.launch(n).await?);
            }
        }));
    }
    let (mut launched, mut exec, mut exit, mut cycle) = (Hist::new(), Hist::new(), Hist::new(), Hist::new());
    for w in workers {
        for s in w.await?? {
            if let Some(d) = s.launched {
                launched.record(d);
            }
            if let Some(d) = s.exec {
                exec.record(d);
            }
            if let Some(d) = s.exit {
                exit.record(d);
            }
            cycle.record(s.cycle);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let rate = launches as f64 / secs;
    println!("  {name:<34} {concurrency} at a time: {rate:6.0} launches/s");
    if !exec.0.is_empty() {
        println!("  {:<34}   launch() returned     {}", "", launched.line());
        println!("  {:<34}   launch -> executing   {}", "", exec.line());
        println!("  {:<34}   launch -> exited      {}", "", exit.line());
    }
    println!("  {:<34}   whole cycle           {}", "", cycle.line());
    println!(
        "RESULT {{\"system\":\"{name}\",\"concurrency\":{concurrency},\"rate\":{rate:.1},\"exec_p50\":{:.3},\"exec_p99\":{:.3},\"cycle_p50\":{:.3},\"cycle_p99\":{:.3}}}",
        exec.ms(0.5),
        exec.ms(0.99),
        cycle.ms(0.5),
        cycle.ms(0.99)
    );
    Ok(rate)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match runtime.block_on(run(Args::parse())) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("iso-bench: {e:#}");
            1
        }
    };
    // Without waiting for a watcher thread still blocked on a launch that failed.
    std::process::exit(code);
}

async fn run(a: Args) -> Result<()> {
    ensure!(nix::unistd::geteuid().is_root(), "needs root (cgroups and namespaces)");
    let mut systems: Vec<(String, System)> = Vec::new();
    std::fs::create_dir_all(&a.dir)?;
    let view_root = a.dir.join("root");
    std::fs::create_dir_all(&view_root)?;
    // A busybox image like crun's rootfs, in a layout the agent imports
    // (during the warm-up: measured launches start from a warm store).
    let layouts = a.dir.join("layouts");
    mezzo_tests::oci::busybox_layout(&layouts.join("busybox"), "1", serde_json::json!({}), &[])?;
    let images = mezzo_agent::containerizer::image_task::ImageSource {
        layouts: Some(layouts),
        puller: mezzo_agent::images::Puller::new(&Default::default())?,
        store: Arc::new(mezzo_agent::images::Store::open(&a.dir.join("images"))?),
        max_bytes: u64::MAX,
        leases: Default::default(),
        userns_unsupported: None,
    };
    let busybox = mezzo_proto::image::ImageRef::parse("oci:busybox:1")?;
    // As an agent has it by default, where it can (`scripts/bench-isolation`
    // hides the host's cgroup2 from crun, and with it the filter's place).
    let cgroup2 = |p: &str| {
        nix::sys::statfs::statfs(p).is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
    };
    let filter = match a.loopback_filter.as_str() {
        "on" => true,
        "off" => false,
        _ => cgroup2("/sys/fs/cgroup") || cgroup2("/sys/fs/cgroup/unified"),
    };
    println!("mezzo: loopback filter {}", if filter { "on" } else { "off" });
    let loopback = if filter {
        Some(mezzo_agent::cgroups::LoopbackFilter::new(
            &mezzo_agent::cgroups::loopback::DEFAULT_PORTS,
        )?)
    } else {
        None
    };
    for (name, net, image) in [
        ("mezzo", false, None),
        ("mezzo (+ network namespace)", true, None),
        ("mezzo (busybox image)", false, Some(busybox.clone())),
        // Like for like with crun's default spec: a rootfs and every namespace.
        ("mezzo (busybox image, + network namespace)", true, Some(busybox)),
    ] {
        let cfg = LinuxConfig {
            cgroup_root: "/sys/fs/cgroup".into(),
            parent: a.cgroup_parent.clone(),
            exe: a.exe.clone(),
            default_user: "nobody".into(),
            allowed_users: vec![],
            cpu_hard_limit: false,
            pids_max: 4096,
            disk_check_interval: Duration::from_secs(5),
            log_max_bytes: 64 << 20,
            // As crun's bundle: a root of its own, masks, a private /dev.
            view: Some(mezzo_agent::containerizer::rootfs::View {
                mountpoint: view_root.clone(),
                hide: vec![a.dir.canonicalize()?],
                host_paths: vec![],
                image: None,
                mounts: vec![],
            }),
            allow_unconfined: false,
            images: Some(images.clone()),
            userns: None,
            loopback: loopback.clone(),
        };
        let c = LinuxContainerizer::new(cfg)?;
        let dir = a.dir.join(match (net, &image) {
            (true, Some(_)) => "mezzo-image-net",
            (false, Some(_)) => "mezzo-image",
            (true, None) => "mezzo-net",
            (false, None) => "mezzo",
        });
        systems.push((
            name.into(),
            System::Mezzo(Mezzo {
                c,
                dir,
                isolated_network: net,
                image,
            }),
        ));
    }
    for (name, bundle) in [
        ("crun (default namespaces, + net)", &a.crun_bundle),
        ("crun (no network namespace)", &a.crun_bundle_nonet),
    ] {
        if let Some(bundle) = bundle {
            systems.push((name.into(), System::Crun(Crun { bundle: bundle.clone() })));
        }
    }
    let systems: Vec<(String, Arc<System>)> = systems
        .into_iter()
        .filter(|(n, _)| a.only.is_empty() || a.only.iter().any(|o| n.contains(o.as_str())))
        .map(|(n, s)| (n, Arc::new(s)))
        .collect();
    for &concurrency in &a.concurrency {
        for (name, sys) in &systems {
            measure(name, sys.clone(), a.launches, a.warmup, concurrency).await?;
        }
    }
    Ok(())
}
