//! Offer operations beside launches, for
//! [`Scheduler::accept_operations`](crate::Scheduler::accept_operations):
//! dynamic reservations and persistent volumes (docs/frameworks.md,
//! "Volumes").
//!
//! A stateful task's life, Mesos style: from an offer with room, reserve
//! its resources for the offer's role and create its volume (one
//! Accept); from a later offer of that agent that lists the volume
//! ([`offers::volume`](crate::offers::volume)), launch the task mounting
//! it ([`TaskBuilder::volume`](crate::TaskBuilder::volume)). The volume
//! outlives the task, so a replacement goes to the same agent and finds
//! the data.
//!
//! ```
//! use mezzo_sdk::operations::{create_volume, reserve};
//! use mezzo_sdk::{Resources, Role};
//!
//! let role = Role::parse("db").unwrap();
//! let ops = vec![
//!     reserve(&role, &Resources::parse("cpus:1;mem:512;disk:1024").unwrap()),
//!     create_volume("db-0", 1024),
//! ];
//! // scheduler.accept_operations(vec![offer.offer_id], ops, None).await?;
//! assert_eq!(ops.len(), 2);
//! ```

use mezzo_proto::reservation::{ReservedResources, Role};
use mezzo_proto::resources::Resources;
use mezzo_proto::v1;
use mezzo_proto::v1::operation::Operation as Op;

fn op(o: Op) -> v1::Operation {
    v1::Operation { operation: Some(o) }
}

/// Launches these tasks (what [`Scheduler::accept`](crate::Scheduler::accept) sends).
pub fn launch(tasks: Vec<v1::TaskInfo>) -> v1::Operation {
    op(Op::Launch(v1::Launch { tasks, group: false }))
}

/// Reserves unreserved resources of the offer for `role`, which must be
/// the offer's `allocation_role` (and not `*`: the master refuses it).
pub fn reserve(role: &Role, resources: &Resources) -> v1::Operation {
    op(Op::Reserve(v1::Reserve {
        resources: ReservedResources::for_role(role, resources.clone()).to_proto(),
    }))
}

/// Gives back resources of the offer reserved for `role`.
pub fn unreserve(role: &Role, resources: &Resources) -> v1::Operation {
    op(Op::Unreserve(v1::Unreserve {
        resources: ReservedResources::for_role(role, resources.clone()).to_proto(),
    }))
}

/// Makes `disk_mib` of the disk the offer holds reserved for its role
/// into the persistent volume `id` (unique on the agent; the characters
/// of a task id). It is usable from a later offer that lists it, not in
/// the same Accept.
pub fn create_volume(id: impl Into<String>, disk_mib: u64) -> v1::Operation {
    op(Op::Create(v1::Create {
        volumes: vec![v1::Volume {
            id: id.into(),
            disk_mib: disk_mib as f64,
            ..Default::default()
        }],
    }))
}

/// Removes volumes listed in the offer, and their data; their disk stays
/// reserved (give it back with [`unreserve`]).
pub fn destroy_volumes(ids: impl IntoIterator<Item = impl Into<String>>) -> v1::Operation {
    op(Op::Destroy(v1::Destroy {
        volume_ids: ids.into_iter().map(Into::into).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_name_the_role_on_every_resource() {
        let role = Role::parse("svc").expect("role");
        let r = Resources::parse("cpus:0.5;mem:64;disk:128").expect("res");
        for (o, unres) in [(reserve(&role, &r), false), (unreserve(&role, &r), true)] {
            let list = match o.operation {
                Some(Op::Reserve(v1::Reserve { resources })) if !unres => resources,
                Some(Op::Unreserve(v1::Unreserve { resources })) if unres => resources,
                other => panic!("wrong operation {other:?}"),
            };
            assert_eq!(list.len(), 3);
            assert!(list.iter().all(|x| x.role == "svc"), "{list:?}");
            let back = ReservedResources::from_proto(&list).expect("valid");
            assert_eq!(back.reserved[&role], r);
        }
    }

    #[test]
    fn volumes_are_created_and_destroyed_by_id() {
        let Some(Op::Create(c)) = create_volume("db-0", 64).operation else {
            panic!("not a create")
        };
        assert_eq!((c.volumes[0].id.as_str(), c.volumes[0].disk_mib), ("db-0", 64.0));
        assert!(
            c.volumes[0].agent_id.is_empty() && c.volumes[0].role.is_empty(),
            "set by the master"
        );
        let Some(Op::Destroy(d)) = destroy_volumes(["a", "b"]).operation else {
            panic!("not a destroy")
        };
        assert_eq!(d.volume_ids, ["a", "b"]);
        let Some(Op::Launch(l)) = launch(vec![v1::TaskInfo::default()]).operation else {
            panic!("not a launch")
        };
        assert_eq!(l.tasks.len(), 1);
    }
}
