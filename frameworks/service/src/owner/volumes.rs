//! Stateful services' volumes, from each round of offers before the
//! controller places launches on them: what an offer shows to exist is
//! recorded, and volumes still missing are made (reserve and create, one
//! Accept per volume), their binding recorded first (written through, so
//! that a restart knows where each instance belongs). Decisions are the
//! pure [`crate::volumes::step`]; this file carries them out.

use std::collections::BTreeSet;

use mezzo_sdk::controller::Task;
use mezzo_sdk::operations::{create_volume, reserve};
use mezzo_sdk::{SdkError, v1};
use tracing::{info, warn};

use super::Owner;
use super::state::{is_instance, ordinal_of};
use crate::record::ServiceRecord;
use crate::volumes::{self, Action, Need};

impl Owner {
    /// Carries out the volume actions of every stateful service; answers
    /// the offers left for the controller (those not accepted here).
    pub(super) async fn make_volumes(&mut self, offers: Vec<v1::Offer>) -> Vec<v1::Offer> {
        if self.role.is_star() || !self.ctl.is_loaded() {
            return offers;
        }
        let now = mezzo_sdk::clock::unix_now();
        let mut taken = BTreeSet::new();
        let mut todo = Vec::new();
        for (name, rec) in self.ctl.desired() {
            let Some(spec) = rec.target_spec().filter(|s| s.is_stateful() && !rec.removing) else {
                continue;
            };
            let (Ok(reserve), Ok(constraints)) = (volumes::reservation(spec), spec.placement()) else {
                continue;
            };
            let in_use = in_use(&self.ctl.tasks(name));
            let need = Need {
                service: name,
                reserve: &reserve,
                disk_mib: spec.volume.as_ref().map_or(0, |v| v.disk_mib),
                constraints: &constraints,
                instances: rec.desired,
                bindings: &rec.volumes,
                in_use: &in_use,
            };
            for a in volumes::step(&need, &offers, &mut taken, now) {
                todo.push((name.to_owned(), need.disk_mib, a));
            }
        }
        let mut accepted = BTreeSet::new();
        for (name, disk_mib, action) in todo {
            match action {
                Action::Found { ordinal, binding } => {
                    let what = format!(
                        "volume {} of instance {ordinal} is on {}",
                        volumes::volume_id(&name, ordinal),
                        binding.hostname
                    );
                    self.ctl.modify(&name, |r| {
                        r.volumes.insert(ordinal, binding);
                        r.event(what);
                    });
                }
                Action::Create {
                    ordinal,
                    offer_id,
                    volume_id,
                    reserve: wanted,
                    binding,
                } => {
                    let Some(mut rec) = self.ctl.get(&name).cloned() else {
                        continue;
                    };
                    let retry = rec.volumes.contains_key(&ordinal);
                    let host = binding.hostname.clone();
                    rec.volumes.insert(ordinal, binding);
                    rec.event(format!("creating volume {volume_id} ({disk_mib} MiB) on {host}"));
                    if let Err(e) = self.ctl.put(&name, rec).await {
                        warn!(service = %name, volume = %volume_id, "cannot record the volume, not creating it: {e}");
                        continue;
                    }
                    let mut ops = Vec::new();
                    if !wanted.is_empty() {
                        ops.push(reserve(&self.role, &wanted));
                    }
                    ops.push(create_volume(&volume_id, disk_mib));
                    info!(service = %name, volume = %volume_id, %host, "creating a volume");
                    match self
                        .sched
                        .accept_operations(vec![offer_id.clone()], ops, Some(0.0))
                        .await
                    {
                        Ok(()) => {
                            accepted.insert(offer_id);
                        }
                        // The answer was lost: it may be done. The offer is
                        // spent either way; the creation is confirmed by an
                        // offer listing the volume, or asked for again.
                        Err(e @ (SdkError::Transport(_) | SdkError::Timeout)) => {
                            warn!(service = %name, volume = %volume_id, "no answer to the volume's creation: {e}");
                            accepted.insert(offer_id);
                        }
                        Err(e) => self.creation_refused(&name, ordinal, retry, &volume_id, &e),
                    }
                }
            }
        }
        offers.into_iter().filter(|o| !accepted.contains(&o.offer_id)).collect()
    }

    /// A refused creation: a first one is forgotten, so that the volume may
    /// go elsewhere; a retry keeps its agent (the volume may exist there
    /// already) and waits before asking again.
    fn creation_refused(&mut self, name: &str, ordinal: u32, retry: bool, volume_id: &str, e: &SdkError) {
        warn!(service = %name, volume = %volume_id, "creating the volume was refused: {e}");
        let what = format!("creating volume {volume_id} was refused: {e}");
        self.ctl.modify(name, |r: &mut ServiceRecord| {
            if !retry {
                r.volumes.remove(&ordinal);
            }
            r.event(what);
        });
    }
}

/// Instances with a live task (their volume is in use).
fn in_use(tasks: &[Task]) -> BTreeSet<u32> {
    tasks.iter().filter(|t| is_instance(t)).filter_map(ordinal_of).collect()
}
