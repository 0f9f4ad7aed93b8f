//! The registry's replicated log: raft-rs driven by one owner task.
//!
//! [`node`] owns the `RawNode`, handles each `Ready` in the documented
//! order, applies committed [`RegistryOp`]s to its copy of the registry
//! and tells the master runtime when it starts or stops leading; others
//! reach it through [`handle`], which the node and the transport share.
//! [`storage`] keeps entries, hard state and snapshots in raft-engine with
//! fsync; [`transport`] carries raft messages between masters over gRPC
//! as opaque bytes, batched per peer.
//!
//! [`RegistryOp`]: crate::registry::RegistryOp

pub mod auth_view;
pub mod handle;
pub mod members;
pub mod node;
pub mod storage;
pub mod transport;

pub use auth_view::AuthView;
pub use handle::{RaftEvent, RaftHandle, RaftStatus};
pub use members::{MemberChange, MembershipError};
pub use node::RaftConfig;
