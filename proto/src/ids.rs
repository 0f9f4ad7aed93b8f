//! Validated identifiers. A task id ends up in a sandbox path, so every id
//! is checked once at the edge: no separators, no dot-names, bounded length.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 200;

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} id is empty")]
    Empty { kind: &'static str },
    #[error("{kind} id is {len} bytes long (at most {MAX_ID_LEN})")]
    TooLong { kind: &'static str, len: usize },
    #[error("{kind} id {id:?} may hold only letters, digits and '-', '_', '.', ':', '@' and may not be '.' or '..'")]
    BadChars { kind: &'static str, id: String },
}

fn check(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { kind, len: s.len() });
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@');
    if s == "." || s == ".." || !s.chars().all(ok_char) {
        return Err(IdError::BadChars {
            kind,
            id: s.chars().take(64).collect(),
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        /// Its JSON form is a string, checked like [`Self::parse`] when read.
        /// Shared, not copied, when cloned: the master keeps a task's ids in
        /// several tables and indexes.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            /// Checks `s` and wraps it.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check($kind, s)?;
                Ok(Self(Arc::from(s)))
            }

            /// A fresh random id.
            pub fn generate() -> Self {
                Self(Arc::from(uuid::Uuid::new_v4().to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                check($kind, &s)?;
                Ok(Self(Arc::from(s)))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A framework, assigned by the master when it first subscribes.
    FrameworkId,
    "framework"
);
id_type!(
    /// An agent, assigned by the master when it first registers.
    AgentId,
    "agent"
);
id_type!(
    /// An offer; each is usable once.
    OfferId,
    "offer"
);
id_type!(
    /// A task, chosen by its framework; unique within that framework.
    TaskId,
    "task"
);
id_type!(
    /// A custom executor, chosen by its framework; unique within that
    /// framework on an agent.
    ExecutorId,
    "executor"
);
id_type!(
    /// A persistent volume, chosen by the framework that creates it;
    /// unique on its agent (it names the volume's directory there).
    VolumeId,
    "volume"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_path_tricks_and_empties() {
        for bad in ["", ".", "..", "a/b", "a b", "../x", "x\0", "é"] {
            assert!(TaskId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(TaskId::parse(&"x".repeat(MAX_ID_LEN + 1)).is_err());
        for good in ["t-1", "job.3", "a:b@c_d", "..a"] {
            assert_eq!(TaskId::parse(good).map(|t| t.to_string()).as_deref(), Ok(good));
        }
    }

    /// Found by fuzzing (docs/fuzzing.md): the JSON form was read without
    /// the checks, so a registry op or snapshot could hold `..` or `a/b`
    /// as an agent or framework id.
    #[test]
    fn json_ids_are_checked_like_parsed_ones() {
        for bad in ["\"\"", "\"..\"", "\"a/b\"", "\"x\\u0000\""] {
            assert!(serde_json::from_str::<AgentId>(bad).is_err(), "{bad} accepted");
        }
        let id: FrameworkId = serde_json::from_str("\"f-1\"").expect("valid");
        assert_eq!(serde_json::to_string(&id).ok().as_deref(), Some("\"f-1\""));
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = AgentId::generate();
        assert!(AgentId::parse(a.as_str()).is_ok());
        assert_ne!(a, AgentId::generate());
    }
}
