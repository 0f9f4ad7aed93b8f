//! The `mezzo.v1` API and the domain types every Mezzo crate shares.
//!
//! Generated protobuf types live in [`v1`] and are meant for the edges of a
//! daemon only: decode, then convert into the validated types of
//! [`resources`] and [`ids`] before any logic sees the value.

#![forbid(unsafe_code)]

pub mod artifact;
pub mod backoff;
pub mod clock;
pub mod codec;
pub mod exec;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
#[cfg(test)]
mod fuzz_tests;
pub mod health;
pub mod ids;
pub mod image;
pub mod mesos;
#[cfg(any(test, feature = "proptest"))]
pub mod mutate;
pub mod reservation;
pub mod resources;
pub mod security;
pub mod state;
pub mod volume;

/// Generated messages and gRPC services of package `mezzo.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("mezzo.v1");

    /// Without the credentials' value: a task's `Debug` may reach a log.
    impl std::fmt::Debug for Image {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Image")
                .field("reference", &self.reference)
                .field("credentials_secret", &self.credentials_secret)
                .field("credentials", &format_args!("<{} bytes>", self.credentials.len()))
                .finish()
        }
    }
}

/// Largest gRPC message any Mezzo daemon accepts (4 MiB). A larger one is
/// refused with `RESOURCE_EXHAUSTED` before it is decoded.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
