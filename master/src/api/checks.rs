//! A task's health check (`TaskInfo.health_check`), checked at the edge
//! by the rules the agent applies too (`mezzo_proto::health`).

use mezzo_proto::ids::TaskId;
use mezzo_proto::v1;

use super::invalid;
use crate::error::MasterError;

pub(super) fn check(t: &TaskId, c: &v1::HealthCheck) -> Result<(), MasterError> {
    match mezzo_proto::health::parse(c) {
        Ok(_) => Ok(()),
        Err(e) => Err(invalid(format!("task {t}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules are the proto crate's (and tested there); the master
    /// names the task.
    #[test]
    fn a_bad_check_is_refused_naming_the_task() {
        let t = TaskId::parse("web-1").expect("id");
        let bad = v1::HealthCheck {
            tcp: Some(v1::TcpCheck { port: 0 }),
            ..Default::default()
        };
        let e = check(&t, &bad).expect_err("port 0").to_string();
        assert!(e.contains("task web-1: health check port 0"), "{e}");
        let good = v1::HealthCheck {
            tcp: Some(v1::TcpCheck { port: 80 }),
            ..Default::default()
        };
        check(&t, &good).expect("port 80");
    }
}
