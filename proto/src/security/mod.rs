//! Trust: who a caller is and how that is proven. Every Mezzo connection
//! is mutually authenticated TLS under the cluster's own CA ([`tls`]); a
//! certificate names its holder's [`Principal`] ([`principal`]); clients
//! without a certificate send a bearer token, and new machines join with a
//! join token ([`token`]); clients find all of it in one file
//! ([`client_config`]). Certificates are issued by the masters; the ACLs
//! that decide what a principal may do live in the master's registry.

pub mod client_config;
pub mod csr;
#[cfg(test)]
mod fuzz_tests;
pub mod grpc;
pub mod https;
pub mod join;
pub mod principal;
pub mod secret;
pub mod serve;
pub mod tls;
pub mod token;
pub mod ws;

pub use client_config::{ClientConfig, Transport};
pub use principal::{CertInfo, Kind, Principal};
pub use tls::{Credentials, Identity};
