//! The Mezzo master.
//!
//! The leader logic is [`core::Master`], a state machine with no I/O; the
//! [`runtime`] owns it in one tokio task and executes its effects; [`api`]
//! turns gRPC calls into validated domain values; [`http`] serves every
//! HTTP route (state, metrics, the operator API, the dashboard), reading
//! the core through [`core::view`]. [`server::start`] wires them up.

#![forbid(unsafe_code)]

pub mod allocator;
pub mod api;
pub mod auth;
pub mod core;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod history;
pub mod http;
pub mod kv;
pub mod mesos;
pub mod pki;
pub mod raft;
pub mod registry;
pub mod runtime;
pub mod server;

pub use server::{MasterConfig, MasterHandle, start};
