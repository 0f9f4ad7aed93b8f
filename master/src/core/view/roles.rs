//! The roles read model: each role's weight, quota, allocation, offers
//! and dominant share, with the weights, quotas and dynamic reservations
//! as the registry holds them. The one answer to "how is the cluster
//! shared?", at `/api/v1/roles`, `/roles` and in `/state`.

use std::collections::BTreeMap;

use mezzo_proto::ids::AgentId;
use mezzo_proto::reservation::Role;
use serde::{Deserialize, Serialize};

use crate::allocator::{Quota, RoleView};
use crate::core::Master;

/// Roles, weights, quotas and reservations.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AllocationView {
    /// Each role's weight, quota, allocation, offers and dominant share.
    pub roles: Vec<RoleView>,
    pub weights: BTreeMap<Role, f64>,
    pub quotas: BTreeMap<Role, Quota>,
    /// Dynamic reservations by agent (static ones are in each agent's
    /// `resources_by_role`).
    pub reservations: BTreeMap<AgentId, String>,
}

pub fn roles(m: &Master) -> AllocationView {
    AllocationView {
        roles: m.alloc.roles_view(),
        weights: m.registry.weights.clone(),
        quotas: m.registry.quotas.clone(),
        reservations: m.registry.reservations.clone(),
    }
}
