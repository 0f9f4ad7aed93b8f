//! Write Mezzo frameworks in Rust.
//!
//! A framework is a scheduler: it subscribes to the leading master, receives
//! resource **offers**, **accepts** them to launch tasks, and follows each
//! task through its **status updates**. This crate owns the plumbing —
//! finding the leader, reconnecting with backoff, resuming the framework by
//! its id, acknowledging updates and reconciling after a reconnection — so
//! the framework is a loop over [`Event`]s.
//!
//! # Tutorial: hello, cluster
//!
//! The framework below launches three `echo hello` tasks, waits until all
//! have finished, then removes itself from the cluster.
//!
//! ```no_run
//! use mezzo_sdk::{task_state, Event, Resources, Scheduler, SchedulerConfig, TaskBuilder, TaskState};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // 1. Say where the masters are and who we are, then start the driver.
//!     //    It connects in the background; events tell us what happens.
//!     let config = SchedulerConfig::new(["127.0.0.1:5050"], "hello");
//!     let (scheduler, mut events) = Scheduler::start(config);
//!
//!     let need = Resources::parse("cpus:0.1;mem:32")?;
//!     let (total, mut launched, mut finished) = (3, 0, 0);
//!
//!     while let Some(event) = events.next().await {
//!         match event {
//!             Event::Subscribed { framework_id, .. } => println!("registered as {framework_id}"),
//!             // 2. Pack as many tasks as fit into each offer; decline the rest.
//!             Event::Offers(offers) => {
//!                 for offer in offers {
//!                     let mut left = Resources::from_proto(&offer.resources)?;
//!                     let mut tasks = Vec::new();
//!                     while launched < total && left.contains(&need) {
//!                         left = left.checked_sub(&need).expect("contains() said it fits");
//!                         let task = TaskBuilder::new(format!("hello-{launched}")).resources(&need);
//!                         tasks.push(task.shell("echo hello").build());
//!                         launched += 1;
//!                     }
//!                     let result = if tasks.is_empty() {
//!                         scheduler.decline(vec![offer.offer_id], Some(30.0)).await
//!                     } else {
//!                         scheduler.accept(vec![offer.offer_id], tasks, None).await
//!                     };
//!                     // A refused call (say, a rescinded offer) is not fatal.
//!                     if let Err(e) = result {
//!                         eprintln!("offer call failed: {e}");
//!                     }
//!                 }
//!             }
//!             // 3. Follow the tasks. Updates are acknowledged for us.
//!             Event::Update(status) => match task_state(&status) {
//!                 Some(TaskState::Finished) => {
//!                     finished += 1;
//!                     println!("{} finished ({finished}/{total})", status.task_id);
//!                     if finished == total {
//!                         break;
//!                     }
//!                 }
//!                 Some(state) if state.is_terminal() => {
//!                     return Err(format!("{} ended {}: {}", status.task_id, state.name(), status.message).into());
//!                 }
//!                 _ => {}
//!             },
//!             // The driver reconnects by itself; calls fail fast meanwhile.
//!             Event::Disconnected { reason } => eprintln!("reconnecting: {reason}"),
//!             Event::Error { message } => return Err(message.into()),
//!             _ => {}
//!         }
//!     }
//!
//!     // 4. Done: remove the framework (this kills anything still running).
//!     scheduler.teardown().await?;
//!     scheduler.stop().await;
//!     Ok(())
//! }
//! ```
//!
//! # Tutorial: twenty tasks, a placement limit and a retry
//!
//! A [`WorkQueue`] keeps the bookkeeping: task ids per attempt, retries,
//! drops relaunched for free, the placement record, suppress and revive.
//! Twenty tasks, at most four per agent; task 7 fails its first attempt
//! and is retried once; every item reports one outcome; then teardown.
//!
//! The whole framework (`examples/twenty.rs`; `tests/tests/queue.rs`
//! runs it against a real cluster):
//!
#![doc = concat!("```no_run\n", include_str!("../examples/twenty.rs"), "```")]
//!
//! # What the driver does for you
//!
//! - **Leader following.** The masters in [`SchedulerConfig::masters`] are
//!   tried in turn; a master that is not the leader names it (gRPC
//!   `UNAVAILABLE` with `mezzo-leader` metadata) and the driver goes there.
//! - **Reconnection.** When the stream ends, fails, or stays silent for three
//!   heartbeat intervals, you get [`Event::Disconnected`]; the driver retries
//!   with capped, jittered exponential backoff and re-subscribes with the
//!   framework id, so the framework and its tasks are resumed. Calls made
//!   meanwhile return [`SdkError::NotConnected`] at once.
//! - **Reconciliation.** After every re-subscription the driver asks for the
//!   state of all tasks; the answers arrive as [`Event::Update`]s.
//! - **Acknowledgements.** With [`SchedulerConfig::auto_acknowledge`] (the
//!   default) each update that needs it is acknowledged right after it has
//!   been put into your [`Events`] channel.
//! - **Failover.** Store [`Scheduler::framework_id`] and pass it as
//!   [`SchedulerConfig::framework_id`] after a restart to take over your
//!   running tasks (within the framework's failover timeout).
//!
//! # Helpers
//!
//! - [`offers`]: place work that carries your own payload on offers
//!   ([`offers::plan`]: first fit, best fit or spread across several
//!   offers) and launch it in one call ([`Scheduler::launch`]), with a
//!   record that follows the tasks ([`offers::Placed`]), ports picked from
//!   offered ranges ([`offers::ports`]), and placement constraints (unique
//!   or at most n per agent or per host, attribute equals or like, spread
//!   over an attribute).
//! - [`operations`]: reserve resources for the framework's role and make
//!   persistent volumes of them ([`Scheduler::accept_operations`]); read
//!   an offer's volumes with [`offers::volume`] and mount one with
//!   [`TaskBuilder::volume`] (docs/frameworks.md, "Volumes").
//! - [`Kv`] ([`Scheduler::kv`]): a small durable key-value namespace in the
//!   masters' replicated registry, so a framework needs no external store
//!   to survive its own restart or a master failover.
//! - [`WorkQueue`]: finite work, one [`Outcome`] per item, with retries.
//! - [`controller`]: work that keeps running, as a reconcile loop per key
//!   (desired objects in the [`Kv`], an observed view of their tasks kept
//!   across reconnects and restarts, requeue and backoff), in the manner
//!   of kube-rs's controller runtime. `mezzo service` runs on it.
//! - Manual acknowledgements: set [`SchedulerConfig::auto_acknowledge`] to
//!   false and call [`Scheduler::acknowledge`] once an update is safely
//!   handled (e.g. recorded in the [`Kv`]); the agent resends it until then.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod api_token;
mod calls;
mod config;
pub mod controller;
mod driver;
mod error;
mod event;
pub mod follow;
pub mod kv;
mod master_http;
pub mod offers;
pub mod operations;
pub mod queue;
mod suppressed;
mod task;

pub use config::{DEFAULT_FAILOVER_TIMEOUT, SchedulerConfig};
pub use driver::{Scheduler, TEARDOWN_TRIES};
pub use error::SdkError;
pub use event::{Event, Events};
pub use kv::{Kv, KvEntry};
pub use master_http::{HttpAnswer, MasterHttp, SandboxChunk, SandboxRead, sandbox_read_path};
/// Makes ring the process's TLS crypto provider, which any `reqwest`
/// client of the framework's own needs (idempotent).
pub use mezzo_proto::security::tls::ensure_provider as ensure_tls_provider;
pub use queue::{Change, Ended, Failure, ItemState, Outcome, RetryPolicy, WorkQueue};
pub use task::{HealthCheck, TaskBuilder, check_image_credentials, pending_task, task_state};
/// The gRPC code of a refusal ([`SdkError::Rejected`]), so that matching
/// one needs no dependency on tonic.
pub use tonic::Code;

/// The capped exponential backoff the driver reconnects with, for a
/// framework's own retries.
pub use mezzo_proto::backoff::Backoff;
/// Unix-seconds timestamps, the form status updates carry.
pub use mezzo_proto::clock;
/// The rules a task's health check must meet (master and agent use them).
pub use mezzo_proto::health as health_rules;
/// The image a task may name (`TaskBuilder::image`), checked as the master checks it.
pub use mezzo_proto::image::{ImageRef, ImageRefError};
/// A role (`eng/batch`, or `*`), checked: for reservations
/// ([`operations::reserve`]).
pub use mezzo_proto::reservation::Role;
/// Exact resource arithmetic: `Resources::parse("cpus:0.1;mem:32")`.
pub use mezzo_proto::resources::Resources;
/// Task states with Mesos names and the terminal-state test.
pub use mezzo_proto::state::TaskState;
/// The generated `mezzo.v1` API types (offers, task infos, statuses...).
pub use mezzo_proto::v1;
/// The check of a task's mounts ([`TaskBuilder::volume`]) that masters
/// and agents make, for frameworks that read mounts from job files.
pub use mezzo_proto::volume as mounts;
