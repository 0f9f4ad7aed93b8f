//! The Mezzo batch framework: jobs of one task or task arrays (N copies,
//! each told its index in `MEZZO_TASK_INDEX`), with retries and backoff, a
//! timeout per task, a cap on parallelism and dependencies between jobs
//! forming a DAG. Built only on the public SDK ([`mezzo_sdk`]).
//!
//! - [`spec`]: the TOML job file and its checks.
//! - [`job`]: one job's tasks as a state machine without I/O.
//! - [`store`]: what is kept in the framework's key-value namespace.
//! - [`engine`]: the owner task driving it all.
//! - [`api`]: the HTTP API (`mezzo batch serve`) and [`client`] for it.
//!
//! Running `mezzo batch serve --masters …` starts the framework with its
//! HTTP API; `mezzo batch submit FILE [--wait]`, `status`, `list`, `cancel`
//! and `logs` talk to that API.

#![forbid(unsafe_code)]

pub mod api;
pub mod client;
pub mod engine;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod job;
pub mod spec;
pub mod store;

pub use engine::{BatchConfig, BatchError, Engine};
