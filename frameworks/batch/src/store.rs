//! The framework's durable state in its key-value namespace:
//!
//! ```text
//! epoch              u64, bumped at every start (task ids never repeat)
//! submission/{seq}   one submitted file: its jobs' specs, written at once
//!                    (create-only), so a submission is all or nothing
//! progress/{job}     the job's Progress (JSON), saved before updates are
//!                    acknowledged
//! ```

use std::collections::BTreeMap;

use mezzo_sdk::{Kv, SdkError};
use serde::{Deserialize, Serialize};

use crate::job::Progress;
use crate::spec::JobSpec;

const EPOCH: &str = "epoch";
const SUBMISSION: &str = "submission/";
const PROGRESS: &str = "progress/";

/// One submitted file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub seq: u64,
    /// Unix seconds.
    pub submitted_at: f64,
    pub jobs: Vec<JobSpec>,
}

/// Why the store could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("state store: {0}")]
    Call(#[from] SdkError),
    #[error("state store: key {key}: {why}")]
    Corrupt { key: String, why: String },
}

/// Everything saved, as loaded at start.
#[derive(Debug, Default)]
pub struct Saved {
    pub submissions: Vec<Submission>,
    pub progress: BTreeMap<String, Progress>,
}

/// Takes the next epoch (compare-and-set, so two instances by mistake
/// cannot get the same one).
pub async fn next_epoch(kv: &Kv) -> Result<u64, StoreError> {
    loop {
        let current = kv.get(EPOCH).await?;
        let (epoch, version) = match &current {
            Some(e) => (parse_u64(EPOCH, &e.value)?, e.version),
            None => (0, 0),
        };
        match kv.put_if(EPOCH, (epoch + 1).to_string().into_bytes(), version).await {
            Ok(_) => return Ok(epoch + 1),
            Err(SdkError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn parse_u64(key: &str, value: &[u8]) -> Result<u64, StoreError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::Corrupt {
            key: key.into(),
            why: "not a number".into(),
        })
}

/// Loads every submission and job progress.
pub async fn load(kv: &Kv) -> Result<Saved, StoreError> {
    let mut saved = Saved::default();
    for e in kv.list(SUBMISSION).await? {
        let sub: Submission = serde_json::from_slice(&e.value).map_err(|err| StoreError::Corrupt {
            key: e.key.clone(),
            why: err.to_string(),
        })?;
        saved.submissions.push(sub);
    }
    saved.submissions.sort_by_key(|s| s.seq);
    for e in kv.list(PROGRESS).await? {
        let name = e.key[PROGRESS.len()..].to_owned();
        let p: Progress = serde_json::from_slice(&e.value).map_err(|err| StoreError::Corrupt {
            key: e.key.clone(),
            why: err.to_string(),
        })?;
        saved.progress.insert(name, p);
    }
    Ok(saved)
}

/// Writes a new submission; fails if its sequence number is taken.
pub async fn save_submission(kv: &Kv, sub: &Submission) -> Result<(), StoreError> {
    let value = serde_json::to_vec(sub).map_err(|e| StoreError::Corrupt {
        key: format!("{SUBMISSION}{}", sub.seq),
        why: e.to_string(),
    })?;
    kv.put_if(&format!("{SUBMISSION}{:010}", sub.seq), value, 0).await?;
    Ok(())
}

/// Saves a job's progress. A job with so many failures that their
/// reasons would not fit in one value keeps exit codes and attempts but
/// drops the reasons' text.
pub async fn save_progress(kv: &Kv, job: &str, p: &Progress) -> Result<(), StoreError> {
    let key = format!("{PROGRESS}{job}");
    let value = encode_progress(&key, p)?;
    kv.put(&key, value).await?;
    Ok(())
}

fn encode_progress(key: &str, p: &Progress) -> Result<Vec<u8>, StoreError> {
    let corrupt = |e: serde_json::Error| StoreError::Corrupt {
        key: key.to_owned(),
        why: e.to_string(),
    };
    let value = serde_json::to_vec(p).map_err(corrupt)?;
    if value.len() <= mezzo_sdk::kv::MAX_VALUE_BYTES {
        return Ok(value);
    }
    let mut slim = p.clone();
    for f in slim.failures.values_mut() {
        f.reason.clear();
    }
    serde_json::to_vec(&slim).map_err(corrupt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Failure;

    #[test]
    fn oversized_progress_drops_reasons_not_outcomes() {
        let mut p = Progress::default();
        for i in 0..2000 {
            p.failed.insert(i);
            p.failed_attempts.insert(i, 1);
            let reason = "x".repeat(160);
            p.failures.insert(
                i,
                Failure {
                    attempt: 1,
                    state: "TASK_FAILED".into(),
                    exit_code: Some(1),
                    reason,
                },
            );
        }
        let bytes = encode_progress("progress/j", &p).expect("encodes");
        assert!(bytes.len() <= mezzo_sdk::kv::MAX_VALUE_BYTES, "{}", bytes.len());
        let back: Progress = serde_json::from_slice(&bytes).expect("decodes");
        assert_eq!(back.failed, p.failed);
        assert_eq!(back.failures[&7].exit_code, Some(1));
        assert!(back.failures[&7].reason.is_empty());
        let small = Progress::default();
        assert_eq!(
            serde_json::from_slice::<Progress>(&encode_progress("k", &small).expect("ok")).expect("de"),
            small
        );
    }
}
