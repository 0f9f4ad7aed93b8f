//! The service file: what a user declares, parsed from TOML and checked
//! before anything is stored or launched.
//!
//! ```toml
//! name = "web"
//! instances = 3
//! command = "busybox httpd -f -p $PORT0 -h ."
//! resources = "cpus:0.1;mem:32"
//! ports = ["http"]
//! constraints = ["hostname:MAX_PER:2"]
//!
//! [env]
//! MODE = "prod"
//!
//! [health]
//! http = { port = "http", path = "/" }
//! grace_period = "5s"
//! interval = "2s"
//! timeout = "1s"
//! failures = 3
//!
//! [restart]
//! backoff = "1s"
//! max_backoff = "1m"
//!
//! [upgrade]
//! max_surge = 1
//! max_unavailable = 0
//! ```
//!
//! A stateful service adds `volume = { disk_mib = 512, path = "data" }`:
//! each instance gets a persistent volume of its own and always comes
//! back to its agent (docs/service.md, "Persistent volumes").
//!
//! Unknown keys are refused, so a typo is an error rather than a silently
//! ignored setting. Parse errors name the line and column (from `toml`);
//! validation errors name the field.

use std::collections::BTreeMap;
use std::time::Duration;

use mezzo_sdk::Resources;
use mezzo_sdk::offers::Constraint;
use serde::{Deserialize, Deserializer, Serialize};

/// Most instances one service may declare (its record, with every
/// instance, must fit in one value of the framework's key-value store).
pub const MAX_INSTANCES: u32 = 200;
/// Most ports one instance may ask for.
pub const MAX_PORTS: usize = 16;
/// Largest service file accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 64 * 1024;
/// Largest persistent volume, in MiB (16 TiB).
pub const MAX_VOLUME_MIB: u64 = 16 * 1024 * 1024;
/// Longest duration of any setting (the owner adds them to its clocks and
/// grows the restart backoff by up to 100 times from them).
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// A declared service, as written in its file (after validation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// `[a-z0-9-]`, 1–63 characters, starting with a letter or digit.
    pub name: String,
    /// How many healthy instances to keep.
    pub instances: u32,
    /// Run through `/bin/sh -c` (so `$PORT0` and friends expand).
    pub command: String,
    /// Per instance, in Mezzo's text form (`cpus:0.1;mem:32`); no ports here.
    pub resources: String,
    /// Names of the ports each instance gets from the offer, in order:
    /// `PORT0`, `PORT1`... and `MEZZO_PORT_<NAME>` in the environment.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Placement, Marathon style: `hostname:UNIQUE`, `hostname:MAX_PER:N`,
    /// `ATTR:CLUSTER:VALUE`, `ATTR:LIKE:REGEX`, `ATTR:GROUP_BY`.
    #[serde(default)]
    pub constraints: Vec<String>,
    /// How the framework decides that an instance is healthy.
    #[serde(default)]
    pub health: Option<HealthSpec>,
    /// How failed instances are restarted.
    #[serde(default)]
    pub restart: RestartSpec,
    /// How a new version replaces the old one.
    #[serde(default)]
    pub upgrade: UpgradeSpec,
    /// SIGTERM to SIGKILL when an instance is stopped.
    #[serde(default = "default_kill_grace", with = "duration")]
    pub kill_grace: Duration,
    /// Run each instance in this OCI image (`HOST/PATH[:TAG]` or `oci:NAME[:TAG]`, docs/images.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Pull `image` with the credentials (`USER:PASSWORD`) in this secret
    /// of the framework's role (`mezzo secret put ROLE NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_credentials: Option<String>,
    /// A persistent volume per instance: the service is stateful.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeSpec>,
}

/// Each instance's persistent volume. Instance `i` keeps the volume
/// `<name>-<i>` on one agent and is always placed there again; the
/// volume outlives its instances and the service (docs/service.md,
/// "Persistent volumes").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// Its size, in MiB (reserved on the agent with the instance's
    /// resources).
    pub disk_mib: u64,
    /// Where the instance sees it: relative to its sandbox, or absolute
    /// in its image (default `data`).
    #[serde(default = "default_volume_path")]
    pub path: String,
}

/// A health check and its timing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// `GET http://HOST:PORT/PATH` answered 2xx or 3xx.
    #[serde(default)]
    pub http: Option<HttpCheck>,
    /// A TCP connection to `HOST:PORT` is accepted.
    #[serde(default)]
    pub tcp: Option<TcpCheck>,
    /// `/bin/sh -c COMMAND` on the framework's host exits 0; it gets
    /// `HOST`, `PORT0`... and `MEZZO_PORT_<NAME>` of the instance.
    #[serde(default)]
    pub command: Option<String>,
    /// Failures are not counted for this long after the instance starts.
    #[serde(default = "default_grace", with = "duration")]
    pub grace_period: Duration,
    /// Between two checks.
    #[serde(default = "default_interval", with = "duration")]
    pub interval: Duration,
    /// A check not answered within this is a failure.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Consecutive failures that make an instance unhealthy (it is then
    /// killed and replaced).
    #[serde(default = "default_failures")]
    pub failures: u32,
}

/// An HTTP check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    /// Name of one of the service's ports (default: the first).
    #[serde(default)]
    pub port: Option<String>,
    /// Path to GET (default `/`).
    #[serde(default = "default_path")]
    pub path: String,
}

/// A TCP check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpCheck {
    /// Name of one of the service's ports (default: the first).
    #[serde(default)]
    pub port: Option<String>,
}

/// Backoff between launches after instances fail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartSpec {
    /// The first delay after a failure.
    #[serde(default = "default_backoff", with = "duration")]
    pub backoff: Duration,
    /// The delay never grows beyond this.
    #[serde(default = "default_max_backoff", with = "duration")]
    pub max_backoff: Duration,
    /// Each further failure multiplies the delay by this (≥ 1).
    #[serde(default = "default_factor")]
    pub factor: f64,
}

impl Default for RestartSpec {
    fn default() -> Self {
        RestartSpec {
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
            factor: default_factor(),
        }
    }
}

/// Rolling-update limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeSpec {
    /// Instances that may run beyond `instances` during an update.
    #[serde(default = "one")]
    pub max_surge: u32,
    /// Healthy instances that may be missing during an update.
    #[serde(default)]
    pub max_unavailable: u32,
    /// Go back to the previous version when a new instance fails.
    #[serde(default = "yes")]
    pub auto_rollback: bool,
    /// An update not complete after this long is rolled back too (with
    /// `auto_rollback`); counted from the update's start, or from the
    /// framework's restart.
    #[serde(default = "default_progress_deadline", with = "duration")]
    pub progress_deadline: Duration,
}

impl Default for UpgradeSpec {
    fn default() -> Self {
        UpgradeSpec {
            max_surge: 1,
            max_unavailable: 0,
            auto_rollback: true,
            progress_deadline: default_progress_deadline(),
        }
    }
}

fn default_volume_path() -> String {
    "data".into()
}
fn default_kill_grace() -> Duration {
    Duration::from_secs(5)
}
fn default_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_failures() -> u32 {
    3
}
fn default_path() -> String {
    "/".into()
}
fn default_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(60)
}
fn default_factor() -> f64 {
    2.0
}
fn default_progress_deadline() -> Duration {
    Duration::from_secs(600)
}
fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}

/// Durations as human text (`500ms`, `10s`, `2m`) in files and JSON.
mod duration {
    use super::*;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("bad duration {text:?}: {e} (use e.g. 500ms, 10s, 2m)")))
    }
}

/// Why a service file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Not valid TOML, or a key of the wrong type or unknown; the message
    /// names the line, column and key.
    #[error("service file: {0}")]
    Syntax(String),
    /// A field holds a value that is not allowed.
    #[error("service file: field `{field}`: {why}")]
    Invalid {
        /// The field, as a path (`health.interval`, `constraints[1]`).
        field: String,
        /// What is wrong with it.
        why: String,
    },
}

fn invalid(field: impl Into<String>, why: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        why: why.into(),
    }
}

/// What a check probes, resolved against the service's ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// GET this path on the port with this index.
    Http {
        /// Index into the instance's ports.
        port: usize,
        /// Path, starting with `/`.
        path: String,
    },
    /// Connect to the port with this index.
    Tcp {
        /// Index into the instance's ports.
        port: usize,
    },
    /// Run this shell command.
    Command(String),
}

impl ServiceSpec {
    /// Parses and validates a service file.
    pub fn parse(text: &str) -> Result<ServiceSpec, SpecError> {
        if text.len() > MAX_FILE_BYTES {
            return Err(SpecError::Syntax(format!(
                "{} bytes; the limit is {MAX_FILE_BYTES}",
                text.len()
            )));
        }
        let spec: ServiceSpec = toml::from_str(text).map_err(|e| SpecError::Syntax(e.to_string().trim().to_owned()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks every field; the first problem is returned.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !valid_name(&self.name) {
            return Err(invalid(
                "name",
                format!(
                    "{:?} must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit",
                    self.name
                ),
            ));
        }
        if self.instances > MAX_INSTANCES {
            return Err(invalid(
                "instances",
                format!("{} is more than the limit of {MAX_INSTANCES}", self.instances),
            ));
        }
        if self.command.trim().is_empty() || self.command.contains('\0') {
            return Err(invalid(
                "command",
                "must be a non-blank shell command without NUL bytes",
            ));
        }
        self.resources()?;
        if let Some(image) = &self.image {
            mezzo_sdk::ImageRef::parse(image).map_err(|e| invalid("image", e.to_string()))?;
        }
        if let Some(secret) = &self.image_credentials {
            mezzo_sdk::check_image_credentials(self.image.as_deref(), secret)
                .map_err(|e| invalid("image_credentials", e))?;
        }
        if self.ports.len() > MAX_PORTS {
            return Err(invalid("ports", format!("at most {MAX_PORTS} ports")));
        }
        for (i, p) in self.ports.iter().enumerate() {
            if p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(invalid(
                    format!("ports[{i}]"),
                    format!("{p:?} must be letters, digits and '_'"),
                ));
            }
            if self.ports[..i].iter().any(|q| q.eq_ignore_ascii_case(p)) {
                return Err(invalid(format!("ports[{i}]"), format!("{p:?} is named twice")));
            }
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(invalid(
                    format!("env.{k}"),
                    "names must be non-empty without '='; no NUL bytes",
                ));
            }
        }
        self.placement()?;
        self.check_volume()?;
        if let Some(h) = &self.health {
            self.probe()?;
            let pos = |d: Duration, f: &str| {
                if d.is_zero() {
                    Err(invalid(format!("health.{f}"), "must be greater than zero"))
                } else {
                    Ok(())
                }
            };
            pos(h.interval, "interval")?;
            pos(h.timeout, "timeout")?;
            if h.failures == 0 {
                return Err(invalid("health.failures", "must be at least 1"));
            }
        }
        let r = &self.restart;
        if !(r.factor.is_finite() && r.factor >= 1.0 && r.factor <= 100.0) {
            return Err(invalid(
                "restart.factor",
                format!("{} must be between 1 and 100", r.factor),
            ));
        }
        if r.max_backoff < r.backoff {
            return Err(invalid("restart.max_backoff", "must be at least restart.backoff"));
        }
        let u = &self.upgrade;
        if u.max_surge == 0 && u.max_unavailable == 0 {
            return Err(invalid(
                "upgrade",
                "max_surge and max_unavailable cannot both be 0 (no update could make progress)",
            ));
        }
        if u.progress_deadline.is_zero() {
            return Err(invalid("upgrade.progress_deadline", "must be greater than zero"));
        }
        if self.kill_grace > Duration::from_secs(3600) {
            return Err(invalid("kill_grace", "at most 1h"));
        }
        self.check_durations()?;
        self.check_health_timing()
    }

    /// The volume's size within bounds, its path one the master accepts.
    fn check_volume(&self) -> Result<(), SpecError> {
        let Some(v) = &self.volume else { return Ok(()) };
        if v.disk_mib == 0 || v.disk_mib > MAX_VOLUME_MIB {
            return Err(invalid(
                "volume.disk_mib",
                format!("{} must be between 1 and {MAX_VOLUME_MIB}", v.disk_mib),
            ));
        }
        let mount = mezzo_sdk::v1::Mount {
            container_path: v.path.clone(),
            volume_id: volume_id(&self.name, 0),
            ..Default::default()
        };
        // The master's check, with the message it gives (minus "mount 0").
        mezzo_sdk::mounts::check(&[mount], self.image.is_some()).map_err(|e| {
            let why = e.to_string();
            invalid("volume.path", why.strip_prefix("mount 0: ").unwrap_or(&why).to_owned())
        })?;
        Ok(())
    }

    /// True when each instance has a persistent volume.
    pub fn is_stateful(&self) -> bool {
        self.volume.is_some()
    }

    /// Every duration at most [`MAX_DURATION`]: humantime reads up to
    /// billions of years, which overflow a clock when added to it.
    /// The health check's timing as the agents accept it (after the
    /// durations' own bounds, whose message is plainer).
    fn check_health_timing(&self) -> Result<(), SpecError> {
        let Some(h) = &self.health else { return Ok(()) };
        let timing = mezzo_sdk::v1::HealthCheck {
            tcp: Some(mezzo_sdk::v1::TcpCheck { port: 1 }),
            grace_period_secs: Some(h.grace_period.as_secs_f64()),
            interval_secs: Some(h.interval.as_secs_f64()),
            timeout_secs: Some(h.timeout.as_secs_f64()),
            consecutive_failures: Some(h.failures),
            ..Default::default()
        };
        mezzo_sdk::health_rules::parse(&timing).map_err(|e| invalid("health", e.to_string()))?;
        Ok(())
    }

    fn check_durations(&self) -> Result<(), SpecError> {
        let mut all = vec![
            ("restart.backoff", self.restart.backoff),
            ("restart.max_backoff", self.restart.max_backoff),
            ("upgrade.progress_deadline", self.upgrade.progress_deadline),
        ];
        if let Some(h) = &self.health {
            all.extend([
                ("health.grace_period", h.grace_period),
                ("health.interval", h.interval),
                ("health.timeout", h.timeout),
            ]);
        }
        match all.into_iter().find(|(_, d)| *d > MAX_DURATION) {
            Some((field, d)) => Err(invalid(
                field,
                format!("{} is more than 30 days", humantime::format_duration(d)),
            )),
            None => Ok(()),
        }
    }

    /// The per-instance resources, without ports.
    pub fn resources(&self) -> Result<Resources, SpecError> {
        let r = Resources::parse(&self.resources).map_err(|e| invalid("resources", e.to_string()))?;
        if !r.ports.is_empty() {
            return Err(invalid(
                "resources",
                "name ports with `ports = [\"http\"]`, not in resources",
            ));
        }
        if r.cpus.0 == 0 && r.mem.0 == 0 {
            return Err(invalid("resources", "must give cpus or mem"));
        }
        Ok(r)
    }

    /// The placement constraints, as the SDK's.
    pub fn placement(&self) -> Result<Vec<Constraint>, SpecError> {
        self.constraints
            .iter()
            .enumerate()
            .map(|(i, c)| parse_constraint(c).map_err(|why| invalid(format!("constraints[{i}]"), why)))
            .collect()
    }

    /// The health check's probe, with its port resolved.
    pub fn probe(&self) -> Result<Option<Probe>, SpecError> {
        let Some(h) = &self.health else { return Ok(None) };
        let kinds = [h.http.is_some(), h.tcp.is_some(), h.command.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(invalid("health", "give exactly one of http, tcp or command"));
        }
        let port = |name: &Option<String>, field: &str| -> Result<usize, SpecError> {
            if self.ports.is_empty() {
                return Err(invalid(field, "the service declares no ports to check"));
            }
            match name {
                None => Ok(0),
                Some(n) => self
                    .ports
                    .iter()
                    .position(|p| p == n)
                    .ok_or_else(|| invalid(field, format!("{n:?} is not one of ports {:?}", self.ports))),
            }
        };
        Ok(Some(if let Some(http) = &h.http {
            if !http.path.starts_with('/') {
                return Err(invalid("health.http.path", "must start with '/'"));
            }
            Probe::Http {
                port: port(&http.port, "health.http.port")?,
                path: http.path.clone(),
            }
        } else if let Some(tcp) = &h.tcp {
            Probe::Tcp {
                port: port(&tcp.port, "health.tcp.port")?,
            }
        } else {
            let cmd = h.command.clone().unwrap_or_default();
            if cmd.trim().is_empty() {
                return Err(invalid("health.command", "must not be blank"));
            }
            Probe::Command(cmd)
        }))
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !n.starts_with('-')
}

fn parse_constraint(text: &str) -> Result<Constraint, String> {
    let parts: Vec<&str> = text.splitn(3, ':').collect();
    let (attr, op, arg) = match parts.as_slice() {
        [a, o] => (*a, *o, None),
        [a, o, v] => (*a, *o, Some(*v)),
        _ => return Err(format!("{text:?} is not ATTRIBUTE:OPERATOR[:VALUE]")),
    };
    let need = |arg: Option<&str>| {
        arg.map(str::to_owned)
            .ok_or(format!("{op} needs a value ({attr}:{op}:VALUE)"))
    };
    match (attr, op.to_ascii_uppercase().as_str()) {
        ("hostname", "UNIQUE") => Ok(Constraint::UniqueHost),
        ("hostname", "MAX_PER") => {
            let n: usize = need(arg)?
                .parse()
                .map_err(|_| format!("MAX_PER needs a whole number, got {arg:?}"))?;
            Constraint::max_per_host(n).map_err(|e| e.to_string())
        }
        (_, "UNIQUE" | "MAX_PER") => Err(format!("{op} is supported on hostname only")),
        (a, "CLUSTER") => Ok(Constraint::AttributeEquals {
            name: a.to_owned(),
            value: need(arg)?,
        }),
        (a, "LIKE") => Constraint::like(a, &need(arg)?).map_err(|e| e.to_string()),
        (a, "GROUP_BY") => Ok(Constraint::Spread { name: a.to_owned() }),
        _ => Err(format!(
            "unknown operator {op:?} (use UNIQUE, MAX_PER, CLUSTER, LIKE or GROUP_BY)"
        )),
    }
}

#[cfg(test)]
#[path = "spec_fuzz_tests.rs"]
mod fuzz_tests;

/// The volume of instance `ordinal`: a valid volume id, as service names
/// are `[a-z0-9-]`.
pub fn volume_id(service: &str, ordinal: u32) -> String {
    format!("{service}-{ordinal}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (docs/fuzzing.md): durations were unbounded, and
    /// humantime reads up to billions of years, so `grace_period =
    /// "300000000000years"` made the owner's `Instant + grace_period`
    /// panic (and a restart backoff that large overflowed on the first
    /// failure).
    #[test]
    fn durations_that_overflow_a_clock_are_refused() {
        let base = "name = \"a\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:0.1\"\nports = [\"p\"]\n";
        for (section, field) in [
            ("[health]\ntcp = {}", "grace_period"),
            ("[health]\ntcp = {}", "interval"),
            ("[health]\ntcp = {}", "timeout"),
            ("[restart]\nmax_backoff = \"300000000001years\"", "backoff"),
            ("[restart]", "max_backoff"),
            ("[upgrade]", "progress_deadline"),
        ] {
            let text = format!("{base}{section}\n{field} = \"300000000000years\"\n");
            let err = ServiceSpec::parse(&text).expect_err(field).to_string();
            assert!(
                err.contains(field) && err.contains("more than 30 days"),
                "{field}: {err}"
            );
        }
        let ok = format!("{base}[restart]\nbackoff = \"30days\"\nmax_backoff = \"30days\"\n");
        assert!(ServiceSpec::parse(&ok).is_ok());
    }

    const GOOD: &str = r#"
name = "web"
instances = 3
command = "busybox httpd -f -p $PORT0"
resources = "cpus:0.1;mem:32"
ports = ["http", "admin"]
constraints = ["hostname:MAX_PER:2", "rack:LIKE:r[12]", "rack:GROUP_BY"]
[env]
MODE = "prod"
[health]
http = { port = "admin", path = "/ok" }
interval = "500ms"
"#;

    #[test]
    fn a_full_file_parses_with_defaults() {
        let s = ServiceSpec::parse(GOOD).expect("valid");
        assert_eq!(s.instances, 3);
        assert_eq!(s.upgrade.max_surge, 1);
        let h = s.health.as_ref().expect("health");
        assert_eq!(h.interval, Duration::from_millis(500));
        assert_eq!(h.failures, 3);
        assert_eq!(
            s.probe().expect("probe"),
            Some(Probe::Http {
                port: 1,
                path: "/ok".into()
            })
        );
        assert_eq!(s.placement().expect("constraints").len(), 3);
        // What is stored is read back the same.
        let json = serde_json::to_string(&s).expect("json");
        assert_eq!(serde_json::from_str::<ServiceSpec>(&json).expect("back"), s);
    }

    /// Each bad file is refused with the field (or line) named.
    #[test]
    fn bad_files_name_the_field_or_line() {
        let cases: &[(&str, &str)] = &[
            ("name = \"web\"\ninstances = \"five\"\n", "line 2"),
            (
                "name = \"web\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\ncolour = 1\n",
                "colour",
            ),
            ("name = \"web\"\ninstances = 1\ncommand = \"x\"\n", "resources"),
            (
                "name = \"Web!\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\n",
                "`name`",
            ),
            (
                "name = \"w\"\ninstances = 1\ncommand = \" \"\nresources = \"cpus:1\"\n",
                "`command`",
            ),
            (
                "name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:-1\"\n",
                "`resources`",
            ),
            (
                "name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1;ports:[1-2]\"\n",
                "`resources`",
            ),
            (
                "name = \"w\"\ninstances = 500\ncommand = \"x\"\nresources = \"cpus:1\"\n",
                "`instances`",
            ),
            (
                "name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\nimage = \"busybox:1\"\n",
                "`image`",
            ),
            (
                "name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\nimage = \"r.example.com/w:1\"\nimage_credentials = \"no/such\"\n",
                "`image_credentials`",
            ),
            (
                "name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\nconstraints = [\"rack:NEAR:x\"]\n",
                "constraints[0]",
            ),
            (
                "name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\nports = [\"p\"]\n[health]\ntcp = { port = \"p\" }\ninterval = \"50ms\"\n",
                "health check interval 0.05",
            ),
            (
                "name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\nports = [\"p\"]\n[health]\ntcp = { port = \"p\" }\nfailures = 5000\n",
                "consecutive failures 5000",
            ),
            (
                "name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\n[health]\ntcp = {}\n",
                "health.tcp.port",
            ),
            (
                "name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\n[health]\ncommand = \"true\"\ninterval = \"soon\"\n",
                "line 7",
            ),
            (
                "name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\n[health]\ninterval = \"1s\"\n",
                "`health`",
            ),
            (
                "name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\n[upgrade]\nmax_surge = 0\n",
                "`upgrade`",
            ),
            (
                "name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\n[restart]\nfactor = 0.5\n",
                "restart.factor",
            ),
            (
                "name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\nports = [\"a\", \"a\"]\n",
                "ports[1]",
            ),
            ("name = [\n", "line"),
            (
                "name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\nvolume = { disk_mib = 0 }\n",
                "volume.disk_mib",
            ),
            (
                "name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\nvolume = { disk_mib = 99999999999 }\n",
                "volume.disk_mib",
            ),
            (
                "name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\nvolume = { disk_mib = 64, path = \"../up\" }\n",
                "volume.path",
            ),
            (
                "name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\nvolume = { disk_mib = 64, path = \"/data\" }\n",
                "needs a task with an image",
            ),
            (
                "name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\nvolume = { disk_mib = 64, path = \"stdout\" }\n",
                "volume.path",
            ),
            (
                "name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\nvolume = { disk_mib = 64, size = 2 }\n",
                "size",
            ),
            (
                "name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\nvolume = { path = \"data\" }\n",
                "disk_mib",
            ),
        ];
        for (text, want) in cases {
            let err = ServiceSpec::parse(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text:?}: {err:?} should name {want}");
        }
    }

    #[test]
    fn a_volume_defaults_its_path_and_survives_storage() {
        let text = "name = \"db\"\ninstances = 2\ncommand = \"x\"\nresources = \"cpus:1;mem:64\"\nvolume = { disk_mib = 512 }\n";
        let s = ServiceSpec::parse(text).expect("valid");
        assert!(s.is_stateful());
        assert_eq!(
            s.volume,
            Some(VolumeSpec {
                disk_mib: 512,
                path: "data".into()
            })
        );
        let json = serde_json::to_string(&s).expect("json");
        assert_eq!(serde_json::from_str::<ServiceSpec>(&json).expect("back"), s);
        let with_image = format!("{text}image = \"oci:pg\"\n").replace("512 }", "512, path = \"/var/lib/db\" }");
        assert!(ServiceSpec::parse(&with_image).is_ok(), "absolute in an image");
        let plain = ServiceSpec::parse(&text.replace("volume = { disk_mib = 512 }\n", "")).expect("valid");
        assert!(!plain.is_stateful());
        assert!(
            !serde_json::to_string(&plain).expect("json").contains("volume"),
            "older readers unaffected"
        );
    }

    #[test]
    fn oversized_files_are_refused() {
        let big = format!("name = \"w\"\n# {}\n", "x".repeat(MAX_FILE_BYTES));
        assert!(ServiceSpec::parse(&big).is_err());
    }
}
