//! Frameworks' durable key-value namespaces, kept in the [`Registry`].
//!
//! A framework stores its own state here instead of in an external
//! database: the namespace is replicated by Raft with the rest of the
//! registry, so it survives the framework's restart and any master
//! failover, and it is removed when the framework is torn down. Writes are
//! [`RegistryOp::KvPut`] and [`RegistryOp::KvDelete`]; the caller is
//! answered only once the op is committed and applied.
//!
//! Limits keep the registry (and every snapshot) small: see
//! [`MAX_KEY_BYTES`], [`MAX_VALUE_BYTES`] and [`MAX_NAMESPACE_BYTES`]. The
//! namespace limit is checked when the op is applied, so two racing writes
//! can never exceed it together.
//!
//! [`Registry`]: crate::registry::Registry
//! [`RegistryOp::KvPut`]: crate::registry::RegistryOp::KvPut
//! [`RegistryOp::KvDelete`]: crate::registry::RegistryOp::KvDelete

use std::collections::BTreeMap;

use mezzo_proto::ids::FrameworkId;
use serde::{Deserialize, Serialize};

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 256 * 1024;
/// Largest namespace (sum of key and value lengths) per framework.
pub const MAX_NAMESPACE_BYTES: u64 = 4 * 1024 * 1024;

/// One stored value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    /// Base64 in the registry's JSON, so snapshots stay compact.
    #[serde(with = "base64_bytes")]
    pub value: Vec<u8>,
    /// The registry's `applied` count when the value was written: it only
    /// grows, even across a delete and re-create, so compare-and-set is
    /// safe from ABA.
    pub version: u64,
}

/// One framework's keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub entries: BTreeMap<String, KvEntry>,
    /// Sum of key and value lengths, checked against [`MAX_NAMESPACE_BYTES`].
    pub bytes: u64,
}

/// A write as it travels through the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvWrite {
    pub framework: FrameworkId,
    pub key: String,
    /// `None` deletes the key.
    #[serde(with = "base64_opt")]
    pub value: Option<Vec<u8>>,
    /// Compare-and-set: the version the key must have (0: absent).
    pub expected_version: Option<u64>,
    /// Matches the committed op with the call waiting for it on the leader
    /// that proposed it; meaningless elsewhere.
    pub request: u64,
}

/// The result of a committed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvDone {
    Put { version: u64 },
    Deleted { existed: bool },
}

/// Why a write was refused, decided deterministically at apply time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("unknown framework {0}")]
    UnknownFramework(String),
    #[error("key {key:?}: expected version {expected}, found {}", if *.found == 0 { "no key".to_owned() } else { format!("version {}", .found) })]
    Conflict { key: String, expected: u64, found: u64 },
    #[error(
        "framework {framework}: writing key {key:?} would grow its key-value namespace to {would} bytes; the limit is {MAX_NAMESPACE_BYTES}"
    )]
    NamespaceFull { framework: String, key: String, would: u64 },
}

/// A framework's read or write, after API validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvCall {
    Get {
        key: String,
    },
    List {
        prefix: String,
    },
    Put {
        key: String,
        value: Vec<u8>,
        expected_version: Option<u64>,
    },
    Delete {
        key: String,
        expected_version: Option<u64>,
    },
}

/// The answer to a [`KvCall`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvAnswer {
    Entry(Option<KvEntry>),
    Entries(Vec<(String, KvEntry)>),
    Done(KvDone),
}

fn entry_bytes(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

/// Decides a write against the namespace as it is now, without changing
/// it. The leader calls this to refuse early; [`apply`] calls it again on
/// the committed op, which is what counts.
pub fn check(ns: Option<&Namespace>, w: &KvWrite) -> Result<(), KvError> {
    let current = ns.and_then(|ns| ns.entries.get(&w.key));
    if let Some(expected) = w.expected_version {
        let found = current.map_or(0, |e| e.version);
        if found != expected {
            return Err(KvError::Conflict {
                key: w.key.clone(),
                expected,
                found,
            });
        }
    }
    if let Some(value) = &w.value {
        let used = ns.map_or(0, |ns| ns.bytes);
        let freed = current.map_or(0, |e| entry_bytes(&w.key, &e.value));
        // Saturating: a snapshot's count may not match its entries.
        let would = used.saturating_sub(freed).saturating_add(entry_bytes(&w.key, value));
        if would > MAX_NAMESPACE_BYTES {
            return Err(KvError::NamespaceFull {
                framework: w.framework.to_string(),
                key: w.key.clone(),
                would,
            });
        }
    }
    Ok(())
}

/// Applies a committed write at registry index `version`. Deterministic:
/// every replica reaches the same namespaces and the same answer.
pub fn apply(
    spaces: &mut BTreeMap<FrameworkId, Namespace>,
    registered: bool,
    w: &KvWrite,
    version: u64,
) -> Result<KvDone, KvError> {
    if !registered {
        return Err(KvError::UnknownFramework(w.framework.to_string()));
    }
    check(spaces.get(&w.framework), w)?;
    let ns = spaces.entry(w.framework.clone()).or_default();
    let old = ns.entries.remove(&w.key);
    if let Some(old) = &old {
        ns.bytes = ns.bytes.saturating_sub(entry_bytes(&w.key, &old.value));
    }
    let done = match &w.value {
        Some(value) => {
            ns.bytes = ns.bytes.saturating_add(entry_bytes(&w.key, value));
            ns.entries.insert(
                w.key.clone(),
                KvEntry {
                    value: value.clone(),
                    version,
                },
            );
            KvDone::Put { version }
        }
        None => KvDone::Deleted { existed: old.is_some() },
    };
    if ns.entries.is_empty() {
        spaces.remove(&w.framework);
    }
    Ok(done)
}

/// Reads one key.
pub fn get(ns: Option<&Namespace>, key: &str) -> Option<KvEntry> {
    ns.and_then(|ns| ns.entries.get(key)).cloned()
}

/// Every key that starts with `prefix`, in key order.
pub fn list(ns: Option<&Namespace>, prefix: &str) -> Vec<(String, KvEntry)> {
    let Some(ns) = ns else { return Vec::new() };
    ns.entries
        .range(prefix.to_owned()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, e)| (k.clone(), e.clone()))
        .collect()
}

mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

mod base64_opt {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&STANDARD.encode(v)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| STANDARD.decode(t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn fid() -> FrameworkId {
        FrameworkId::parse("fw-1").expect("id")
    }

    fn put(key: &str, value: &[u8], expected: Option<u64>) -> KvWrite {
        KvWrite {
            framework: fid(),
            key: key.into(),
            value: Some(value.to_vec()),
            expected_version: expected,
            request: 0,
        }
    }

    fn del(key: &str, expected: Option<u64>) -> KvWrite {
        KvWrite {
            value: None,
            ..put(key, b"", expected)
        }
    }

    #[test]
    fn put_get_list_delete() {
        let mut s = BTreeMap::new();
        assert_eq!(
            apply(&mut s, true, &put("a/1", b"x", None), 7),
            Ok(KvDone::Put { version: 7 })
        );
        apply(&mut s, true, &put("a/2", b"yy", None), 8).expect("put");
        apply(&mut s, true, &put("b", b"z", None), 9).expect("put");
        let ns = s.get(&fid());
        assert_eq!(get(ns, "a/1").map(|e| e.value), Some(b"x".to_vec()));
        let keys: Vec<_> = list(ns, "a/").into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a/1", "a/2"]);
        assert_eq!(list(ns, "").len(), 3);
        assert_eq!(ns.map(|n| n.bytes), Some(3 + 1 + 3 + 2 + 1 + 1));
        assert_eq!(
            apply(&mut s, true, &del("a/1", None), 10),
            Ok(KvDone::Deleted { existed: true })
        );
        assert_eq!(
            apply(&mut s, true, &del("a/1", None), 11),
            Ok(KvDone::Deleted { existed: false })
        );
        apply(&mut s, true, &del("a/2", None), 12).expect("del");
        apply(&mut s, true, &del("b", None), 13).expect("del");
        assert!(s.is_empty(), "an empty namespace is dropped");
    }

    #[test]
    fn compare_and_set_by_version() {
        let mut s = BTreeMap::new();
        assert_eq!(
            apply(&mut s, true, &put("k", b"1", Some(0)), 5),
            Ok(KvDone::Put { version: 5 })
        );
        let err = apply(&mut s, true, &put("k", b"2", Some(0)), 6).expect_err("exists");
        assert_eq!(
            err,
            KvError::Conflict {
                key: "k".into(),
                expected: 0,
                found: 5
            }
        );
        assert!(err.to_string().contains("found version 5"), "{err}");
        apply(&mut s, true, &put("k", b"2", Some(5)), 7).expect("cas");
        let err = apply(&mut s, true, &del("k", Some(5)), 8).expect_err("stale");
        assert!(matches!(err, KvError::Conflict { found: 7, .. }));
        apply(&mut s, true, &del("k", Some(7)), 9).expect("cas delete");
        let err = apply(&mut s, true, &del("k", Some(7)), 10).expect_err("gone");
        assert!(err.to_string().contains("found no key"), "{err}");
    }

    #[test]
    fn namespace_limit_counts_replacements_once() {
        let mut s = BTreeMap::new();
        let big = vec![0u8; MAX_VALUE_BYTES];
        let mut n = 0;
        loop {
            match apply(&mut s, true, &put(&format!("k{n}"), &big, None), n + 1) {
                Ok(_) => n += 1,
                Err(e) => {
                    assert!(matches!(e, KvError::NamespaceFull { .. }), "{e}");
                    assert!(e.to_string().contains("limit is 4194304"), "{e}");
                    break;
                }
            }
        }
        assert_eq!(n, 15, "15 values of 256 KiB plus keys fit in 4 MiB");
        // Overwriting an existing key with the same size still fits.
        apply(&mut s, true, &put("k0", &big, None), 100).expect("replace");
        assert!(s[&fid()].bytes <= MAX_NAMESPACE_BYTES);
    }

    #[test]
    fn unknown_framework_is_refused_at_apply() {
        let mut s = BTreeMap::new();
        let err = apply(&mut s, false, &put("k", b"v", None), 1).expect_err("unknown");
        assert_eq!(err, KvError::UnknownFramework("fw-1".into()));
        assert!(s.is_empty());
    }

    #[test]
    fn writes_round_trip_through_json_as_base64() {
        let w = put("k", &[0, 255, 7], Some(3));
        let text = serde_json::to_string(&w).expect("ser");
        assert!(text.contains("\"AP8H\""), "{text}");
        assert_eq!(serde_json::from_str::<KvWrite>(&text).expect("de"), w);
        let d = del("k", None);
        let text = serde_json::to_string(&d).expect("ser");
        assert_eq!(serde_json::from_str::<KvWrite>(&text).expect("de"), d);
    }

    proptest! {
        /// The cached byte count always equals the sum over the entries,
        /// and never exceeds the limit, whatever the write sequence.
        #[test]
        fn byte_count_is_exact(ops in proptest::collection::vec((0u8..6, proptest::option::of(0usize..400_000)), 1..60)) {
            let mut s = BTreeMap::new();
            for (i, (k, size)) in ops.iter().enumerate() {
                let key = format!("key-{k}");
                let w = match size {
                    Some(n) => put(&key, &vec![1u8; (*n).min(MAX_VALUE_BYTES)], None),
                    None => del(&key, None),
                };
                let _ = apply(&mut s, true, &w, i as u64 + 1);
                let ns = s.get(&fid());
                let sum: u64 = ns.map_or(0, |ns| ns.entries.iter().map(|(k, e)| entry_bytes(k, &e.value)).sum());
                prop_assert_eq!(ns.map_or(0, |ns| ns.bytes), sum);
                prop_assert!(sum <= MAX_NAMESPACE_BYTES);
            }
        }
    }
}
