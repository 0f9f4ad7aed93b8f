//! Authentication and authorization at the master's edge. Identity is
//! established once per request, from the TLS peer certificate or a
//! bearer token, and carried with it as a [`Principal`]; what it may do is
//! decided by [`acl::authorize`] over the registry's rules.

pub mod acl;
pub mod authn;
pub mod caller;
pub mod seal;
pub mod state;
pub mod view;

pub use acl::{Acl, Action, Denied, authorize};
pub use caller::{AuthzError, Caller};
pub use mezzo_proto::security::Principal;
pub use view::AuthView;
