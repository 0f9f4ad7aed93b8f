//! Secrets at rest: sealed with AES-256-GCM under the cluster's data key
//! before they enter the registry, so the Raft log, its snapshots and any
//! registry dump hold only ciphertext. The secret's name and role are
//! bound as associated data: a sealed value moved to another name does not
//! open.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// The context a secret is sealed under: moving it elsewhere breaks it.
pub fn secret_context(role: &mezzo_proto::reservation::Role, name: &str) -> String {
    format!("mezzo-secret\n{role}\n{name}")
}

/// Why a value could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the system random generator failed")]
    Random,
    #[error("the sealed value does not open with this cluster's data key (altered, or moved)")]
    Open,
}

fn key(data_key: &[u8; 32]) -> LessSafeKey {
    // A 32-byte key always fits AES-256.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, data_key).unwrap_or_else(|_| unreachable!()))
}

/// `nonce || ciphertext || tag`, with `context` authenticated alongside.
pub fn seal(data_key: &[u8; 32], context: &str, plain: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| SealError::Random)?;
    let mut buf = plain.to_vec();
    key(data_key)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context), &mut buf)
        .map_err(|_| SealError::Random)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    Ok(out)
}

/// The plain value of [`seal`]'s output, if it was sealed under this key
/// and `context`.
pub fn open(data_key: &[u8; 32], context: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    if sealed.len() < NONCE_LEN {
        return Err(SealError::Open);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
    let mut buf = body.to_vec();
    let plain = key(data_key)
        .open_in_place(nonce, Aad::from(context), &mut buf)
        .map_err(|_| SealError::Open)?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let k = [7u8; 32];
        let sealed = seal(&k, "eng/db-password", b"hunter2").expect("seal");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(open(&k, "eng/db-password", &sealed), Ok(b"hunter2".to_vec()));
        assert_eq!(open(&[8u8; 32], "eng/db-password", &sealed), Err(SealError::Open));
        assert_eq!(open(&k, "ops/db-password", &sealed), Err(SealError::Open));
        let mut altered = sealed.clone();
        altered[NONCE_LEN] ^= 1;
        assert_eq!(open(&k, "eng/db-password", &altered), Err(SealError::Open));
        assert_eq!(open(&k, "x", &[1, 2]), Err(SealError::Open));
        assert_ne!(seal(&k, "c", b"v").expect("a"), seal(&k, "c", b"v").expect("b"));
    }
}
