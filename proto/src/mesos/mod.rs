//! Mesos' v1 HTTP APIs in their JSON form, shared by the master (the
//! scheduler and operator APIs) and the agent (the executor API): the
//! messages ([`types`]), their conversion to and from `mezzo.v1`
//! ([`convert`]) and the framing of their event streams ([`recordio`]).

pub mod convert;
pub mod recordio;
pub mod types;
