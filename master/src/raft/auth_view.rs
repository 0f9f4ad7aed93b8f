//! What the authentication and authorization layers read on every request:
//! the ACL, the revoked credential ids and each framework's owner. The
//! Raft node publishes a new one through a `watch` whenever an applied op
//! changes any of them, on every master (followers authenticate too).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use mezzo_proto::ids::FrameworkId;

use crate::auth::acl::Acl;
use crate::registry::{Registry, RegistryOp};

/// The security facts of one applied registry.
#[derive(Debug, Clone, Default)]
pub struct AuthView {
    pub acl: Acl,
    pub revoked: HashSet<String>,
    /// Framework id -> the principal that registered it (empty on an
    /// insecure cluster).
    pub owners: HashMap<FrameworkId, String>,
}

impl AuthView {
    pub fn of(r: &Registry) -> Arc<AuthView> {
        Arc::new(AuthView {
            acl: r.security.acl.clone(),
            revoked: r.security.revoked.keys().cloned().collect(),
            owners: r
                .frameworks
                .values()
                .map(|f| (f.id.clone(), f.principal.clone()))
                .collect(),
        })
    }

    /// Whether applying `op` can change the view.
    pub fn changed_by(op: &RegistryOp) -> bool {
        matches!(
            op,
            RegistryOp::Security { .. } | RegistryOp::RegisterFramework(_) | RegistryOp::RemoveFramework { .. }
        )
    }

    /// The owner of a framework, if it is registered.
    pub fn owner(&self, framework: &FrameworkId) -> Option<&str> {
        self.owners.get(framework).map(String::as_str)
    }
}
