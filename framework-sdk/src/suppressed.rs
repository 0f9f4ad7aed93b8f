//! The roles the framework last asked to be suppressed in, named again in
//! every subscription (Mesos' `Subscribe.suppressed_roles`): a framework
//! that re-subscribes, after a master failover or its own, is then offered
//! nothing it would only decline or have rescinded by its next suppress.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// Kept by the call path ([`crate::calls::Calls`]), which the handles and the driver share.
#[derive(Clone, Debug)]
pub(crate) struct Suppressed {
    /// The framework's roles (`*` when it names none, as the master reads it).
    roles: Arc<Vec<String>>,
    now: Arc<Mutex<BTreeSet<String>>>,
}

impl Suppressed {
    pub(crate) fn new(framework_roles: &[String]) -> Suppressed {
        let roles = if framework_roles.is_empty() {
            vec!["*".to_owned()]
        } else {
            framework_roles.to_vec()
        };
        Suppressed {
            roles: Arc::new(roles),
            now: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A suppress in `roles` (every role if none), as the master applies it.
    /// Roles that are not the framework's are left out: the master refuses
    /// such a call, and would refuse a subscription naming them.
    pub(crate) fn suppress(&self, roles: &[String]) {
        let wanted = if roles.is_empty() { &self.roles[..] } else { roles };
        let mut now = self.lock();
        now.extend(wanted.iter().filter(|r| self.roles.contains(r)).cloned());
    }

    /// A revive in `roles` (every role if none).
    pub(crate) fn revive(&self, roles: &[String]) {
        let mut now = self.lock();
        if roles.is_empty() {
            now.clear();
        } else {
            now.retain(|r| !roles.contains(r));
        }
    }

    /// What the next subscription names.
    pub(crate) fn roles(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|r| (*r).to_owned()).collect()
    }

    #[test]
    fn follows_suppress_and_revive_as_the_master_does() {
        let sup = Suppressed::new(&s(&["a", "b"]));
        assert!(sup.roles().is_empty());
        sup.suppress(&[]);
        assert_eq!(sup.roles(), s(&["a", "b"]));
        sup.revive(&s(&["a"]));
        assert_eq!(sup.roles(), s(&["b"]));
        sup.suppress(&s(&["a", "other"]));
        assert_eq!(sup.roles(), s(&["a", "b"]), "a role not the framework's is left out");
        sup.revive(&[]);
        assert!(sup.roles().is_empty());

        let star = Suppressed::new(&[]);
        star.suppress(&[]);
        assert_eq!(star.roles(), s(&["*"]));
    }
}
