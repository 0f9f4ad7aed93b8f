//! A task's health check (`TaskInfo.health_check`, docs/frameworks.md
//! "Health checks"), read once for the master (which refuses a bad one)
//! and the agent (which runs it and trusts nothing it did not check): the
//! agent runs it as the task, so it may ask for nothing the task could not
//! do itself.

use std::time::Duration;

use crate::v1;

/// Longest time any of a check's durations may be (a day).
pub const MAX_SECS: f64 = 86_400.0;
/// Shortest interval between two checks.
pub const MIN_INTERVAL_SECS: f64 = 0.1;
/// Shortest timeout.
pub const MIN_TIMEOUT_SECS: f64 = 0.001;
/// Most consecutive results a threshold may ask for.
pub const MAX_THRESHOLD: u32 = 1000;
/// Longest HTTP path.
pub const MAX_PATH: usize = 2048;

/// What a check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// argv, run in the task's container.
    Command(Vec<String>),
    /// `GET http://127.0.0.1:PORT/PATH` in the task's network namespace.
    Http { port: u16, path: String },
    /// A connection to 127.0.0.1:PORT there.
    Tcp { port: u16 },
}

/// When to check, and how many results decide (Mesos' defaults filled in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub delay: Duration,
    pub grace: Duration,
    pub interval: Duration,
    pub timeout: Duration,
    pub failures: u32,
    pub successes: u32,
}

/// A checked health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub probe: Probe,
    pub timing: Timing,
}

/// Why a health check was refused; shown as `health check ...`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HealthCheckError {
    #[error("health check needs exactly one of command, http and tcp")]
    Kind,
    #[error("health check port {0} is not from 1 to 65535")]
    Port(u32),
    #[error("health check path {0:?} must start with '/' and be at most {MAX_PATH} printable ASCII characters")]
    Path(String),
    #[error("health check command is empty")]
    EmptyCommand,
    #[error("health check command contains a NUL byte")]
    Nul,
    #[error(
        "health check command may not set a user, environment, secret files or URIs: it runs as its task, with its task's environment"
    )]
    CommandSettings,
    #[error("health check {what} {value} s is not from {min} to {MAX_SECS} s")]
    Time { what: &'static str, value: f64, min: f64 },
    #[error("health check {what} {value} is not from 1 to {MAX_THRESHOLD}")]
    Threshold { what: &'static str, value: u32 },
}

/// Checks a task's health check and fills in the defaults.
pub fn parse(c: &v1::HealthCheck) -> Result<HealthCheck, HealthCheckError> {
    let port = |p: u32| {
        u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .ok_or(HealthCheckError::Port(p))
    };
    let probe = match (&c.command, &c.http, &c.tcp) {
        (Some(cmd), None, None) => Probe::Command(argv(cmd)?),
        (None, Some(http), None) => {
            let p = &http.path;
            if !(p.is_empty() || p.starts_with('/')) || p.len() > MAX_PATH || !p.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(HealthCheckError::Path(p.clone()));
            }
            Probe::Http {
                port: port(http.port)?,
                path: if p.is_empty() { "/".to_owned() } else { p.clone() },
            }
        }
        (None, None, Some(tcp)) => Probe::Tcp { port: port(tcp.port)? },
        _ => return Err(HealthCheckError::Kind),
    };
    let timing = Timing {
        delay: secs("delay", c.delay_secs, 0.0, 0.0)?,
        grace: secs("grace period", c.grace_period_secs, 10.0, 0.0)?,
        interval: secs("interval", c.interval_secs, 10.0, MIN_INTERVAL_SECS)?,
        timeout: secs("timeout", c.timeout_secs, 20.0, MIN_TIMEOUT_SECS)?,
        failures: threshold("consecutive failures", c.consecutive_failures, 3)?,
        successes: threshold("consecutive successes", c.consecutive_successes, 1)?,
    };
    Ok(HealthCheck { probe, timing })
}

fn argv(cmd: &v1::CommandInfo) -> Result<Vec<String>, HealthCheckError> {
    if cmd.value.trim().is_empty() {
        return Err(HealthCheckError::EmptyCommand);
    }
    if std::iter::once(&cmd.value)
        .chain(&cmd.arguments)
        .any(|a| a.contains('\0'))
    {
        return Err(HealthCheckError::Nul);
    }
    if !cmd.user.is_empty() || !cmd.environment.is_empty() || !cmd.secret_files.is_empty() || !cmd.uris.is_empty() {
        return Err(HealthCheckError::CommandSettings);
    }
    Ok(match cmd.shell {
        true => vec!["/bin/sh".into(), "-c".into(), cmd.value.clone()],
        false => std::iter::once(cmd.value.clone())
            .chain(cmd.arguments.iter().cloned())
            .collect(),
    })
}

fn secs(what: &'static str, v: Option<f64>, default: f64, min: f64) -> Result<Duration, HealthCheckError> {
    let value = v.unwrap_or(default);
    if !(value.is_finite() && (min..=MAX_SECS).contains(&value)) {
        return Err(HealthCheckError::Time { what, value, min });
    }
    Ok(Duration::from_secs_f64(value))
}

fn threshold(what: &'static str, v: Option<u32>, default: u32) -> Result<u32, HealthCheckError> {
    let value = v.unwrap_or(default);
    if !(1..=MAX_THRESHOLD).contains(&value) {
        return Err(HealthCheckError::Threshold { what, value });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(port: u32) -> v1::HealthCheck {
        v1::HealthCheck {
            tcp: Some(v1::TcpCheck { port }),
            ..Default::default()
        }
    }

    fn http(path: &str) -> v1::HealthCheck {
        v1::HealthCheck {
            http: Some(v1::HttpCheck {
                port: 8080,
                path: path.into(),
            }),
            interval_secs: Some(1.0),
            consecutive_failures: Some(2),
            ..Default::default()
        }
    }

    fn command(cmd: v1::CommandInfo) -> v1::HealthCheck {
        v1::HealthCheck {
            command: Some(cmd),
            ..Default::default()
        }
    }

    #[test]
    fn good_checks_pass_with_mesos_defaults() {
        let c = parse(&tcp(1)).expect("tcp");
        assert_eq!(c.probe, Probe::Tcp { port: 1 });
        let t = c.timing;
        assert_eq!(
            (t.delay, t.grace, t.interval, t.timeout, t.failures, t.successes),
            (
                Duration::ZERO,
                Duration::from_secs(10),
                Duration::from_secs(10),
                Duration::from_secs(20),
                3,
                1
            )
        );
        let c = parse(&http("")).expect("http");
        assert_eq!(
            c.probe,
            Probe::Http {
                port: 8080,
                path: "/".into()
            }
        );
        assert_eq!((c.timing.interval, c.timing.failures), (Duration::from_secs(1), 2));
        parse(&http("/healthz?full=1")).expect("query");
        let sh = parse(&command(v1::CommandInfo {
            value: "test -f ready".into(),
            shell: true,
            ..Default::default()
        }))
        .expect("command");
        assert_eq!(
            sh.probe,
            Probe::Command(vec!["/bin/sh".into(), "-c".into(), "test -f ready".into()])
        );
    }

    #[test]
    fn bad_checks_are_refused_with_what_is_wrong() {
        let env = v1::CommandInfo {
            value: "true".into(),
            environment: vec![v1::EnvVar {
                name: "A".into(),
                value: "1".into(),
                secret: String::new(),
            }],
            ..Default::default()
        };
        let cases = [
            (v1::HealthCheck::default(), "exactly one of"),
            (
                v1::HealthCheck {
                    http: Some(v1::HttpCheck::default()),
                    ..tcp(1)
                },
                "exactly one of",
            ),
            (tcp(0), "port 0"),
            (tcp(65536), "port 65536"),
            (http("healthz"), "must start with '/'"),
            (http("/a b"), "printable"),
            (command(v1::CommandInfo::default()), "command is empty"),
            (command(env), "may not set"),
            (
                command(v1::CommandInfo {
                    value: "a\0".into(),
                    ..Default::default()
                }),
                "NUL",
            ),
            (
                v1::HealthCheck {
                    interval_secs: Some(0.01),
                    ..tcp(1)
                },
                "interval 0.01",
            ),
            (
                v1::HealthCheck {
                    timeout_secs: Some(f64::INFINITY),
                    ..tcp(1)
                },
                "timeout inf",
            ),
            (
                v1::HealthCheck {
                    grace_period_secs: Some(-1.0),
                    ..tcp(1)
                },
                "grace period -1",
            ),
            (
                v1::HealthCheck {
                    consecutive_failures: Some(0),
                    ..tcp(1)
                },
                "consecutive failures 0",
            ),
        ];
        for (c, why) in cases {
            let e = parse(&c).expect_err(why).to_string();
            assert!(e.starts_with("health check") && e.contains(why), "{why}: {e}");
        }
    }
}
