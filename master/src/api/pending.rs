//! `ReportPending`: a framework's list of tasks it cannot place yet,
//! checked at the edge (ids, resources, count) before it reaches the core
//! (which checks the reasons' length, as it owns the limits).

use mezzo_proto::ids::TaskId;
use mezzo_proto::resources::Resources;

use crate::core::observe::{MAX_PENDING_TASKS, PendingTask};
use crate::error::MasterError;

/// Checks a ReportPending call's tasks, naming the field of the first
/// bad one.
pub(crate) fn pending_tasks(list: Vec<mezzo_proto::v1::PendingTask>) -> Result<Vec<PendingTask>, MasterError> {
    if list.len() > MAX_PENDING_TASKS {
        return Err(MasterError::Invalid(format!(
            "tasks: {} pending tasks reported, at most {} are accepted",
            list.len(),
            MAX_PENDING_TASKS
        )));
    }
    list.into_iter()
        .enumerate()
        .map(|(i, t)| {
            TaskId::parse(&t.task_id).map_err(|e| MasterError::Invalid(format!("tasks[{i}].task_id: {e}")))?;
            let resources = if t.resources.is_empty() {
                None
            } else {
                Some(
                    Resources::from_proto(&t.resources)
                        .map_err(|e| MasterError::Invalid(format!("tasks[{i}].resources: {e}")))?,
                )
            };
            Ok(PendingTask {
                task_id: t.task_id,
                reason: t.reason,
                resources,
                priority: t.priority,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_tasks_are_validated_by_index() {
        let ok = mezzo_proto::v1::PendingTask {
            task_id: "t1".into(),
            reason: "needs 8 cpus".into(),
            resources: Resources::parse("cpus:8").expect("res").to_proto(),
            priority: 3,
        };
        let got = pending_tasks(vec![ok.clone()]).expect("valid");
        assert_eq!(got[0].resources.as_ref().map(|r| r.cpus.0), Some(8000));
        assert_eq!(got[0].priority, 3);
        let mut bad = ok.clone();
        bad.task_id = "a/b".into();
        assert!(
            matches!(pending_tasks(vec![ok.clone(), bad]), Err(MasterError::Invalid(m)) if m.starts_with("tasks[1].task_id"))
        );
        let mut bad = ok;
        bad.resources[0].scalar = -1.0;
        assert!(
            matches!(pending_tasks(vec![bad]), Err(MasterError::Invalid(m)) if m.starts_with("tasks[0].resources"))
        );
    }
}
