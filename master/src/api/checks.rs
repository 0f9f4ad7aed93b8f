//! A task's health check (`TaskInfo.health_check`), checked at the edge:
//! the agent runs it as the task, so it may ask for nothing the task
//! could not do itself.

use mezzo_proto::ids::TaskId;
use mezzo_proto::v1;

use super::invalid;
use crate::error::MasterError;

/// Longest time any of a check's durations may be (a day).
const MAX_SECS: f64 = 86_400.0;
/// Shortest interval between two checks.
const MIN_INTERVAL_SECS: f64 = 0.1;
/// Most consecutive results a threshold may ask for.
const MAX_THRESHOLD: u32 = 1000;
/// Longest HTTP path.
const MAX_PATH: usize = 2048;

pub(super) fn check(t: &TaskId, c: &v1::HealthCheck) -> Result<(), MasterError> {
    let bad = |what: String| invalid(format!("task {t}: health check {what}"));
    let port = |p: u32| match p {
        1..=65535 => Ok(()),
        _ => Err(bad(format!("port {p} is not from 1 to 65535"))),
    };
    match (&c.command, &c.http, &c.tcp) {
        (Some(cmd), None, None) => {
            if cmd.value.trim().is_empty() {
                return Err(bad("command is empty".into()));
            }
            if std::iter::once(&cmd.value)
                .chain(&cmd.arguments)
                .any(|a| a.contains('\0'))
            {
                return Err(bad("command contains a NUL byte".into()));
            }
            if !cmd.user.is_empty()
                || !cmd.environment.is_empty()
                || !cmd.secret_files.is_empty()
                || !cmd.uris.is_empty()
            {
                return Err(bad(
                    "command may not set a user, environment, secret files or URIs: it runs as its task, with its task's environment"
                        .into(),
                ));
            }
        }
        (None, Some(http), None) => {
            port(http.port)?;
            let p = &http.path;
            if !(p.is_empty() || p.starts_with('/')) || p.len() > MAX_PATH || !p.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad(format!(
                    "path {p:?} must start with '/' and be at most {MAX_PATH} printable ASCII characters"
                )));
            }
        }
        (None, None, Some(tcp)) => port(tcp.port)?,
        _ => return Err(bad("needs exactly one of command, http and tcp".into())),
    }
    for (what, v, min) in [
        ("delay", c.delay_secs, 0.0),
        ("grace period", c.grace_period_secs, 0.0),
        ("interval", c.interval_secs, MIN_INTERVAL_SECS),
        ("timeout", c.timeout_secs, 0.001),
    ] {
        if let Some(v) = v
            && !(v.is_finite() && (min..=MAX_SECS).contains(&v))
        {
            return Err(bad(format!("{what} {v} s is not from {min} to {MAX_SECS} s")));
        }
    }
    for (what, v) in [
        ("consecutive failures", c.consecutive_failures),
        ("consecutive successes", c.consecutive_successes),
    ] {
        if let Some(v) = v
            && !(1..=MAX_THRESHOLD).contains(&v)
        {
            return Err(bad(format!("{what} {v} is not from 1 to {MAX_THRESHOLD}")));
        }
    }
    Ok(())
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

    #[test]
    fn good_checks_pass_and_bad_ones_are_refused_with_what_is_wrong() {
        let t = TaskId::parse("web-1").expect("id");
        let http = |path: &str| v1::HealthCheck {
            http: Some(v1::HttpCheck {
                port: 8080,
                path: path.into(),
            }),
            interval_secs: Some(1.0),
            consecutive_failures: Some(2),
            ..Default::default()
        };
        let command = |cmd: v1::CommandInfo| v1::HealthCheck {
            command: Some(cmd),
            ..Default::default()
        };
        let ok = [
            tcp(1),
            http("/healthz?full=1"),
            http(""),
            command(v1::CommandInfo {
                value: "test -f ready".into(),
                shell: true,
                ..Default::default()
            }),
        ];
        for c in ok {
            check(&t, &c).unwrap_or_else(|e| panic!("{c:?}: {e}"));
        }
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
            let e = check(&t, &c).expect_err(why).to_string();
            assert!(e.contains("task web-1: health check") && e.contains(why), "{why}: {e}");
        }
    }
}
