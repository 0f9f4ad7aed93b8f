//! What the authentication and authorization layers read on every request:
//! the ACL, the revoked credential ids and each framework's owner. The
//! Raft node publishes a new view through a `watch` whenever an applied op
//! changes the ACL or the revocations, on every master (followers
//! authenticate too); the owners are kept up to date in place.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

use mezzo_proto::ids::FrameworkId;

use crate::auth::acl::Acl;
use crate::registry::{Registry, RegistryOp};

/// The security facts of one applied registry.
#[derive(Debug, Clone, Default)]
pub struct AuthView {
    pub acl: Acl,
    pub revoked: HashSet<String>,
    /// Framework id -> the principal that registered it (empty on an
    /// insecure cluster). Shared by every view.
    pub owners: Owners,
}

/// Each framework's owner, updated in place with one insert or removal
/// per op: copying the whole map into a fresh view on every registration
/// made each registry write cost O(registered frameworks).
#[derive(Debug, Clone, Default)]
pub struct Owners(Arc<RwLock<HashMap<FrameworkId, String>>>);

impl Owners {
    /// The owners of `r`'s frameworks, replacing what was there.
    pub fn reset(&self, r: &Registry) {
        let owners = r
            .frameworks
            .values()
            .map(|f| (f.id.clone(), f.principal.clone()))
            .collect();
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = owners;
    }

    /// Follows an applied op (only registrations and removals take the lock).
    pub fn apply(&self, op: &RegistryOp) {
        let owners = || self.0.write().unwrap_or_else(PoisonError::into_inner);
        match op {
            RegistryOp::RegisterFramework(f) => {
                owners().insert(f.id.clone(), f.principal.clone());
            }
            RegistryOp::RemoveFramework { id, .. } => {
                owners().remove(id);
            }
            _ => {}
        }
    }

    /// The owner of a framework, if it is registered.
    pub fn get(&self, framework: &FrameworkId) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(framework)
            .cloned()
    }
}

impl AuthView {
    /// The ACL and revocations of `r`, with `owners` (kept by the caller).
    pub fn of(r: &Registry, owners: &Owners) -> Arc<AuthView> {
        Arc::new(AuthView {
            acl: r.security.acl.clone(),
            revoked: r.security.revoked.keys().cloned().collect(),
            owners: owners.clone(),
        })
    }

    /// Whether applying `op` changes the ACL or the revocations.
    pub fn changed_by(op: &RegistryOp) -> bool {
        matches!(op, RegistryOp::Security { .. })
    }

    /// The owner of a framework, if it is registered.
    pub fn owner(&self, framework: &FrameworkId) -> Option<String> {
        self.owners.get(framework)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::registry::FrameworkRecord;

    #[test]
    fn owners_follow_registrations_and_removals_in_every_view() {
        let owners = Owners::default();
        let mut r = Registry::default();
        let view = AuthView::of(&r, &owners);
        let rec = FrameworkRecord {
            id: FrameworkId::parse("f1").unwrap(),
            name: "f".into(),
            user: String::new(),
            principal: "user:alice".into(),
            roles: vec!["*".into()],
            failover_timeout_secs: 60.0,
            hostname: String::new(),
            registered_at: 0.0,
        };
        let op = RegistryOp::RegisterFramework(rec.clone());
        r.apply(&op);
        owners.apply(&op);
        assert_eq!(view.owner(&rec.id).as_deref(), Some("user:alice"));
        let op = RegistryOp::remove_framework(rec.id.clone());
        r.apply(&op);
        owners.apply(&op);
        assert_eq!(view.owner(&rec.id), None);
        r.apply(&RegistryOp::RegisterFramework(rec.clone()));
        owners.reset(&r);
        assert_eq!(AuthView::of(&r, &owners).owner(&rec.id).as_deref(), Some("user:alice"));
    }
}
