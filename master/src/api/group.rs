//! A task group (`Launch.group`, Mesos' LAUNCH_GROUP), checked at the
//! edge: at least one task, all with the same custom executor or all
//! without one. Each task is then told its group (`TaskInfo.group`), which
//! the agent needs; the core launches the group with the rest of its
//! Accept, which is all or nothing already.

use mezzo_proto::v1;

use super::invalid;
use crate::core::LaunchRequest;
use crate::error::MasterError;

/// Tasks in one group at most. Every task carries its group's ids, so a
/// group costs the square of its size; pods hold a few containers.
pub const MAX_TASKS_PER_GROUP: usize = 64;
/// Bytes of task ids in one group at most (with the cap above, a group's
/// copies stay under 256 KiB).
pub const MAX_GROUP_ID_BYTES: usize = 4096;

/// The tasks of one group, each told the group it belongs to.
pub fn task_group(mut tasks: Vec<LaunchRequest>) -> Result<Vec<LaunchRequest>, MasterError> {
    let Some(first) = tasks.first() else {
        return Err(invalid("a task group needs at least one task"));
    };
    if tasks.len() > MAX_TASKS_PER_GROUP {
        return Err(invalid(format!(
            "a task group holds at most {MAX_TASKS_PER_GROUP} tasks, not {}",
            tasks.len()
        )));
    }
    let id_bytes: usize = tasks.iter().map(|t| t.task_id.as_str().len()).sum();
    if id_bytes > MAX_GROUP_ID_BYTES {
        return Err(invalid(format!(
            "a task group's task ids hold at most {MAX_GROUP_ID_BYTES} bytes together, not {id_bytes}"
        )));
    }
    let executor = first.executor.as_ref().map(|(id, _)| id.clone());
    if let Some(t) = tasks
        .iter()
        .find(|t| t.executor.as_ref().map(|(id, _)| id) != executor.as_ref())
    {
        let name = |e: Option<&mezzo_proto::ids::ExecutorId>| match e {
            Some(e) => format!("executor {e}"),
            None => "no executor".to_owned(),
        };
        return Err(invalid(format!(
            "task group: task {} has {} and task {} {}; every task of a group has the same custom executor, or none",
            t.task_id,
            name(t.executor.as_ref().map(|(id, _)| id)),
            first.task_id,
            name(executor.as_ref()),
        )));
    }
    let group = v1::TaskGroup {
        task_ids: tasks.iter().map(|t| t.task_id.to_string()).collect(),
    };
    for t in &mut tasks {
        t.info.group = Some(group.clone());
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validate_task;

    fn task(id: &str, executor: Option<&str>) -> LaunchRequest {
        let cpus = v1::Resource {
            name: "cpus".into(),
            scalar: 0.1,
            ..Default::default()
        };
        let (command, executor) = match executor {
            None => (
                Some(v1::CommandInfo {
                    value: "true".into(),
                    shell: true,
                    ..Default::default()
                }),
                None,
            ),
            Some(e) => (
                None,
                Some(v1::ExecutorInfo {
                    executor_id: e.into(),
                    command: Some(v1::CommandInfo {
                        value: "./ex".into(),
                        shell: true,
                        ..Default::default()
                    }),
                    resources: vec![cpus.clone()],
                    ..Default::default()
                }),
            ),
        };
        validate_task(v1::TaskInfo {
            task_id: id.into(),
            resources: vec![cpus],
            command,
            executor: executor.map(Box::new),
            ..Default::default()
        })
        .expect("a valid task")
    }

    #[test]
    fn every_task_is_told_its_whole_group_in_order() {
        let tasks = task_group(vec![task("a", Some("ex")), task("b", Some("ex"))]).expect("a group");
        for t in &tasks {
            let ids = t.info.group.as_ref().map(|g| g.task_ids.clone());
            assert_eq!(ids, Some(vec!["a".to_owned(), "b".to_owned()]));
        }
        assert!(task_group(vec![task("a", None), task("b", None)]).is_ok());
    }

    #[test]
    fn an_empty_or_mixed_group_is_refused() {
        let e = task_group(Vec::new()).expect_err("empty");
        assert!(e.to_string().contains("at least one task"), "{e}");
        for mixed in [
            vec![task("a", Some("ex")), task("b", None)],
            vec![task("a", None), task("b", Some("ex"))],
            vec![task("a", Some("ex")), task("b", Some("other"))],
        ] {
            let e = task_group(mixed).expect_err("mixed");
            assert!(e.to_string().contains("same custom executor"), "{e}");
        }
    }

    /// Each task carries its group's ids: a group is capped in tasks and
    /// in id bytes before anything is copied.
    #[test]
    fn a_group_too_big_is_refused_before_it_is_copied() {
        let many: Vec<_> = (0..=MAX_TASKS_PER_GROUP)
            .map(|i| task(&format!("t{i}"), None))
            .collect();
        let e = task_group(many).expect_err("too many");
        assert!(e.to_string().contains("at most 64 tasks"), "{e}");
        let long: Vec<_> = (0..30)
            .map(|i| task(&format!("{i}-{}", "x".repeat(190)), None))
            .collect();
        let e = task_group(long).expect_err("ids too long");
        assert!(e.to_string().contains("4096 bytes"), "{e}");
        let fine: Vec<_> = (0..MAX_TASKS_PER_GROUP).map(|i| task(&format!("t{i}"), None)).collect();
        assert!(task_group(fine).is_ok());
    }

    #[test]
    fn a_framework_cannot_set_a_tasks_group_itself() {
        let mut t = task("a", None).info;
        t.group = Some(v1::TaskGroup {
            task_ids: vec!["a".into()],
        });
        let e = validate_task(t).expect_err("refused");
        assert!(e.to_string().contains("set by the master"), "{e}");
    }
}
