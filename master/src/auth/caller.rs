//! Who made a request, as the authentication layer established it. Every
//! request carries one [`Caller`] (an extension set once at the edge, see
//! [`super::authn`]); handlers and the core ask it whether an action is
//! allowed instead of looking at certificates or headers themselves.

use mezzo_proto::security::{Kind, Principal};

use super::acl::{Acl, Action, Denied, authorize};

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The cluster runs `--insecure`: nobody is authenticated, everything
    /// is allowed.
    Insecure,
    /// No credential (only `/health`, the CA, joining and, with
    /// `--anonymous-read`, reads get this far).
    Anonymous,
    /// A verified certificate or token: whom it names and its id (the
    /// certificate's serial or the token's nonce, for revocation).
    Authenticated { principal: Principal, credential: String },
}

/// Why a caller may not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    #[error("this needs a credential: a client certificate of the cluster's CA or a bearer token")]
    Unauthenticated,
    #[error("{0}")]
    Denied(#[from] Denied),
    #[error("only {want} principals may do this, not {who}")]
    WrongKind { want: Kind, who: String },
}

impl Caller {
    /// An authenticated caller.
    pub fn principal(principal: Principal, credential: impl Into<String>) -> Caller {
        Caller::Authenticated {
            principal,
            credential: credential.into(),
        }
    }

    pub fn as_principal(&self) -> Option<&Principal> {
        match self {
            Caller::Authenticated { principal, .. } => Some(principal),
            _ => None,
        }
    }

    /// The id of the credential used, for revocation.
    pub fn credential(&self) -> Option<&str> {
        match self {
            Caller::Authenticated { credential, .. } => Some(credential),
            _ => None,
        }
    }

    /// The owner to record for what this caller creates (a framework):
    /// its principal, or empty on an insecure cluster.
    pub fn owner(&self) -> String {
        self.as_principal().map(ToString::to_string).unwrap_or_default()
    }

    /// Whether this caller may do `action` to `object`.
    pub fn may(&self, acl: &Acl, action: Action, object: &str) -> Result<(), AuthzError> {
        match self {
            Caller::Insecure => Ok(()),
            Caller::Anonymous => Err(AuthzError::Unauthenticated),
            Caller::Authenticated { principal, .. } => Ok(authorize(acl, principal, action, object)?),
        }
    }

    /// Whether this caller may read the cluster (`anonymous` is the
    /// master's `--anonymous-read`).
    pub fn may_read(&self, acl: &Acl, anonymous: bool) -> Result<(), AuthzError> {
        match self {
            Caller::Anonymous if anonymous => Ok(()),
            _ => self.may(acl, Action::Read, "cluster"),
        }
    }

    /// Whether this caller acts on its own behalf on something `owner`
    /// created (frameworks), or may do `action` to it by a rule.
    pub fn may_touch(&self, acl: &Acl, action: Action, owner: &str) -> Result<(), AuthzError> {
        match self {
            // A framework registered on an insecure cluster has no owner:
            // any authenticated caller may act on it only by a rule.
            Caller::Authenticated { principal, .. } if !owner.is_empty() && principal.to_string() == owner => Ok(()),
            _ => self.may(acl, action, if owner.is_empty() { "*" } else { owner }),
        }
    }

    /// The principal, which must be of `kind` (agents on the agent API,
    /// masters on the Raft transport); `None` on an insecure cluster.
    pub fn expect_kind(&self, kind: Kind) -> Result<Option<&Principal>, AuthzError> {
        match self {
            Caller::Insecure => Ok(None),
            Caller::Anonymous => Err(AuthzError::Unauthenticated),
            Caller::Authenticated { principal, .. } if principal.kind() == kind => Ok(Some(principal)),
            Caller::Authenticated { principal, .. } => Err(AuthzError::WrongKind {
                want: kind,
                who: principal.to_string(),
            }),
        }
    }

    /// The caller a tonic request carries (the layer always sets one;
    /// a request that somehow lacks it is anonymous).
    pub fn of<T>(req: &tonic::Request<T>) -> Caller {
        req.extensions().get::<Caller>().cloned().unwrap_or(Caller::Anonymous)
    }
}

impl AuthzError {
    /// As a gRPC status.
    pub fn status(&self) -> tonic::Status {
        match self {
            AuthzError::Unauthenticated => tonic::Status::unauthenticated(self.to_string()),
            _ => tonic::Status::permission_denied(self.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(p: &str) -> Caller {
        Caller::principal(p.parse().expect("principal"), "00")
    }

    #[test]
    fn owners_insecure_and_anonymous_callers() {
        let acl = Acl::default();
        assert!(caller("user:ci").may_touch(&acl, Action::KillTask, "user:ci").is_ok());
        assert!(
            caller("user:ci")
                .may_touch(&acl, Action::KillTask, "user:other")
                .is_err()
        );
        assert!(caller("user:ci").may_touch(&acl, Action::KillTask, "").is_err());
        assert!(caller("user:admin").may_touch(&acl, Action::KillTask, "").is_ok());
        assert!(Caller::Insecure.may(&acl, Action::ManageAcls, "acl").is_ok());
        assert_eq!(
            Caller::Anonymous.may(&acl, Action::Read, "cluster"),
            Err(AuthzError::Unauthenticated)
        );
        assert!(caller("agent:n1").expect_kind(Kind::Agent).is_ok());
        assert!(matches!(
            caller("user:n1").expect_kind(Kind::Agent),
            Err(AuthzError::WrongKind { .. })
        ));
        assert_eq!(Caller::Insecure.expect_kind(Kind::Master), Ok(None));
    }
}
