//! Launching: the planner's new instances placed on offers, recorded
//! durably, then accepted; what finds no room is reported as pending.

use std::collections::BTreeMap;

use mezzo_sdk::offers::{Placed, Strategy, TaskRequest, pack};
use mezzo_sdk::{Resources, TaskBuilder, v1};
use tracing::{debug, info, warn};

use super::Owner;
use super::state::{Live, service_of, task_id};
use super::store::put;
use crate::plan::Phase;
use crate::record::InstanceRecord;
use crate::spec::ServiceSpec;

/// Offers we cannot use are refused this long while we need more...
const REFUSE_WANTING: f64 = 1.0;
/// ...and this long when we need nothing (we revive when that changes).
const REFUSE_IDLE: f64 = 30.0;

impl Owner {
    pub(super) async fn on_offers(&mut self, offers: Vec<v1::Offer>) {
        if !self.loaded {
            let ids = offers.into_iter().map(|o| o.offer_id).collect();
            let _ = self.sched.decline(ids, Some(REFUSE_WANTING)).await;
            return;
        }
        let now = self.now();
        let mut room = offers.clone();
        let mut tasks: BTreeMap<usize, Vec<(String, v1::TaskInfo)>> = BTreeMap::new();
        let mut wanting = false;
        let mut waiting = Vec::new();
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in &names {
            let step = self.plan(name, now);
            self.kill_all(name, step.kill).await;
            if step.launch == 0 {
                continue;
            }
            let placed = self.place(name, step.launch, &offers, &mut room).await;
            wanting |= (placed.len() as u32) < step.launch;
            let missing = step.launch.saturating_sub(placed.len() as u32);
            waiting.extend(self.waiting(name, missing, &offers));
            for (i, id, task) in placed {
                tasks.entry(i).or_default().push((id, task));
            }
        }
        for (i, list) in tasks.iter() {
            let (ids, infos): (Vec<String>, Vec<v1::TaskInfo>) = list.iter().cloned().unzip();
            if let Err(e) = self.sched.accept(vec![offers[*i].offer_id.clone()], infos, None).await {
                warn!(offer = %offers[*i].offer_id, "accept failed; the instances will be placed again: {e}");
                for id in ids {
                    let name = service_of(&id).to_owned();
                    self.forget(&name, &id);
                }
            }
        }
        let unused: Vec<String> = (0..offers.len())
            .filter(|i| !tasks.contains_key(i))
            .map(|i| offers[i].offer_id.clone())
            .collect();
        if !unused.is_empty() {
            let refuse = if wanting { REFUSE_WANTING } else { REFUSE_IDLE };
            let _ = self.sched.decline(unused, Some(refuse)).await;
        }
        if !waiting.is_empty() || self.pending_reported {
            // Why instances are not running, for the dashboard and `mezzo why`.
            self.pending_reported = !waiting.is_empty();
            if let Err(e) = self.sched.report_pending(waiting).await {
                debug!("pending report failed: {e}");
            }
        }
        self.flush().await;
    }

    /// Pending-report entries for `missing` instances of `name` that the
    /// offers had no room for.
    fn waiting(&self, name: &str, missing: u32, offers: &[v1::Offer]) -> Vec<v1::PendingTask> {
        let Some(s) = self.services.get(name) else {
            return vec![];
        };
        let version = s.rec.deployment.target;
        let Some(spec) = s.rec.versions.get(&version) else {
            return vec![];
        };
        let Ok(res) = spec.resources() else { return vec![] };
        let largest = offers
            .iter()
            .filter_map(|o| Resources::from_proto(&o.resources).ok())
            .max_by_key(|r| (r.cpus, r.mem))
            .map_or_else(|| "no offer".to_owned(), |r| format!("largest offer {r}"));
        let constraints = if spec.constraints.is_empty() {
            String::new()
        } else {
            format!(" under constraints {}", spec.constraints.join(", "))
        };
        let reason = format!(
            "service {name}: {missing} instance(s) of version {version} find no room; each needs {res} and {} port(s){constraints}; {largest}",
            spec.ports.len()
        );
        (0..missing.min(100))
            .map(|k| mezzo_sdk::pending_task(format!("{name}.waiting-{k}"), reason.clone(), Some(&res)))
            .collect()
    }

    /// Places up to `n` new instances of a service's target version on the
    /// offers (`room` is what is left of them), records them durably and
    /// returns the tasks to launch by offer index. Nothing is launched
    /// unless its record is written.
    async fn place(
        &mut self,
        name: &str,
        n: u32,
        offers: &[v1::Offer],
        room: &mut [v1::Offer],
    ) -> Vec<(usize, String, v1::TaskInfo)> {
        let Some(s) = self.services.get_mut(name) else {
            return vec![];
        };
        let version = s.rec.deployment.target;
        let Some(spec) = s.rec.versions.get(&version).cloned() else {
            return vec![];
        };
        let (Ok(res), Ok(constraints)) = (spec.resources(), spec.placement()) else {
            return vec![];
        };
        // Instances being stopped, or leaving a draining agent, hold no
        // place: a spread must not wait for them to go.
        let mut placed = Placed::default();
        for (id, r) in &s.rec.instances {
            let leaving = self.draining.contains_key(&r.agent_id);
            if !leaving && s.live.get(id).is_some_and(|l| l.phase != Phase::Killing) {
                placed.add_on(&r.host, r.attributes.iter().map(|(a, b)| (a.as_str(), b.as_str())));
            }
        }
        let request = TaskRequest::new(&res).ports(spec.ports.len());
        let requests = vec![request; n as usize];
        let packing = match pack(room, &requests, Strategy::Spread, &constraints, &mut placed) {
            Ok(p) => p,
            Err(e) => {
                warn!("an offer's resources do not parse: {e}");
                return vec![];
            }
        };
        let before = s.rec.clone();
        let mut out = Vec::new();
        for p in &packing.placements {
            let offer = &offers[p.offer];
            let task_id = task_id(name, version);
            s.rec.next_seq += 1;
            let inst = InstanceRecord {
                version,
                agent_id: offer.agent_id.clone(),
                host: offer.hostname.clone(),
                attributes: offer
                    .attributes
                    .iter()
                    .map(|a| (a.name.clone(), a.value.clone()))
                    .collect(),
                ports: p.ports.clone(),
                seq: s.rec.next_seq,
            };
            let task = build_task(&task_id, &spec, &p.resources, &inst);
            s.rec.instances.insert(task_id.clone(), inst);
            s.live.insert(task_id.clone(), Live::new(Phase::Staging));
            if let Ok(left) = Resources::from_proto(&room[p.offer].resources) {
                room[p.offer].resources = left.saturating_sub(&p.resources).to_proto();
            }
            out.push((p.offer, task_id, task));
        }
        if out.is_empty() {
            return out;
        }
        match put(&self.kv, &s.rec).await {
            Ok(()) => {
                s.dirty = false;
                info!(service = %name, version, count = out.len(), "launching instances");
                out
            }
            Err(e) => {
                warn!(service = %name, "cannot record new instances, not launching them: {e}");
                for (_, id, _) in &out {
                    s.live.remove(id);
                }
                s.rec = before;
                vec![]
            }
        }
    }
}

/// The task of one instance: the spec's command through the shell, its
/// resources and ports, and the ports in the environment.
fn build_task(task_id: &str, spec: &ServiceSpec, resources: &Resources, inst: &InstanceRecord) -> v1::TaskInfo {
    let mut b = TaskBuilder::new(task_id)
        .name(&spec.name)
        .resources(resources)
        .shell(&spec.command)
        .kill_grace(spec.kill_grace)
        .label("mezzo.service", &spec.name)
        .label("mezzo.service.version", inst.version.to_string())
        .env("HOST", &inst.host)
        .env("MEZZO_SERVICE", &spec.name);
    for (k, v) in &spec.env {
        b = b.env(k, v);
    }
    if let Some(image) = &spec.image {
        b = b.image(image);
    }
    if let Some(secret) = &spec.image_credentials {
        b = b.image_credentials(secret);
    }
    for (i, (name, port)) in spec.ports.iter().zip(&inst.ports).enumerate() {
        b = b
            .env(format!("PORT{i}"), port.to_string())
            .env(format!("MEZZO_PORT_{}", name.to_ascii_uppercase()), port.to_string());
    }
    if let Some(p) = inst.ports.first() {
        b = b.env("PORT", p.to_string());
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_carry_ports_env_and_labels() {
        let spec = ServiceSpec::parse(
            "name = \"web\"\ninstances = 1\ncommand = \"run\"\nresources = \"cpus:0.1\"\nports = [\"http\", \"admin\"]\n[env]\nA = \"1\"\n",
        )
        .expect("spec");
        let inst = InstanceRecord {
            version: 3,
            agent_id: "a".into(),
            host: "h".into(),
            attributes: vec![],
            ports: vec![31000, 31001],
            seq: 1,
        };
        let res = Resources::parse("cpus:0.1;ports:[31000-31001]").expect("res");
        let t = build_task("web.3.x", &spec, &res, &inst);
        let cmd = t.command.expect("command");
        let env: BTreeMap<_, _> = cmd
            .environment
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(env["PORT0"], "31000");
        assert_eq!(env["PORT1"], "31001");
        assert_eq!(env["PORT"], "31000");
        assert_eq!(env["MEZZO_PORT_ADMIN"], "31001");
        assert_eq!(env["A"], "1");
        assert_eq!(env["HOST"], "h");
        assert_eq!(service_of(&t.task_id), "web");
    }
}
