//! Helpers that every framework would otherwise rewrite: fitting task
//! requests into offers ([`pack`], first fit or best fit across several
//! offers), choosing ports from offered ranges ([`ports`]), and placement
//! constraints ([`Constraint`]), an offer's resources by reservation
//! ([`usable`], [`unreserved`], [`reserved`]) and its persistent volumes
//! ([`volume`]).
//!
//! They are pure functions over offers and the framework's own record of
//! where its tasks run, so they are easy to test and combine:
//!
//! ```
//! use mezzo_sdk::offers::{pack, Constraint, Placed, Strategy, TaskRequest};
//! use mezzo_sdk::{v1, Resources};
//!
//! let offer = |id: &str, host: &str| v1::Offer {
//!     offer_id: id.into(),
//!     agent_id: format!("agent-{host}"),
//!     hostname: host.into(),
//!     resources: Resources::parse("cpus:2;mem:1024;ports:[31000-31009]").unwrap().to_proto(),
//!     ..Default::default()
//! };
//! let offers = [offer("o1", "a"), offer("o2", "b")];
//! let web = TaskRequest::new(&Resources::parse("cpus:0.5;mem:128").unwrap()).ports(1);
//! let constraints = [Constraint::UniqueHost];
//! let mut placed = Placed::default();
//! let packing = pack(&offers, &[web.clone(), web.clone(), web], Strategy::FirstFit, &constraints, &mut placed).unwrap();
//! assert_eq!(packing.placements.len(), 2, "one per host");
//! assert_eq!(packing.unplaced, vec![2]);
//! for (offer, tasks) in packing.by_offer() {
//!     // scheduler.accept(vec![offers[offer].offer_id.clone()], tasks built from `tasks`, None)
//!     assert_eq!(tasks.len(), 1);
//!     assert_eq!(tasks[0].ports.len(), 1);
//! }
//! ```

mod constraints;
mod fit;
mod plan;
pub mod ports;
mod reserved;
mod volumes;

pub use constraints::{Constraint, ConstraintError, Location, Placed, Violation};
pub use fit::{Packing, Placement, Strategy, TaskRequest, pack};
pub use plan::{ACCEPTS_IN_FLIGHT, Assignment, Launched, Plan, Refused, plan};
pub use reserved::{reserved, unreserved, usable};
pub use volumes::{offer_with_volume, volume};

/// Offers and requests for the placement tests.
#[cfg(test)]
mod test_offers {
    use mezzo_proto::resources::Resources;
    use mezzo_proto::v1;

    use super::TaskRequest;

    pub(super) fn offer(id: &str, agent: &str, host: &str, res: &str) -> v1::Offer {
        v1::Offer {
            offer_id: id.into(),
            agent_id: agent.into(),
            hostname: host.into(),
            resources: Resources::parse(res).expect("res").to_proto(),
            ..Default::default()
        }
    }

    pub(super) fn req(res: &str) -> TaskRequest {
        TaskRequest::new(&Resources::parse(res).expect("res"))
    }
}
