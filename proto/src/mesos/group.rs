//! Mesos' `LAUNCH_GROUP` offer operation as Mezzo's `Launch` with
//! `group` set, checked as Mesos' master checks a task group: a group of
//! at least one task, an executor that says how it runs (`DEFAULT`: each
//! task as a command of its own; `CUSTOM`, or no type with a `command`:
//! the framework's executor, which every task of the group gets), and no
//! task naming an executor other than the group's.

use super::convert::{Refused, executor_in, task_in};
use super::types as m;
use crate::v1;

/// The group's custom executor (`None`: Mesos' default executor, whose
/// tasks Mezzo runs as commands), or why it is refused (never ignored).
fn group_executor(e: &m::ExecutorInfo) -> Result<Option<v1::ExecutorInfo>, Refused> {
    let id = &e.executor_id.value;
    match (e.kind.as_deref(), &e.command) {
        (Some("DEFAULT"), None) => Ok(None),
        (Some("DEFAULT"), Some(_)) => Err(format!(
            "launch_group: executor {id}: 'ExecutorInfo.command' must not be set for the DEFAULT executor"
        )),
        (Some("CUSTOM") | None, Some(_)) => executor_in(e).map(Some),
        (Some("CUSTOM"), None) => Err(format!(
            "launch_group: executor {id}: 'ExecutorInfo.command' must be set for a CUSTOM executor"
        )),
        (None, None) => Err(format!(
            "launch_group: executor {id} has neither a type nor a command: give type DEFAULT to run the tasks as \
             commands, or a command to run them with a custom executor"
        )),
        (Some(other), _) => Err(format!(
            "launch_group: executor {id}: type {other:?} is not supported (DEFAULT and CUSTOM are)"
        )),
    }
}

/// A `LAUNCH_GROUP`'s tasks as Mezzo's, for a `Launch` with `group` set.
pub fn launch_group_in(g: &m::LaunchGroup) -> Result<Vec<v1::TaskInfo>, Refused> {
    let executor = g
        .executor
        .as_ref()
        .ok_or("launch_group: Expecting 'executor' to be present")?;
    let custom = group_executor(executor)?;
    if g.task_group.tasks.is_empty() {
        return Err("launch_group: the task group has no tasks".into());
    }
    g.task_group
        .tasks
        .iter()
        .map(|t| {
            let id = &t.task_id.value;
            if t.executor.as_ref().is_some_and(|own| own != executor) {
                return Err(format!(
                    "launch_group: task {id}: its 'TaskInfo.executor' differs from the group's executor {}; \
                     the tasks of a group run with the group's",
                    executor.executor_id.value
                ));
            }
            let mut task = task_in(&m::TaskInfo {
                executor: None,
                ..t.clone()
            })?;
            if let Some(e) = &custom {
                if task.command.is_some() {
                    return Err(format!(
                        "launch_group: task {id}: its custom executor {} runs it: give it no `command`",
                        e.executor_id
                    ));
                }
                task.executor = Some(Box::new(e.clone()));
            }
            Ok(task)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn group(executor: serde_json::Value, tasks: serde_json::Value) -> m::LaunchGroup {
        serde_json::from_value(json!({"executor": executor, "task_group": {"tasks": tasks}})).expect("a LaunchGroup")
    }

    fn task(id: &str, command: bool) -> serde_json::Value {
        let mut t = json!({"name": id, "task_id": {"value": id}, "agent_id": {"value": "a"}});
        if command {
            t["command"] = json!({"value": "true"});
        }
        t
    }

    #[test]
    fn a_custom_executor_is_given_to_every_task_of_the_group() {
        let exec = json!({"type": "CUSTOM", "executor_id": {"value": "ex"}, "command": {"value": "./ex"}});
        let tasks = launch_group_in(&group(exec, json!([task("t1", false), task("t2", false)]))).expect("valid");
        assert_eq!(tasks.len(), 2);
        for t in &tasks {
            assert_eq!(t.executor.as_ref().map(|e| e.executor_id.as_str()), Some("ex"));
        }
        // No type, with a command: a custom executor too.
        let exec = json!({"executor_id": {"value": "ex"}, "command": {"value": "./ex"}});
        let tasks = launch_group_in(&group(exec, json!([task("t1", false)]))).expect("valid");
        assert!(tasks[0].executor.is_some());
    }

    #[test]
    fn the_default_executor_runs_each_task_as_its_command() {
        let exec = json!({"type": "DEFAULT", "executor_id": {"value": "default"}});
        let tasks = launch_group_in(&group(exec, json!([task("t1", true), task("t2", true)]))).expect("valid");
        assert!(tasks.iter().all(|t| t.executor.is_none() && t.command.is_some()));
    }

    #[test]
    fn bad_groups_are_refused_with_a_reason() {
        let default = json!({"type": "DEFAULT", "executor_id": {"value": "d"}});
        let custom = json!({"type": "CUSTOM", "executor_id": {"value": "ex"}, "command": {"value": "./ex"}});
        let other = json!({"type": "CUSTOM", "executor_id": {"value": "ex2"}, "command": {"value": "./ex"}});
        let cases = [
            (
                group(json!({"executor_id": {"value": "x"}}), json!([task("t", true)])),
                "neither a type nor a command",
            ),
            (
                group(
                    json!({"type": "DEFAULT", "executor_id": {"value": "d"}, "command": {"value": "x"}}),
                    json!([task("t", true)]),
                ),
                "must not be set",
            ),
            (
                group(
                    json!({"type": "CUSTOM", "executor_id": {"value": "x"}}),
                    json!([task("t", false)]),
                ),
                "must be set",
            ),
            (
                group(
                    json!({"type": "OTHER", "executor_id": {"value": "x"}}),
                    json!([task("t", true)]),
                ),
                "not supported",
            ),
            (group(default.clone(), json!([])), "no tasks"),
            (group(custom.clone(), json!([task("t", true)])), "give it no `command`"),
        ];
        for (g, why) in cases {
            let e = launch_group_in(&g).expect_err("refused");
            assert!(e.contains(why), "{e} should say {why}");
        }
        let mut t = task("t", false);
        t["executor"] = other;
        let e = launch_group_in(&group(custom.clone(), json!([t]))).expect_err("refused");
        assert!(e.contains("differs from the group's executor"), "{e}");
        // The group's own executor repeated on a task is what Mesos takes.
        let mut t = task("t", false);
        t["executor"] = custom.clone();
        assert!(launch_group_in(&group(custom, json!([t]))).is_ok());
        let e = launch_group_in(&m::LaunchGroup::default()).expect_err("refused");
        assert!(e.contains("'executor'"), "{e}");
    }
}
