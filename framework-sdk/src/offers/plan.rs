//! Placing work that carries the caller's own payload, so that nothing is
//! kept in parallel vectors: [`plan`] answers with offer ids, locations
//! and payloads, and [`Scheduler::launch`] accepts the placements, names
//! them in the [`Placed`] record (undoing those whose accept is refused)
//! and declines the offers left over, in one call.

use std::collections::BTreeMap;

use futures::StreamExt;
use mezzo_proto::reservation::ReservationError;
use mezzo_proto::resources::Resources;
use mezzo_proto::v1;

use super::constraints::{Constraint, Location, Placed};
use super::fit::{Strategy, TaskRequest, pack};
use crate::{Scheduler, SdkError};

/// One piece of work placed on an offer.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment<T> {
    /// The caller's payload, as given to [`plan`].
    pub payload: T,
    /// The offer to accept it with.
    pub offer_id: String,
    /// Where it will run.
    pub location: Location,
    /// The resources to give the task: the request's plus its ports.
    pub resources: Resources,
    /// The ports chosen, in order.
    pub ports: Vec<u64>,
}

/// The answer of [`plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct Plan<T> {
    /// Placed work, in the order given.
    pub assignments: Vec<Assignment<T>>,
    /// Work that fit nowhere (or broke a constraint everywhere), in order.
    pub unplaced: Vec<T>,
    /// Offers that received nothing: decline them.
    pub unused_offers: Vec<String>,
}

/// Places each `(request, payload)` as [`pack`] does, counting it in
/// `placed`, and answers with offer ids and payloads.
pub fn plan<T>(
    offers: &[v1::Offer],
    work: impl IntoIterator<Item = (TaskRequest, T)>,
    strategy: Strategy,
    constraints: &[Constraint],
    placed: &mut Placed,
) -> Result<Plan<T>, ReservationError> {
    let (requests, payloads): (Vec<TaskRequest>, Vec<T>) = work.into_iter().unzip();
    let packing = pack(offers, &requests, strategy, constraints, placed)?;
    let unused_offers = packing
        .unused_offers(offers.len())
        .into_iter()
        .map(|i| offers[i].offer_id.clone())
        .collect();
    let mut slots: Vec<Option<T>> = payloads.into_iter().map(Some).collect();
    let mut assignments = Vec::with_capacity(packing.placements.len());
    for p in packing.placements {
        let Some(payload) = slots[p.request].take() else {
            continue;
        };
        let offer = &offers[p.offer];
        assignments.push(Assignment {
            payload,
            offer_id: offer.offer_id.clone(),
            location: Location::of(offer),
            resources: p.resources,
            ports: p.ports,
        });
    }
    Ok(Plan {
        assignments,
        unplaced: slots.into_iter().flatten().collect(),
        unused_offers,
    })
}

/// What [`Scheduler::launch`] did with a plan.
#[derive(Debug)]
pub struct Launched<T> {
    /// Launched: task id and payload.
    pub launched: Vec<(String, T)>,
    /// Accepts that failed: their places were given back. Most were
    /// refused (the offer was rescinded meanwhile, a task was invalid),
    /// but after [`SdkError::Transport`] or [`SdkError::Timeout`] the
    /// call may have reached the master: [`Refused::maybe_launched`].
    pub refused: Vec<Refused<T>>,
    /// The plan's work that fit nowhere.
    pub unplaced: Vec<T>,
}

/// One task whose accept failed.
#[derive(Debug)]
pub struct Refused<T> {
    /// The caller's payload.
    pub payload: T,
    /// The task that was to be launched.
    pub task_id: String,
    /// Where it was to run.
    pub location: Location,
    /// Why.
    pub error: SdkError,
}

impl<T> Refused<T> {
    /// True when the accept may have reached the master before the call
    /// failed (the connection broke, or no answer came in time): the task
    /// may run; reconcile it (an unknown one comes back `TASK_DROPPED`)
    /// before launching its work under another id.
    pub fn maybe_launched(&self) -> bool {
        matches!(self.error, SdkError::Transport(_) | SdkError::Timeout)
    }
}

/// How many accepts [`Scheduler::launch`] keeps in flight.
pub const ACCEPTS_IN_FLIGHT: usize = 32;

impl Scheduler {
    /// Carries out a [`plan`]: builds each assignment's task with `build`,
    /// declines the unused offers first (filtered for `refuse_seconds`:
    /// other frameworks get them back at once), accepts each offer with
    /// its tasks (one call per offer, up to [`ACCEPTS_IN_FLIGHT`] at a
    /// time: a plan spread over thousands of agents is not thousands of
    /// round trips in a row), names every task in `placed` so that its
    /// end frees its place ([`Placed::observe`]) and gives back the places
    /// of refused accepts. The accepted offers' remainders are not
    /// filtered: they come back at the next allocation, merged with what
    /// ending tasks free, for the work still waiting (a framework with
    /// none declines them then).
    pub async fn launch<T>(
        &self,
        plan: Plan<T>,
        placed: &mut Placed,
        refuse_seconds: Option<f64>,
        mut build: impl FnMut(&Assignment<T>) -> v1::TaskInfo,
    ) -> Launched<T> {
        // Per offer: the tasks for its accept, and each one's id and payload.
        type Batch<T> = (Vec<v1::TaskInfo>, Vec<(String, T)>);
        let mut by_offer: BTreeMap<String, Batch<T>> = BTreeMap::new();
        for a in plan.assignments {
            let task = build(&a);
            let id = task.task_id.clone();
            placed.assign(&id, a.location);
            let (tasks, ids) = by_offer.entry(a.offer_id).or_default();
            tasks.push(task);
            ids.push((id, a.payload));
        }
        if !plan.unused_offers.is_empty()
            && let Err(e) = self.decline(plan.unused_offers, refuse_seconds).await
        {
            tracing::debug!("declining unused offers failed: {e}");
        }
        let mut out = Launched {
            launched: Vec::new(),
            refused: Vec::new(),
            unplaced: plan.unplaced,
        };
        let mut answers =
            futures::stream::iter(by_offer.into_iter().map(|(offer_id, (tasks, ids))| async move {
                (self.accept(vec![offer_id], tasks, Some(0.0)).await, ids)
            }))
            .buffer_unordered(ACCEPTS_IN_FLIGHT);
        while let Some((answer, ids)) = answers.next().await {
            match answer {
                Ok(()) => out.launched.extend(ids),
                Err(error) => {
                    for (task_id, payload) in ids {
                        let location = placed.take(&task_id).unwrap_or_default();
                        out.refused.push(Refused {
                            payload,
                            task_id,
                            location,
                            error: error.clone(),
                        });
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::{any, prop_assert, proptest};

    use super::*;

    use crate::offers::test_offers::{offer, req};

    #[test]
    fn payloads_come_back_with_offer_ids() {
        let offers = [
            offer("o1", "a1", "h", "cpus:1"),
            offer("o2", "a2", "h", "cpus:1"),
            offer("o3", "a3", "g", "cpus:0.1"),
        ];
        let work = ["x", "y", "z"].map(|p| (req("cpus:1"), p));
        let mut placed = Placed::default();
        let p = plan(
            &offers,
            work,
            Strategy::FirstFit,
            &[Constraint::UniqueAgent],
            &mut placed,
        )
        .expect("plan");
        let got: Vec<(&str, &str)> = p.assignments.iter().map(|a| (a.payload, a.offer_id.as_str())).collect();
        assert_eq!(got, [("x", "o1"), ("y", "o2")]);
        assert_eq!(p.unplaced, ["z"]);
        assert_eq!(p.unused_offers, ["o3"]);
        assert_eq!(p.assignments[1].location.agent_id, "a2");
    }

    /// Two agents on one machine report one host name: per-agent limits
    /// use both, a per-host limit counts them together and says so.
    #[test]
    fn agents_sharing_a_host_name() {
        let offers = [offer("o1", "a1", "box", "cpus:4"), offer("o2", "a2", "box", "cpus:4")];
        let work = || (0..4).map(|i| (req("cpus:1"), i));
        let mut placed = Placed::default();
        let per_agent = [Constraint::MaxPerAgent(2)];
        let p = plan(&offers, work(), Strategy::FirstFit, &per_agent, &mut placed).expect("plan");
        assert_eq!(p.assignments.len(), 4);
        assert_eq!((placed.on_agent("a1"), placed.on_agent("a2")), (2, 2));
        assert_eq!(placed.shared_hosts().collect::<Vec<_>>(), ["box"]);
        let mut placed = Placed::default();
        let per_host = [Constraint::MaxPerHost(2)];
        let p = plan(&offers, work(), Strategy::FirstFit, &per_host, &mut placed).expect("plan");
        assert_eq!(p.assignments.len(), 2, "the two agents share the host's limit");
        assert!(placed.shared_hosts().count() == 1);
    }

    proptest! {
        /// Over many rounds of random offers, with random refused accepts
        /// (their places given back) and random task ends (observed), a
        /// per-agent limit always holds and the record matches the tasks
        /// that run.
        #[test]
        fn a_constraint_holds_across_rounds_and_refusals(
            rounds in proptest::collection::vec(
                (proptest::collection::vec((0usize..4, 1u64..4), 1..4), any::<u64>(), any::<u64>()),
                1..30,
            ),
        ) {
            const LIMIT: usize = 2;
            let mut placed = Placed::default();
            let mut running: BTreeMap<String, String> = BTreeMap::new(); // task -> agent
            let mut next = 0u64;
            for (round, (offered, refuse_bits, end_bits)) in rounds.into_iter().enumerate() {
                let offers: Vec<v1::Offer> = offered
                    .iter()
                    .enumerate()
                    .map(|(k, (agent, cpus))| offer(&format!("o{round}-{k}"), &format!("a{agent}"), "box", &format!("cpus:{cpus}")))
                    .collect();
                let work: Vec<(TaskRequest, u64)> = (0..3).map(|_| { next += 1; (req("cpus:1"), next) }).collect();
                let p = plan(&offers, work, Strategy::Spread, &[Constraint::MaxPerAgent(LIMIT)], &mut placed).expect("plan");
                for (i, a) in p.assignments.iter().enumerate() {
                    let id = format!("t{}", a.payload);
                    placed.assign(&id, a.location.clone());
                    if refuse_bits >> (i % 64) & 1 == 1 {
                        placed.release(&id);
                    } else {
                        running.insert(id, a.location.agent_id.clone());
                    }
                }
                let ids: Vec<String> = running.keys().cloned().collect();
                for (i, id) in ids.iter().enumerate() {
                    if end_bits >> (i % 64) & 1 == 1 {
                        let status = v1::TaskStatus {
                            task_id: id.clone(),
                            state: crate::TaskState::Finished.to_proto() as i32,
                            ..Default::default()
                        };
                        prop_assert!(placed.observe(&status));
                        running.remove(id);
                    }
                }
                for agent in 0..4 {
                    let a = format!("a{agent}");
                    let n = running.values().filter(|x| **x == a).count();
                    prop_assert!(n <= LIMIT, "{} runs {} tasks", a, n);
                    prop_assert!(placed.on_agent(&a) == n, "record {} != {} on {}", placed.on_agent(&a), n, a);
                }
                prop_assert!(placed.tasks() == running.len());
            }
        }
    }
}
