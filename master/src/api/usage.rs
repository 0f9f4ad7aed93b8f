//! Validation of an agent's container usage report.

use mezzo_proto::ids::{FrameworkId, TaskId};
use mezzo_proto::v1;

use crate::core::usage::{ContainerUsage, Usage};
use crate::error::MasterError;

/// Checks every entry; one bad entry refuses the whole report, with the
/// field and the task it was found in.
pub fn report(report: v1::UsageReport) -> Result<Vec<ContainerUsage>, MasterError> {
    report
        .containers
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let at = |field: &str| format!("usage report containers[{i}].{field}");
            let framework_id =
                FrameworkId::parse(&c.framework_id).map_err(|e| invalid(format!("{}: {e}", at("framework_id"))))?;
            let task_id = TaskId::parse(&c.task_id).map_err(|e| invalid(format!("{}: {e}", at("task_id"))))?;
            if !c.cpu_time_secs.is_finite() || c.cpu_time_secs < 0.0 {
                return Err(invalid(format!(
                    "{} of task {task_id} must be a finite number >= 0, not {}",
                    at("cpu_time_secs"),
                    c.cpu_time_secs
                )));
            }
            Ok(ContainerUsage {
                framework_id,
                task_id,
                usage: Usage {
                    cpu_time_secs: c.cpu_time_secs,
                    memory_rss_bytes: c.memory_rss_bytes,
                    memory_cache_bytes: c.memory_cache_bytes,
                    pids: c.pids,
                },
            })
        })
        .collect()
}

fn invalid(msg: String) -> MasterError {
    MasterError::Invalid(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fid: &str, tid: &str, cpu: f64) -> v1::ContainerUsage {
        v1::ContainerUsage {
            framework_id: fid.into(),
            task_id: tid.into(),
            cpu_time_secs: cpu,
            memory_rss_bytes: 1,
            memory_cache_bytes: 2,
            pids: 3,
        }
    }

    #[test]
    fn bad_entries_name_the_field() {
        let bad = [
            (entry("", "t", 1.0), "containers[0].framework_id"),
            (entry("f", "../x", 1.0), "containers[0].task_id"),
            (entry("f", "t", f64::NAN), "containers[0].cpu_time_secs"),
            (entry("f", "t", -1.0), "containers[0].cpu_time_secs"),
        ];
        for (e, field) in bad {
            let err = report(v1::UsageReport { containers: vec![e] }).expect_err("refused");
            assert!(err.to_string().contains(field), "{err}");
        }
        let ok = report(v1::UsageReport {
            containers: vec![entry("f", "t", 0.5)],
        })
        .expect("a valid report");
        assert_eq!(ok[0].usage.pids, 3);
    }
}
