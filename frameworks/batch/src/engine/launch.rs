//! Turning offers into launches, and knowing how large agents are.

use std::time::Duration;

use mezzo_sdk::{MasterHttp, Resources, TaskBuilder, v1};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use super::{BatchError, State};
use crate::spec::JobSpec;

/// Offers are declined for this long while launches are held (the saved
/// jobs are not loaded yet, or a restart's reconciliation has not ended).
const HOLD_REFUSE: f64 = 0.1;

impl State {
    /// Lets the work queue place and launch what waits (the tasks of
    /// runnable jobs, in submission order, spread over the hosts); it
    /// declines what is left.
    pub(super) async fn offers(&mut self, offers: Vec<v1::Offer>) {
        let now = Instant::now();
        let holding = self.hold_until.is_some_and(|t| t > now);
        if !self.loaded || !self.connected || holding {
            let ids = offers.into_iter().map(|o| o.offer_id).collect();
            if let Err(e) = self.scheduler.decline(ids, Some(HOLD_REFUSE)).await {
                debug!(error = %e, "decline failed");
            }
            return;
        }
        // Room freed since the last tick (`max_parallel`) is filled now.
        self.feed();
        // Only worth working out when a report of waiting tasks may be sent.
        let largest = self.report_due(now).then(|| largest_offer(&offers));
        let jobs = &self.jobs;
        let round = self
            .queue
            .offers(
                &self.scheduler,
                offers,
                |key, b| match jobs.get(&*key.job) {
                    Some(job) => task(&job.spec, key.index, b),
                    None => b,
                },
                now,
            )
            .await;
        let at = mezzo_sdk::clock::unix_now();
        for l in &round.launched {
            if let Some(key) = self.queue.payload(l.id) {
                self.runs.launched(&key.job, key.index, &l.task_id, &l.location, at);
            }
        }
        let unplaced: Vec<(String, u32)> = round
            .unplaced
            .iter()
            .filter_map(|id| self.queue.payload(*id))
            .map(|k| (k.job.to_string(), k.index))
            .collect();
        self.report_waiting(largest, &unplaced, now).await;
    }
}

/// Tasks named in one pending report at most (the rest are counted).
const MAX_REPORTED: usize = 100;
/// Shortest time between two pending reports that both name waiting tasks.
const PENDING_EVERY: Duration = Duration::from_secs(1);

/// "largest offer cpus:…", for the reasons of waiting tasks.
fn largest_offer(offers: &[v1::Offer]) -> String {
    offers
        .iter()
        .filter_map(|o| Resources::from_proto(&o.resources).ok())
        .max_by_key(|r| (r.cpus, r.mem))
        .map_or_else(|| "no offer".to_owned(), |r| format!("largest offer {r}"))
}

impl State {
    /// While tasks keep waiting, every round of offers would repeat the
    /// same report: one a second is plenty for a human asking "why".
    fn report_due(&self, now: Instant) -> bool {
        self.pending_sent.is_none_or(|t| now.duration_since(t) >= PENDING_EVERY)
    }

    /// Tells the masters which tasks the offers had no room for, and why
    /// (shown by the dashboard and `mezzo why`); clears the report once
    /// everything found room.
    async fn report_waiting(&mut self, largest: Option<String>, unplaced: &[(String, u32)], now: Instant) {
        if unplaced.is_empty() {
            if self.pending_reported {
                self.pending_reported = false;
                let _ = self.scheduler.report_pending(Vec::new()).await;
            }
            return;
        }
        let Some(largest) = largest else { return };
        self.pending_sent = Some(now);
        let report: Vec<v1::PendingTask> = unplaced
            .iter()
            .take(MAX_REPORTED)
            .filter_map(|(name, index)| {
                let need = self.jobs.get(name)?.resources();
                let reason = format!(
                    "job {name}: {} task(s) wait for room; each needs {need}, {largest}",
                    unplaced.len(),
                );
                let mut pending = mezzo_sdk::pending_task(format!("{name}.{index}"), reason, Some(need));
                pending.priority = self.jobs.get(name)?.spec.priority;
                Some(pending)
            })
            .collect();
        self.pending_reported = true;
        if let Err(e) = self.scheduler.report_pending(report).await {
            debug!(error = %e, "pending report failed");
        }
    }
}

/// Task `index` of a job: `b` carries its id and resources.
fn task(spec: &JobSpec, index: u32, b: TaskBuilder) -> TaskBuilder {
    let b = b.name(format!("{}[{index}]", spec.name)).priority(spec.priority);
    // A command that is only plain words needs no shell: exec it directly
    // (a shell's start-up is a quarter of a trivial task's cost).
    let b = match plain_words(&spec.command) {
        Some((program, args)) => b.command(program, args),
        None => b.shell(spec.command.clone()),
    };
    let mut b = b
        .env("MEZZO_TASK_INDEX", index.to_string())
        .env("MEZZO_JOB", spec.name.clone())
        .label("mezzo.batch.job", spec.name.clone());
    for (k, v) in &spec.env {
        b = b.env(k.clone(), v.clone());
    }
    if let Some(image) = &spec.image {
        b = b.image(image.clone());
    }
    if let Some(secret) = &spec.image_credentials {
        b = b.image_credentials(secret.clone());
    }
    b
}

/// Shell keywords and the builtins that have no program of their name.
const SHELL_ONLY: &[&str] = &[
    ".", "alias", "break", "case", "cd", "command", "continue", "do", "done", "elif", "else", "esac", "eval", "exec",
    "exit", "export", "fi", "for", "getopts", "hash", "if", "local", "read", "readonly", "return", "set", "shift",
    "source", "then", "times", "trap", "type", "ulimit", "umask", "unalias", "unset", "until", "wait", "while",
];

/// `command` split into a program and its arguments when it is nothing but
/// words of characters no shell treats specially; otherwise `None`.
fn plain_words(command: &str) -> Option<(&str, Vec<&str>)> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./-=:,+@%".contains(c);
    let mut words = command.split_ascii_whitespace();
    let program = words.next()?;
    let args: Vec<&str> = words.collect();
    let all_plain = std::iter::once(program)
        .chain(args.iter().copied())
        .all(|w| w.chars().all(plain));
    // `a=b cmd` is an assignment to a shell, not a program named "a=b";
    // builtins that change the shell itself exist only inside one.
    let shell_only = program.contains('=') || SHELL_ONLY.contains(&program);
    (all_plain && !shell_only).then_some((program, args))
}

/// Refuses jobs whose task is larger than every agent known. With no
/// agent known yet nothing can be judged, and the job is taken.
pub(super) fn check_satisfiable(specs: &[JobSpec], agents: &[Resources]) -> Result<(), BatchError> {
    if agents.is_empty() {
        return Ok(());
    }
    for spec in specs {
        let need = Resources::parse(&spec.resources_text()).map_err(|e| crate::spec::SpecError::Field {
            job: spec.name.clone(),
            field: "cpus",
            why: e.to_string(),
        })?;
        if !agents.iter().any(|a| a.contains(&need)) {
            let largest = agents
                .iter()
                .max_by_key(|a| (a.cpus, a.mem))
                .map(ToString::to_string)
                .unwrap_or_default();
            return Err(BatchError::Unsatisfiable {
                job: spec.name.clone(),
                need: need.to_string(),
                largest,
            });
        }
    }
    Ok(())
}

/// Keeps the total resources of every registered agent, from the
/// master's `/state`, every 2 s.
pub(super) async fn poll_agents(http: MasterHttp, tx: watch::Sender<Vec<Resources>>) {
    loop {
        match agent_totals(&http).await {
            Ok(list) => {
                tx.send_replace(list);
            }
            Err(e) => debug!(error = %e, "cannot read the agents' sizes; resource checks at submission use the last"),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn agent_totals(http: &MasterHttp) -> Result<Vec<Resources>, mezzo_sdk::SdkError> {
    let state: serde_json::Value = http.get_json("/state").await?;
    let agents = state["agents"].as_array().cloned().unwrap_or_default();
    Ok(agents
        .iter()
        .filter(|a| a["status"] != "unreachable")
        .filter_map(|a| totals_of(&a["total"]))
        .collect())
}

/// Reads the JSON form of `Resources` that `/state` writes.
fn totals_of(v: &serde_json::Value) -> Option<Resources> {
    serde_json::from_value(v.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_words_skip_the_shell() {
        assert_eq!(plain_words("true"), Some(("true", vec![])));
        assert_eq!(plain_words("  sleep 0.5 "), Some(("sleep", vec!["0.5"])));
        assert_eq!(
            plain_words("/bin/echo a-b c=d"),
            Some(("/bin/echo", vec!["a-b", "c=d"]))
        );
        for shell in [
            "echo $MEZZO_TASK_INDEX",
            "a && b",
            "x > f",
            "echo 'q'",
            "A=1 cmd",
            "ls *",
            "f; g",
            "",
            "echo \\n",
            "exec sleep 1",
            "cd /tmp",
        ] {
            assert_eq!(plain_words(shell), None, "{shell}");
        }
    }

    fn built(id: &str) -> TaskBuilder {
        TaskBuilder::new(id).resources(&Resources::parse("cpus:0.1;mem:32").expect("res"))
    }

    fn spec(text: &str) -> Vec<JobSpec> {
        crate::spec::parse(text, &Default::default()).expect("spec")
    }

    #[test]
    fn tasks_larger_than_every_agent_are_refused() {
        let agents = vec![
            Resources::parse("cpus:2;mem:1024").expect("res"),
            Resources::parse("cpus:8;mem:512").expect("res"),
        ];
        let fits = spec("[[job]]\nname = \"a\"\ncommand = \"x\"\ncpus = 4\nmem = 512\n");
        assert!(check_satisfiable(&fits, &agents).is_ok());
        let too_big = spec("[[job]]\nname = \"a\"\ncommand = \"x\"\ncpus = 4\nmem = 1024\n");
        let err = check_satisfiable(&too_big, &agents).expect_err("no agent has both");
        assert!(err.to_string().contains("no agent could ever run"), "{err}");
        assert!(
            check_satisfiable(&too_big, &[]).is_ok(),
            "no agents known: cannot judge"
        );
    }

    #[test]
    fn agent_totals_parse_from_state_json() {
        let v = serde_json::json!({"cpus": 8.0, "mem": 8192, "disk": 0, "ports": "[31000-31099]", "gpus": 1.0});
        let r = totals_of(&v).expect("parses");
        assert_eq!(r.cpus.0, 8000);
        assert_eq!(r.mem.0, 8192);
        assert_eq!(r.scalars.get("gpus"), Some(&1000));
    }

    #[test]
    fn task_info_carries_index_and_env() {
        let s = &spec("[[job]]\nname = \"a\"\ncommand = \"echo hi\"\nenv = { X = \"1\" }\n")[0];
        let t = task(s, 3, built("a.3.1.1")).build();
        let cmd = t.command.expect("command");
        let env: Vec<_> = cmd
            .environment
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str()))
            .collect();
        assert!(env.contains(&("MEZZO_TASK_INDEX", "3")));
        assert!(env.contains(&("X", "1")));
        assert_eq!(t.name, "a[3]");
    }

    #[test]
    fn task_info_names_the_images_credentials_secret() {
        let s = &spec(
            "[[job]]\nname = \"a\"\ncommand = \"x\"\nimage = \"r.example.com/a:1\"\nimage_credentials = \"login\"\n",
        )[0];
        let t = task(s, 0, built("a.0.1.1")).build();
        let image = t.container.and_then(|c| c.image).expect("image");
        assert_eq!(image.reference, "r.example.com/a:1");
        assert_eq!(image.credentials_secret, "login");
        assert!(image.credentials.is_empty());
    }
}
