//! The image store's tests: hostile archives, layouts, the store. They
//! build every archive and layout in memory or in temp dirs, and run as
//! root (owners, `trusted.*` xattrs, overlay mounts).

#![allow(clippy::unwrap_used)]

pub(crate) mod fixtures;
mod layout;
mod pull;
mod store;
mod unpack;
