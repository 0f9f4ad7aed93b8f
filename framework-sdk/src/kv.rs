//! The framework's durable key-value namespace.
//!
//! Each framework owns a small namespace in the masters' replicated
//! registry: it survives the framework's restart and any master failover,
//! needs no external database, and is deleted when the framework is torn
//! down. A write returns only once it is committed by a majority of the
//! masters, so what a call confirmed is never lost.
//!
//! Limits (the master refuses beyond them, naming the limit): keys of at
//! most [`MAX_KEY_BYTES`], values of at most [`MAX_VALUE_BYTES`], and
//! [`MAX_NAMESPACE_BYTES`] of keys and values in all. Store compact state
//! (a job's progress, not a log).
//!
//! Every value has a version that only grows; pass it back to
//! [`Kv::put_if`] or [`Kv::delete_if`] for a compare-and-set.
//!
//! ```no_run
//! # async fn demo(scheduler: mezzo_sdk::Scheduler) -> Result<(), mezzo_sdk::SdkError> {
//! let kv = scheduler.kv();
//! let version = kv.put("jobs/etl", b"{\"done\":3}".to_vec()).await?;
//! let entry = kv.get("jobs/etl").await?.expect("just written");
//! assert_eq!(entry.version, version);
//! // Only overwrite what we read: a concurrent writer makes this fail with
//! // SdkError::Conflict.
//! kv.put_if("jobs/etl", b"{\"done\":4}".to_vec(), entry.version).await?;
//! for entry in kv.list("jobs/").await? {
//!     println!("{} = {} bytes", entry.key, entry.value.len());
//! }
//! # Ok(()) }
//! ```

use mezzo_proto::v1;

use crate::calls::Calls;
use crate::error::SdkError;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 256 * 1024;
/// Largest namespace (keys plus values) of one framework, in bytes.
pub const MAX_NAMESPACE_BYTES: usize = 4 * 1024 * 1024;

/// One key and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// The key.
    pub key: String,
    /// The value, as stored.
    pub value: Vec<u8>,
    /// Grows with every write of any key; use it for compare-and-set.
    pub version: u64,
}

impl From<v1::KvEntry> for KvEntry {
    fn from(e: v1::KvEntry) -> Self {
        KvEntry {
            key: e.key,
            value: e.value,
            version: e.version,
        }
    }
}

/// Handle on the framework's namespace, from [`Scheduler::kv`](crate::Scheduler::kv).
/// Cheap to clone. Calls need a subscription: while the driver reconnects
/// they fail with [`SdkError::NotConnected`] (retry after
/// [`Event::Subscribed`](crate::Event::Subscribed)).
#[derive(Debug, Clone)]
pub struct Kv {
    calls: Calls,
}

impl Kv {
    pub(crate) fn new(calls: Calls) -> Self {
        Kv { calls }
    }

    /// The value of `key`, or `None` if it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<KvEntry>, SdkError> {
        let key = key.to_owned();
        let reply = self
            .calls
            .ask("kv_get", |mut c, framework_id| async move {
                c.kv_get(v1::KvGetRequest { framework_id, key }).await
            })
            .await?;
        Ok(reply.entry.map(KvEntry::from))
    }

    /// Every key that starts with `prefix` (all keys for `""`), in key order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<KvEntry>, SdkError> {
        let prefix = prefix.to_owned();
        let reply = self
            .calls
            .ask("kv_list", |mut c, framework_id| async move {
                c.kv_list(v1::KvListRequest { framework_id, prefix }).await
            })
            .await?;
        Ok(reply.entries.into_iter().map(KvEntry::from).collect())
    }

    /// Writes `key`, returning the new version once it is committed.
    pub async fn put(&self, key: &str, value: Vec<u8>) -> Result<u64, SdkError> {
        self.write_put(key, value, None).await
    }

    /// Writes `key` only if its version is still `expected_version` (0:
    /// only if it does not exist); otherwise [`SdkError::Conflict`].
    pub async fn put_if(&self, key: &str, value: Vec<u8>, expected_version: u64) -> Result<u64, SdkError> {
        self.write_put(key, value, Some(expected_version)).await
    }

    /// Deletes `key`; `Ok(false)` if there was nothing to delete.
    pub async fn delete(&self, key: &str) -> Result<bool, SdkError> {
        self.write_delete(key, None).await
    }

    /// Deletes `key` only if its version is still `expected_version`;
    /// otherwise [`SdkError::Conflict`].
    pub async fn delete_if(&self, key: &str, expected_version: u64) -> Result<bool, SdkError> {
        self.write_delete(key, Some(expected_version)).await
    }

    async fn write_put(&self, key: &str, value: Vec<u8>, expected_version: Option<u64>) -> Result<u64, SdkError> {
        let key = key.to_owned();
        let reply = self
            .calls
            .ask("kv_put", |mut c, framework_id| async move {
                c.kv_put(v1::KvPutRequest {
                    framework_id,
                    key,
                    value,
                    expected_version,
                })
                .await
            })
            .await?;
        Ok(reply.version)
    }

    async fn write_delete(&self, key: &str, expected_version: Option<u64>) -> Result<bool, SdkError> {
        let key = key.to_owned();
        let reply = self
            .calls
            .ask("kv_delete", |mut c, framework_id| async move {
                c.kv_delete(v1::KvDeleteRequest {
                    framework_id,
                    key,
                    expected_version,
                })
                .await
            })
            .await?;
        Ok(reply.existed)
    }
}
