//! How a task ended, in words: what `mezzo run` prints after its output
//! (DESIGN.md "Tasks": each state says what is known).

use mezzo_sdk::{TaskState, task_state, v1};

use v1::StatusReason as R;

/// The end of a task as a user reads it: why it ended, then how its
/// command exited when that adds something. `mem_mib` is the memory the
/// task was given (the limit it ran into).
pub fn outcome_text(s: &v1::TaskStatus, mem_mib: u64) -> String {
    let reason = R::try_from(s.reason).unwrap_or(R::ReasonUnspecified);
    let message = s.message.trim();
    // "killed" and "killed on request" say it once.
    let with = |what: &str| match message {
        "" => what.to_owned(),
        m if m.starts_with(what) => m.to_owned(),
        m => format!("{what}: {m}"),
    };
    let Some(state) = task_state(s) else {
        return with("in an unknown state");
    };
    let why = match (state, reason) {
        (TaskState::Finished, _) => return exit_text(s.exit_code.unwrap_or(0)),
        (TaskState::Failed, R::ReasonContainerLimitationMemory) => {
            format!("memory limit of {mem_mib} MiB reached (a process was OOM-killed)")
        }
        (TaskState::Failed, R::ReasonContainerLimitationDisk) => with("disk limit reached"),
        (TaskState::Failed, R::ReasonFetchFailed) => with("cannot fetch its artifacts"),
        (TaskState::Failed | TaskState::Error, R::ReasonContainerLaunchFailed | R::ReasonTaskInvalid)
        | (TaskState::Error, _) => return with("cannot run"),
        (TaskState::Failed, _) if s.exit_code.is_some() => String::new(),
        (TaskState::Failed, _) => with("failed"),
        (TaskState::Killed, _) => with("killed"),
        (TaskState::Lost | TaskState::Gone | TaskState::Unreachable, _) => {
            with("lost with its agent (it may have run)")
        }
        (TaskState::Dropped, _) => with("dropped before it started"),
        (_, _) => with(state.name()),
    };
    match (why.is_empty(), s.exit_code) {
        (true, Some(code)) => exit_text(code),
        (false, Some(code)) if state == TaskState::Failed => format!("{why}; {}", exit_text(code)),
        _ => why,
    }
}

/// A wait status as the agent reports it: the code, or the signal negated.
fn exit_text(code: i32) -> String {
    if code >= 0 {
        return format!("exited with status {code}");
    }
    let signal = code.saturating_neg();
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(name) => format!("killed by signal {signal} ({})", name.as_str()),
        Err(_) => format!("killed by signal {signal}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use v1::TaskState as S;

    fn status(state: S, reason: R, message: &str, exit_code: Option<i32>) -> v1::TaskStatus {
        v1::TaskStatus {
            state: state as i32,
            reason: reason as i32,
            message: message.into(),
            exit_code,
            ..Default::default()
        }
    }

    #[test]
    fn outcome_text_table() {
        let oom = "memory limit of 64 MiB reached: a process of the task was OOM-killed";
        let disk = "the sandbox used 90 MiB of disk, over the task's 64 MiB";
        let table: &[(S, R, &str, Option<i32>, &str)] = &[
            (
                S::TaskFinished,
                R::ReasonCommandExited,
                "exited with status 0",
                Some(0),
                "exited with status 0",
            ),
            (
                S::TaskFailed,
                R::ReasonCommandExited,
                "exited with status 3",
                Some(3),
                "exited with status 3",
            ),
            (
                S::TaskFailed,
                R::ReasonCommandExited,
                "killed by signal 9",
                Some(-9),
                "killed by signal 9 (SIGKILL)",
            ),
            (
                S::TaskFailed,
                R::ReasonCommandExited,
                "",
                Some(-15),
                "killed by signal 15 (SIGTERM)",
            ),
            (
                S::TaskFailed,
                R::ReasonContainerLimitationMemory,
                oom,
                Some(-9),
                "memory limit of 64 MiB reached (a process was OOM-killed); killed by signal 9 (SIGKILL)",
            ),
            // A child was OOM-killed and the command went on to exit 0.
            (
                S::TaskFailed,
                R::ReasonContainerLimitationMemory,
                oom,
                Some(0),
                "memory limit of 64 MiB reached (a process was OOM-killed); exited with status 0",
            ),
            (
                S::TaskFailed,
                R::ReasonContainerLimitationDisk,
                disk,
                Some(-9),
                "disk limit reached: the sandbox used 90 MiB of disk, over the task's 64 MiB; killed by signal 9 (SIGKILL)",
            ),
            (
                S::TaskFailed,
                R::ReasonFetchFailed,
                "artifact http://h/a.tgz: sha256 is 00, expected 11",
                None,
                "cannot fetch its artifacts: artifact http://h/a.tgz: sha256 is 00, expected 11",
            ),
            (
                S::TaskFailed,
                R::ReasonContainerLaunchFailed,
                "cannot start \"nope\": No such file",
                None,
                "cannot run: cannot start \"nope\": No such file",
            ),
            (
                S::TaskError,
                R::ReasonTaskInvalid,
                "no command",
                None,
                "cannot run: no command",
            ),
            (
                S::TaskKilled,
                R::ReasonTaskKilled,
                "killed on request",
                None,
                "killed on request",
            ),
            (
                S::TaskKilled,
                R::ReasonFrameworkRemoved,
                "its framework was removed",
                None,
                "killed: its framework was removed",
            ),
            (
                S::TaskLost,
                R::ReasonAgentRestarted,
                "the agent restarted",
                None,
                "lost with its agent (it may have run): the agent restarted",
            ),
            (
                S::TaskGone,
                R::ReasonAgentRemoved,
                "",
                None,
                "lost with its agent (it may have run)",
            ),
            (
                S::TaskUnreachable,
                R::ReasonAgentUnreachable,
                "agent unreachable",
                None,
                "lost with its agent (it may have run): agent unreachable",
            ),
            (
                S::TaskDropped,
                R::ReasonAgentRestarted,
                "it never ran",
                None,
                "dropped before it started: it never ran",
            ),
            (S::TaskFailed, R::ReasonUnspecified, "", None, "failed"),
        ];
        for (state, reason, message, code, want) in table {
            let s = status(*state, *reason, message, *code);
            assert_eq!(outcome_text(&s, 64), *want, "{state:?} {reason:?} {code:?}");
        }
    }
}
