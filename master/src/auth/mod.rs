//! Who may do what: the caller of a request ([`Caller`]), the authorizer
//! over the registry's rules ([`acl::authorize`]), the registry's security
//! state, and sealed secrets. A leaf of the crate: it imports nothing else
//! of it, so the HTTP edge (`http::authn`, which establishes the caller),
//! the registry, the Raft node and the core may all use it.

pub mod acl;
pub mod caller;
pub mod seal;
pub mod state;

pub use acl::{Acl, Action, Denied, authorize};
pub use caller::{AuthzError, Caller};
pub use mezzo_proto::security::Principal;
