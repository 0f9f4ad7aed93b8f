//! The service's reconcile, called by the SDK's controller for one
//! service with its record and its instances' tasks: what ended, the
//! health of what runs, the update's progress deadline, then the
//! planner's step as kills and launches, and when to look again.

use std::time::Duration;

use mezzo_sdk::controller::{Context, Launch, Reconciler, Requeue, Task};
use mezzo_sdk::offers::TaskRequest;
use mezzo_sdk::{TaskBuilder, TaskState};
use tokio::time::Instant;
use tracing::{info, warn};

use super::events::{ended, unhealthy};
use super::state::{
    self, ORDINAL_LABEL, Services, Svc, VERSION_LABEL, instance_name, insts, is_instance, limits, ordinal_of,
    running_versions,
};
use crate::plan::{self, Verdict};
use crate::record::ServiceRecord;

impl Reconciler<ServiceRecord> for Services {
    type Error = String;

    fn reconcile(
        &mut self,
        name: &str,
        rec: &mut ServiceRecord,
        tasks: &[Task],
        ctx: &mut Context<'_>,
    ) -> Result<Requeue, String> {
        let now = self.now();
        let svc = self.svc(name, rec);
        for t in tasks.iter().filter(|t| t.ended()) {
            ended(svc, rec, name, t, now);
        }
        for t in tasks.iter().filter(|t| t.adopted && !t.ended() && !t.killing) {
            // A task of ours that no record holds (one we replaced while its
            // agent was away): stop it, so that it cannot be a duplicate.
            info!(task = %t.id, "stopping a task no service owns");
            ctx.kill(&t.id, None);
        }
        for t in tasks
            .iter()
            .filter(|t| is_instance(t) && t.state == TaskState::Running && !t.killing)
        {
            running(svc, rec, name, t, now);
        }
        check_progress(svc, rec, name);

        let insts = insts(tasks, Some(&*svc), |agent| ctx.draining(agent).is_some());
        let desired = if rec.removing { 0 } else { rec.desired };
        let may = svc.backoff.may_launch(now) && !rec.removing;
        let limits = limits(rec);
        let step = plan::step(&mut rec.deployment, desired, limits, &insts, may);
        if step.completed {
            let what = format!("version {} is deployed", rec.deployment.target);
            info!(service = %name, "{what}");
            rec.event(what);
            rec.prune_versions(&running_versions(tasks));
        }
        for id in step.kill {
            let grace = tasks
                .iter()
                .find(|t| t.id == id)
                .and_then(|t| rec.versions.get(&state::version_of(t)))
                .map(|v| v.kill_grace);
            info!(service = %name, task = %id, "stopping instance");
            svc.forget(&id);
            ctx.kill(id, grace);
        }
        launch(rec, name, step.launch, tasks, ctx)?;
        if rec.removing && !tasks.iter().any(|t| !t.ended()) {
            self.svcs.remove(name);
            ctx.forget();
            return Ok(Requeue::No);
        }
        Ok(requeue(self.svcs.get(name), rec, now))
    }

    fn build(&mut self, _name: &str, rec: &ServiceRecord, task: &Task, builder: TaskBuilder) -> TaskBuilder {
        match rec.versions.get(&state::version_of(task)) {
            Some(spec) => super::task::build(builder, spec, task),
            None => builder,
        }
    }
}

/// Asks for `n` new instances of the target version.
fn launch(rec: &ServiceRecord, name: &str, n: u32, tasks: &[Task], ctx: &mut Context<'_>) -> Result<(), String> {
    if n == 0 {
        return Ok(());
    }
    let version = rec.deployment.target;
    let spec = rec.target_spec().ok_or("no target version")?;
    let res = spec.resources().map_err(|e| e.to_string())?;
    let constraints = spec.placement().map_err(|e| e.to_string())?;
    let under = if spec.constraints.is_empty() {
        String::new()
    } else {
        format!(" under constraints {}", spec.constraints.join(", "))
    };
    let request = TaskRequest::new(&res).ports(spec.ports.len());
    if let Some(v) = &spec.volume {
        for i in free_ordinals(tasks, n) {
            let id = crate::volumes::volume_id(name, i);
            let binding = rec.volumes.get(&i);
            let at = binding.map_or_else(|| "once it is made".to_owned(), |b| format!("on {}", b.hostname));
            let mut launch = Launch::new(instance_name(version), request.clone())
                .label(VERSION_LABEL, version.to_string())
                .label(ORDINAL_LABEL, i.to_string())
                .volume(&id, &v.path)
                .describe(format!(
                    "service {name}, version {version}, instance {i}: waits for its volume {id} {at}"
                ));
            // Its own volume, not another agent's of the same id.
            if let Some(b) = binding {
                launch = launch.volume_agent(&b.agent_id);
            }
            ctx.launch(launch);
        }
        return Ok(());
    }
    for _ in 0..n {
        ctx.launch(
            Launch::new(instance_name(version), request.clone())
                .label(VERSION_LABEL, version.to_string())
                .constraints(constraints.clone())
                .describe(format!("service {name}, version {version}{under}")),
        );
    }
    Ok(())
}

/// The `n` lowest instance numbers no live, not stopping instance holds
/// (one being stopped holds its volume until it ends: its replacement
/// waits for the volume to be offered).
fn free_ordinals(tasks: &[Task], n: u32) -> Vec<u32> {
    let held: std::collections::BTreeSet<u32> = tasks
        .iter()
        .filter(|t| is_instance(t) && !t.killing)
        .filter_map(ordinal_of)
        .collect();
    (0..).filter(|i| !held.contains(i)).take(n as usize).collect()
}

/// A running instance: healthy when its agent says so (or at once,
/// without a check); unhealthy ones are replaced.
fn running(svc: &mut Svc, rec: &mut ServiceRecord, name: &str, t: &Task, now: Duration) {
    let Some(v) = rec.versions.get(&state::version_of(t)) else {
        return;
    };
    // Checked only if its task carries a check (a spec's check whose port
    // the instance did not get has none).
    let checked = crate::health::agent_check(v, &t.ports).is_some();
    match t.status.as_ref().and_then(|s| s.healthy) {
        _ if !checked => {
            svc.healthy_now(rec, &t.id);
        }
        Some(true) => {
            svc.healthy_now(rec, &t.id);
        }
        Some(false) => unhealthy(svc, rec, name, t, now),
        None => {}
    }
}

/// Rolls back an update that has not completed within its
/// `progress_deadline` (say, new instances that never get offers or
/// never start).
fn check_progress(svc: &mut Svc, rec: &mut ServiceRecord, name: &str) {
    if rec.deployment.from.is_none() {
        svc.update_seen = None;
        return;
    }
    let seen = *svc.update_seen.get_or_insert_with(Instant::now);
    let Some(spec) = rec.target_spec() else { return };
    let (deadline, auto) = (spec.upgrade.progress_deadline, spec.upgrade.auto_rollback);
    if rec.deployment.rolling_back || seen.elapsed() < deadline {
        return;
    }
    let version = rec.deployment.target;
    if let Verdict::RolledBack { from, to } = plan::failed(&mut rec.deployment, version, auto) {
        let what = format!(
            "version {from} not deployed within {}; rolling back to version {to}",
            humantime::format_duration(deadline)
        );
        warn!(service = %name, "{what}");
        rec.event(what);
        svc.update_seen = Some(Instant::now());
    }
}

/// When to look again without a change: when the restart hold ends, and
/// at the update's progress deadline.
fn requeue(svc: Option<&Svc>, rec: &ServiceRecord, now: Duration) -> Requeue {
    let hold = svc.and_then(|s| s.backoff.wait(now));
    let deadline = svc.and_then(|s| s.update_seen).and_then(|seen| {
        let spec = rec.target_spec()?;
        (!rec.deployment.rolling_back).then(|| spec.upgrade.progress_deadline.saturating_sub(seen.elapsed()))
    });
    match hold.into_iter().chain(deadline).min() {
        Some(d) => Requeue::After(d.max(Duration::from_millis(50))),
        None => Requeue::No,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mezzo_sdk::offers::Location;
    use mezzo_sdk::v1;

    use super::*;
    use crate::spec::ServiceSpec;

    fn record(instances: u32) -> ServiceRecord {
        let spec = ServiceSpec::parse(&format!(
            "name = \"web\"\ninstances = {instances}\ncommand = \"serve\"\nresources = \"cpus:0.1;mem:32\"\nports = [\"http\"]\n"
        ))
        .expect("spec");
        ServiceRecord::new(spec)
    }

    fn task(id: &str, state: TaskState) -> Task {
        Task {
            id: id.into(),
            key: "web".into(),
            state,
            status: Some(v1::TaskStatus {
                task_id: id.into(),
                state: state.to_proto() as i32,
                message: "exited 1".into(),
                ..Default::default()
            }),
            location: Location {
                agent_id: "a1".into(),
                hostname: "h".into(),
                attributes: vec![],
            },
            ports: vec![31000],
            labels: BTreeMap::from([(VERSION_LABEL.to_owned(), "1".to_owned())]),
            launched: Some(std::time::SystemTime::now()),
            killing: false,
            adopted: false,
        }
    }

    fn services() -> Services {
        Services::new()
    }

    fn run(s: &mut Services, rec: &mut ServiceRecord, tasks: &[Task]) -> (Requeue, Vec<String>, Vec<String>, bool) {
        run_key(s, rec, tasks, "web")
    }

    fn run_key(
        s: &mut Services,
        rec: &mut ServiceRecord,
        tasks: &[Task],
        key: &str,
    ) -> (Requeue, Vec<String>, Vec<String>, bool) {
        let draining = BTreeMap::new();
        let mut ctx = Context::new(Instant::now(), &draining);
        let requeue = s.reconcile(key, rec, tasks, &mut ctx).expect("reconcile");
        let launches = ctx
            .launches()
            .iter()
            .map(|l| l.labels()[VERSION_LABEL].clone())
            .collect();
        let kills = ctx.kills().iter().map(|k| k.0.clone()).collect();
        (requeue, launches, kills, ctx.forgetting())
    }

    #[test]
    fn a_new_service_asks_for_its_instances_at_the_target_version() {
        let (mut s, mut rec) = (services(), record(3));
        let (requeue, launches, kills, forget) = run(&mut s, &mut rec, &[]);
        assert_eq!(launches, ["1", "1", "1"]);
        assert!(kills.is_empty() && !forget);
        assert_eq!(requeue, Requeue::No, "nothing waits on the clock");
    }

    /// A failed instance is told in the events, holds launches for the
    /// restart backoff, and asks to be looked at again when it ends.
    #[test]
    fn a_failure_holds_the_replacement_and_requeues() {
        let (mut s, mut rec) = (services(), record(2));
        let ok = task("web.1.a", TaskState::Running);
        let (_, launches, ..) = run(&mut s, &mut rec, std::slice::from_ref(&ok));
        assert_eq!(launches.len(), 1, "one more to reach two");
        let failed = task("web.1.b", TaskState::Failed);
        let (requeue, launches, ..) = run(&mut s, &mut rec, &[ok, failed]);
        assert!(launches.is_empty(), "held by the backoff");
        assert!(
            rec.events
                .last()
                .is_some_and(|e| e.contains("instance web.1.b TASK_FAILED: exited 1")),
            "{:?}",
            rec.events
        );
        let Requeue::After(d) = requeue else {
            panic!("no requeue: {requeue:?}")
        };
        assert!(d <= Duration::from_secs(1) && d > Duration::from_millis(500), "{d:?}");
    }

    fn stateful(instances: u32) -> ServiceRecord {
        let spec = ServiceSpec::parse(&format!(
            "name = \"db\"\ninstances = {instances}\ncommand = \"serve\"\nresources = \"cpus:0.1;mem:32\"\nvolume = {{ disk_mib = 64 }}\n"
        ))
        .expect("spec");
        ServiceRecord::new(spec)
    }

    fn instance(id: &str, ordinal: u32, state: TaskState) -> Task {
        let mut t = task(id, state);
        t.key = "db".into();
        t.labels.insert(ORDINAL_LABEL.to_owned(), ordinal.to_string());
        t
    }

    /// (instance number, volume, path) of each launch asked for.
    fn stateful_launches(s: &mut Services, rec: &mut ServiceRecord, tasks: &[Task]) -> Vec<(String, String, String)> {
        let draining = BTreeMap::new();
        let mut ctx = Context::new(Instant::now(), &draining);
        s.reconcile("db", rec, tasks, &mut ctx).expect("reconcile");
        ctx.launches()
            .iter()
            .map(|l| {
                let m = l.mounts().expect("a stateful launch mounts its volume");
                (
                    l.labels()[ORDINAL_LABEL].clone(),
                    m.id.clone(),
                    m.container_path.clone(),
                )
            })
            .collect()
    }

    /// Each instance of a stateful service has a number and mounts the
    /// volume of that number; a replacement takes the number that is
    /// free, that of the instance it replaces.
    #[test]
    fn stateful_instances_mount_the_volume_of_their_number() {
        let (mut s, mut rec) = (services(), stateful(3));
        let got = stateful_launches(&mut s, &mut rec, &[]);
        let want: Vec<(String, String, String)> = (0..3)
            .map(|i| (i.to_string(), format!("db-{i}"), "data".to_owned()))
            .collect();
        assert_eq!(got, want);
        let up = [
            instance("db.1.a", 0, TaskState::Running),
            instance("db.1.b", 2, TaskState::Running),
        ];
        let got = stateful_launches(&mut s, &mut rec, &up);
        assert_eq!(got, [("1".to_owned(), "db-1".to_owned(), "data".to_owned())]);
        // Instance 0 failed: it comes back as 0, once the backoff allows.
        let failed = [
            instance("db.1.a", 0, TaskState::Failed),
            instance("db.1.b", 2, TaskState::Running),
            instance("db.1.c", 1, TaskState::Running),
        ];
        assert!(
            stateful_launches(&mut s, &mut rec, &failed).is_empty(),
            "held by the backoff"
        );
        s.svcs.get_mut("db").expect("svc").backoff = crate::plan::RestartHold::new(&Default::default());
        let got = stateful_launches(&mut s, &mut rec, &failed[1..]);
        assert_eq!(got, [("0".to_owned(), "db-0".to_owned(), "data".to_owned())]);
    }

    /// Scaling a stateful service down stops the highest numbers; an
    /// update never surges (one task per volume).
    #[test]
    fn stateful_services_scale_down_from_the_top_and_never_surge() {
        let (mut s, mut rec) = (services(), stateful(3));
        let up: Vec<Task> = (0..3)
            .map(|i| instance(&format!("db.1.{i}"), 2 - i, TaskState::Running))
            .collect();
        rec.desired = 2;
        let (_, launches, kills, _) = run_key(&mut s, &mut rec, &up, "db");
        assert!(launches.is_empty());
        assert_eq!(kills, ["db.1.0"], "instance 2 goes");
        let l = limits(&rec);
        assert_eq!((l.max_surge, l.max_unavailable), (0, 1));
    }

    #[test]
    fn a_task_no_record_holds_is_stopped_and_a_removed_service_forgotten() {
        let (mut s, mut rec) = (services(), record(1));
        let stray = Task {
            adopted: true,
            ..task("web.1.z", TaskState::Running)
        };
        let (_, launches, kills, _) = run(&mut s, &mut rec, &[stray]);
        assert_eq!(kills, ["web.1.z"]);
        assert_eq!(launches.len(), 1, "a stray is no instance");
        rec.removing = true;
        let mine = task("web.1.a", TaskState::Running);
        let (_, launches, kills, forget) = run(&mut s, &mut rec, &[mine]);
        assert_eq!((launches.len(), kills, forget), (0, vec!["web.1.a".to_owned()], false));
        let (_, _, _, forget) = run(&mut s, &mut rec, &[]);
        assert!(forget, "nothing of it is left");
    }
}
