//! Fuzz check of the service file decoder (DESIGN.md "Bad input"; see
//! `docs/fuzzing.md`): any text is refused with a typed error or gives a
//! service that satisfies every rule of `spec.rs`, stores and reads back
//! the same, and whose timings the owner can add to its clocks and feed
//! its restart backoff without panicking. The property tests
//! (`spec_fuzz_tests.rs`) and the coverage-guided target in `fuzz/` call
//! it; [`seeds`] gives valid files to start from.

use std::time::{Duration, Instant};

use crate::plan::RestartHold;
use crate::spec::{MAX_FILE_BYTES, MAX_INSTANCES, MAX_PORTS, Probe, ServiceSpec};

/// A service file as `mezzo service deploy` sends it.
pub fn service_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(spec) = ServiceSpec::parse(&text) else { return };
    assert!(text.len() <= MAX_FILE_BYTES);
    assert!(spec.instances <= MAX_INSTANCES && spec.ports.len() <= MAX_PORTS);
    assert!(!spec.command.trim().is_empty() && !spec.command.contains('\0'));
    let r = spec.resources().unwrap_or_else(|e| panic!("{e}"));
    mezzo_proto::fuzz::check_resources(&r);
    assert!(r.ports.is_empty() && (r.cpus.0 > 0 || r.mem.0 > 0));
    assert!(spec.placement().is_ok());
    match spec.probe().unwrap_or_else(|e| panic!("{e}")) {
        Some(Probe::Http { port, path }) => assert!(port < spec.ports.len() && path.starts_with('/')),
        Some(Probe::Tcp { port }) => assert!(port < spec.ports.len()),
        Some(Probe::Command(c)) => assert!(!c.trim().is_empty()),
        None => assert!(spec.health.is_none()),
    }
    if let Some(v) = &spec.volume {
        assert!(v.disk_mib >= 1 && v.disk_mib <= crate::spec::MAX_VOLUME_MIB);
        let id = crate::volumes::volume_id(&spec.name, spec.instances.saturating_sub(1));
        let mount = mezzo_sdk::v1::Mount {
            container_path: v.path.clone(),
            volume_id: id,
            ..Default::default()
        };
        let checked = mezzo_sdk::mounts::check(&[mount], spec.image.is_some());
        assert!(checked.is_ok(), "a volume the master would refuse: {checked:?}");
    }
    check_timings(&spec);
    // A service's spec is stored as JSON in the framework's key-value
    // namespace, and validated again when read.
    let json = serde_json::to_vec(&spec).unwrap_or_default();
    let back = serde_json::from_slice::<ServiceSpec>(&json);
    assert_eq!(
        back.as_ref().ok(),
        Some(&spec),
        "the stored service reads back differently"
    );
    assert!(spec.validate().is_ok());
}

/// Every duration fits on the owner's clocks, and the restart backoff can
/// run for as long as failures come.
fn check_timings(spec: &ServiceSpec) {
    let now = Instant::now();
    let mut durations = vec![
        spec.kill_grace,
        spec.restart.backoff,
        spec.restart.max_backoff,
        spec.upgrade.progress_deadline,
    ];
    if let Some(h) = &spec.health {
        durations.extend([h.grace_period, h.interval, h.timeout]);
    }
    for d in durations {
        assert!(now.checked_add(d).is_some(), "{d:?} does not fit on a clock");
    }
    assert!(spec.restart.factor.is_finite() && (1.0..=100.0).contains(&spec.restart.factor));
    assert!(spec.restart.max_backoff >= spec.restart.backoff);
    let mut hold = RestartHold::new(&spec.restart);
    let mut at = Duration::from_secs(3600 * 24 * 365);
    for _ in 0..64 {
        hold.failure(at);
        at += spec.restart.max_backoff;
        assert!(hold.may_launch(at));
    }
}

/// Valid service files, the start of the seeds and mutations.
pub const SERVICE_FILES: &[&str] = &[
    "name = \"a\"\ninstances = 1\ncommand = \"true\"\nresources = \"cpus:0.1\"\n",
    r#"name = "web"
instances = 3
command = "busybox httpd -f -p $PORT0 -h ."
resources = "cpus:0.1;mem:32"
ports = ["http", "admin"]
constraints = ["hostname:MAX_PER:2", "rack:LIKE:r[12]", "rack:GROUP_BY", "zone:CLUSTER:a", "hostname:UNIQUE"]
kill_grace = "10s"

[env]
MODE = "prod"

[health]
http = { port = "admin", path = "/ok" }
grace_period = "5s"
interval = "2s"
timeout = "1s"
failures = 3

[restart]
backoff = "1s"
max_backoff = "1m"
factor = 1.5

[upgrade]
max_surge = 1
max_unavailable = 0
auto_rollback = false
progress_deadline = "10m"
"#,
    "name = \"tcp-1\"\ninstances = 200\ncommand = \"nc -l $PORT0\"\nresources = \"mem:1\"\nports = [\"p\"]\n[health]\ntcp = {}\n",
    "name = \"db\"\ninstances = 3\ncommand = \"x\"\nresources = \"cpus:0.5;mem:128\"\nvolume = { disk_mib = 512, path = \"data\" }\n",
    "name = \"c\"\ninstances = 0\ncommand = \"x\"\nresources = \"cpus:1;gpus:1\"\n[health]\ncommand = \"test -f /tmp/ok\"\n[upgrade]\nmax_surge = 0\nmax_unavailable = 2\n",
];

/// Valid inputs for each target of this crate: `(target, input)`.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    SERVICE_FILES
        .iter()
        .map(|f| ("service_file", f.as_bytes().to_vec()))
        .collect()
}
