//! Turning offers into launches, and knowing how large agents are.

use std::time::{Duration, Instant};

use mezzo_sdk::offers::{Placed, Strategy, TaskRequest, pack};
use mezzo_sdk::{MasterHttp, Resources, TaskBuilder, v1};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::{BatchError, State};
use crate::spec::JobSpec;

/// Most tasks considered per batch of offers (bounds the work per event).
const MAX_PER_ROUND: usize = 4096;
/// Offers declined while there is nothing to run stay away this long
/// (a revive brings them back when work appears).
const IDLE_REFUSE: f64 = 30.0;
/// Offers too small for any waiting task come back after this long. A
/// decline filters the whole agent, so a long one would hide the resources
/// that finishing tasks free meanwhile (1 s here cost a third of the
/// throughput); a short one lets them merge into a usable offer.
const BUSY_REFUSE: f64 = 0.1;

impl State {
    /// Packs launchable tasks of runnable jobs, in submission order, into
    /// the offers (spread over their hosts); declines what is left.
    pub(super) async fn offers(&mut self, offers: Vec<v1::Offer>) {
        let now = Instant::now();
        let holding = self.hold_until.is_some_and(|t| t > now);
        let mut wanted: Vec<(String, u32, TaskRequest)> = Vec::new();
        if self.loaded && self.connected && !holding {
            for name in &self.order {
                let Some(job) = self.jobs.get(name) else { continue };
                if wanted.len() >= MAX_PER_ROUND || !self.deps_ok(job) {
                    continue;
                }
                let Ok(res) = Resources::parse(&job.spec.resources_text()) else {
                    continue;
                };
                let req = TaskRequest::new(&res);
                for index in job.launchable(MAX_PER_ROUND - wanted.len()) {
                    wanted.push((name.clone(), index, req.clone()));
                }
            }
        }
        let requests: Vec<TaskRequest> = wanted.iter().map(|(_, _, r)| r.clone()).collect();
        let packing = match pack(&offers, &requests, Strategy::Spread, &[], &mut Placed::default()) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "offers with bad resources; declining them");
                Default::default()
            }
        };
        for (offer, placed) in packing.by_offer() {
            let mut tasks = Vec::with_capacity(placed.len());
            let mut launched = Vec::with_capacity(placed.len());
            for p in placed {
                let (name, index, _) = &wanted[p.request];
                let Some(job) = self.jobs.get_mut(name) else { continue };
                let id = job.next_task_id(*index, self.epoch);
                tasks.push(task_info(&job.spec, &id, *index, &p.resources));
                job.launched(*index, id.clone(), now);
                self.runs
                    .launched(name, *index, &id, &offers[offer], mezzo_sdk::clock::unix_now());
                launched.push((name.clone(), *index));
            }
            let offer_id = offers[offer].offer_id.clone();
            if let Err(e) = self.scheduler.accept(vec![offer_id], tasks, Some(0.0)).await {
                warn!(error = %e, tasks = launched.len(), "accept failed; the tasks stay pending");
                for (name, index) in launched {
                    if let Some(job) = self.jobs.get_mut(&name) {
                        job.launch_failed(index);
                    }
                }
            }
        }
        self.report_waiting(&offers, &wanted, &packing.unplaced).await;
        let unused: Vec<String> = packing
            .unused_offers(offers.len())
            .into_iter()
            .map(|i| offers[i].offer_id.clone())
            .collect();
        if unused.is_empty() {
            return;
        }
        // Nothing at all to do: keep offers away until a revive.
        let idle = self.loaded && !holding && self.jobs.values().all(|j| j.launchable(1).is_empty());
        let refuse = if idle { IDLE_REFUSE } else { BUSY_REFUSE };
        if idle && !self.suppressed {
            self.suppressed = true;
            debug!("nothing to launch; declining offers until new work arrives");
        }
        if let Err(e) = self.scheduler.decline(unused, Some(refuse)).await {
            debug!(error = %e, "decline failed");
        }
    }
}

/// Tasks named in one pending report at most (the rest are counted).
const MAX_REPORTED: usize = 100;
/// Shortest time between two pending reports that both name waiting tasks.
const PENDING_EVERY: Duration = Duration::from_secs(1);

impl State {
    /// Tells the masters which tasks the offers had no room for, and why
    /// (shown by the dashboard and `mezzo why`); clears the report once
    /// everything found room.
    async fn report_waiting(
        &mut self,
        offers: &[v1::Offer],
        wanted: &[(String, u32, TaskRequest)],
        unplaced: &[usize],
    ) {
        if unplaced.is_empty() {
            if self.pending_reported {
                self.pending_reported = false;
                let _ = self.scheduler.report_pending(Vec::new()).await;
            }
            return;
        }
        // While tasks keep waiting, every round of offers would repeat the
        // same report: one a second is plenty for a human asking "why".
        let now = Instant::now();
        if self.pending_sent.is_some_and(|t| now.duration_since(t) < PENDING_EVERY) {
            return;
        }
        self.pending_sent = Some(now);
        let largest = offers
            .iter()
            .filter_map(|o| Resources::from_proto(&o.resources).ok())
            .max_by_key(|r| (r.cpus, r.mem))
            .map_or_else(|| "no offer".to_owned(), |r| format!("largest offer {r}"));
        let report: Vec<v1::PendingTask> = unplaced
            .iter()
            .take(MAX_REPORTED)
            .map(|&i| {
                let (name, index, req) = &wanted[i];
                let reason = format!(
                    "job {name}: {} task(s) wait for room; each needs {}, {largest}",
                    unplaced.len(),
                    req.resources
                );
                mezzo_sdk::pending_task(format!("{name}.{index}"), reason, Some(&req.resources))
            })
            .collect();
        self.pending_reported = true;
        if let Err(e) = self.scheduler.report_pending(report).await {
            debug!(error = %e, "pending report failed");
        }
    }
}

/// The task for attempt `id` of `index`.
fn task_info(spec: &JobSpec, id: &str, index: u32, resources: &Resources) -> v1::TaskInfo {
    let b = TaskBuilder::new(id)
        .name(format!("{}[{index}]", spec.name))
        .resources(resources);
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
    b.build()
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
        let t = task_info(s, "a.3.1.1", 3, &Resources::parse("cpus:0.1;mem:32").expect("res"));
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
        let t = task_info(s, "a.0.1.1", 0, &Resources::parse("cpus:0.1;mem:32").expect("res"));
        let image = t.container.and_then(|c| c.image).expect("image");
        assert_eq!(image.reference, "r.example.com/a:1");
        assert_eq!(image.credentials_secret, "login");
        assert!(image.credentials.is_empty());
    }
}
