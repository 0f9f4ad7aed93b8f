//! The key-value calls of `mezzo.v1.Scheduler`: validate, ask the owner
//! task, convert the answer.

use mezzo_proto::ids::FrameworkId;
use mezzo_proto::v1;
use tonic::Status;

use crate::auth::Caller;
use crate::error::MasterError;
use crate::kv::{KvAnswer, KvCall, KvDone, KvEntry, MAX_KEY_BYTES, MAX_VALUE_BYTES};
use crate::runtime::{Command, Handle};

/// Sends one validated call to the owner task and waits for its answer
/// (for a write: until it is committed).
pub(super) async fn ask(handle: &Handle, caller: Caller, framework_id: &str, call: KvCall) -> Result<KvAnswer, Status> {
    let framework = FrameworkId::parse(framework_id).map_err(MasterError::from)?;
    let answer = handle
        .ask(|reply| Command::Kv {
            framework,
            call,
            caller,
            reply,
        })
        .await??;
    Ok(answer)
}

pub(crate) fn get(req: &v1::KvGetRequest) -> Result<KvCall, MasterError> {
    validate_key(&req.key)?;
    Ok(KvCall::Get { key: req.key.clone() })
}

pub(crate) fn list(req: &v1::KvListRequest) -> Result<KvCall, MasterError> {
    if req.prefix.len() > MAX_KEY_BYTES {
        return Err(MasterError::Invalid(format!(
            "prefix: {} bytes; the limit is {}",
            req.prefix.len(),
            MAX_KEY_BYTES
        )));
    }
    Ok(KvCall::List {
        prefix: req.prefix.clone(),
    })
}

pub(crate) fn put(req: v1::KvPutRequest) -> Result<KvCall, MasterError> {
    validate_key(&req.key)?;
    validate_value(&req.key, &req.value)?;
    Ok(KvCall::Put {
        key: req.key,
        value: req.value,
        expected_version: req.expected_version,
    })
}

pub(crate) fn delete(req: v1::KvDeleteRequest) -> Result<KvCall, MasterError> {
    validate_key(&req.key)?;
    Ok(KvCall::Delete {
        key: req.key,
        expected_version: req.expected_version,
    })
}

/// Checks a key: non-empty, at most [`MAX_KEY_BYTES`], no control
/// characters (keys show up in logs and listings).
fn validate_key(key: &str) -> Result<(), MasterError> {
    if key.is_empty() {
        return Err(MasterError::Invalid("key: must not be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(MasterError::Invalid(format!(
            "key: {} bytes; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(MasterError::Invalid(format!(
            "key {key:?}: contains a control character"
        )));
    }
    Ok(())
}

/// Checks a value's size against [`MAX_VALUE_BYTES`].
fn validate_value(key: &str, value: &[u8]) -> Result<(), MasterError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(MasterError::Invalid(format!(
            "value of key {key:?}: {} bytes; the limit is {MAX_VALUE_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

fn entry(key: String, e: KvEntry) -> v1::KvEntry {
    v1::KvEntry {
        key,
        value: e.value,
        version: e.version,
    }
}

/// The answer as the response of the call it answers; a mismatch is an
/// internal error (the owner answered a different kind of call).
pub(super) fn get_response(key: &str, a: KvAnswer) -> Result<v1::KvGetResponse, Status> {
    match a {
        KvAnswer::Entry(e) => Ok(v1::KvGetResponse {
            entry: e.map(|e| entry(key.to_owned(), e)),
        }),
        other => Err(mismatch(&other)),
    }
}

pub(super) fn list_response(a: KvAnswer) -> Result<v1::KvListResponse, Status> {
    match a {
        KvAnswer::Entries(list) => Ok(v1::KvListResponse {
            entries: list.into_iter().map(|(k, e)| entry(k, e)).collect(),
        }),
        other => Err(mismatch(&other)),
    }
}

pub(super) fn put_response(a: KvAnswer) -> Result<v1::KvPutResponse, Status> {
    match a {
        KvAnswer::Done(KvDone::Put { version }) => Ok(v1::KvPutResponse { version }),
        other => Err(mismatch(&other)),
    }
}

pub(super) fn delete_response(a: KvAnswer) -> Result<v1::KvDeleteResponse, Status> {
    match a {
        KvAnswer::Done(KvDone::Deleted { existed }) => Ok(v1::KvDeleteResponse { existed }),
        other => Err(mismatch(&other)),
    }
}

fn mismatch(a: &KvAnswer) -> Status {
    Status::internal(format!("unexpected key-value answer {a:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_are_validated() {
        assert!(validate_key("jobs/a-1").is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key("a\nb").is_err());
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(validate_key(&long).expect_err("long").to_string().contains("257 bytes"));
        assert!(validate_value("k", &vec![0; MAX_VALUE_BYTES]).is_ok());
        let err = validate_value("k", &vec![0; MAX_VALUE_BYTES + 1]).expect_err("big");
        assert!(err.to_string().contains("value of key \"k\""), "{err}");
    }
}
