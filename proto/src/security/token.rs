//! Bearer tokens and join tokens, signed rather than stored: a token
//! carries what it grants and an HMAC-SHA256 over it under the cluster's
//! data key, so any master can check one without a lookup, and a registry
//! dump or snapshot holds no credential. A token ends at its expiry or
//! when its nonce is revoked (kept in the registry). A join token also
//! names the CA's fingerprint, so a new machine can check it reached the
//! right cluster before it sends anything (as kubeadm's discovery hash and
//! K3s's secure tokens do).
//!
//! ```text
//! mzt.<hex principal name>.<expires>.<nonce>.<mac>       bearer token of user:<name>
//! mzj.<ca sha256>.<agent|master>.<expires>.<nonce>.<mac> join token
//! ```
//!
//! `expires` is Unix seconds, 0 for never; `nonce` is 16 hex digits and
//! names the token in listings and revocations.

use std::fmt;

use ring::digest::{SHA256, digest};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use super::principal::{Kind, Principal};

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a Mezzo {0} (expected {1})")]
    Form(&'static str, &'static str),
    #[error("the token's signature is wrong (another cluster's, or altered)")]
    Signature,
    #[error("the token expired")]
    Expired,
    #[error("the system random generator failed")]
    Random,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A fresh random nonce (16 hex digits).
fn nonce() -> Result<String, TokenError> {
    let mut buf = [0u8; 8];
    SystemRandom::new().fill(&mut buf).map_err(|_| TokenError::Random)?;
    Ok(hex(&buf))
}

/// SHA-256 of a DER certificate, hex: the CA fingerprint a join token
/// carries.
pub fn fingerprint(der: &[u8]) -> String {
    hex(digest(&SHA256, der).as_ref())
}

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Authenticates as this user.
    Bearer(Principal),
    /// Lets a machine join as an agent or a master.
    Join { kind: Kind, ca_fingerprint: String },
}

/// A token: its grant, expiry and nonce, and the signature over them.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub grant: Grant,
    /// Unix seconds; 0 never expires.
    pub expires: u64,
    pub nonce: String,
    mac: String,
}

const MAC_HEX: usize = 64;

fn signed_text(grant: &Grant, expires: u64, nonce: &str) -> String {
    match grant {
        Grant::Bearer(p) => format!("mezzo-token-v1\nbearer\n{p}\n{expires}\n{nonce}"),
        Grant::Join { kind, ca_fingerprint } => {
            format!("mezzo-token-v1\njoin\n{kind}\n{ca_fingerprint}\n{expires}\n{nonce}")
        }
    }
}

impl Token {
    /// Signs a new token with the cluster's data key.
    pub fn issue(key: &[u8], grant: Grant, expires: u64) -> Result<Token, TokenError> {
        let nonce = nonce()?;
        let k = hmac::Key::new(hmac::HMAC_SHA256, key);
        let mac = hex(hmac::sign(&k, signed_text(&grant, expires, &nonce).as_bytes()).as_ref());
        Ok(Token {
            grant,
            expires,
            nonce,
            mac,
        })
    }

    /// Reads a token's text; [`Token::verify`] checks it.
    pub fn parse(s: &str) -> Result<Token, TokenError> {
        let parts: Vec<&str> = s.trim().split('.').collect();
        match parts.as_slice() {
            ["mzt", name, expires, nonce, mac] => {
                let bad = || TokenError::Form("bearer token", "mzt.<name>.<expires>.<nonce>.<mac>");
                let name = unhex(name).and_then(|b| String::from_utf8(b).ok()).ok_or_else(bad)?;
                let principal = Principal::user(name).map_err(|_| bad())?;
                Token::checked(Grant::Bearer(principal), expires, nonce, mac).ok_or_else(bad)
            }
            ["mzj", fp, kind, expires, nonce, mac] => {
                let bad = || TokenError::Form("join token", "mzj.<ca sha256>.<agent|master>.<expires>.<nonce>.<mac>");
                let kind = match *kind {
                    "agent" => Kind::Agent,
                    "master" => Kind::Master,
                    _ => return Err(bad()),
                };
                if !is_hex(fp, 64) {
                    return Err(bad());
                }
                let grant = Grant::Join {
                    kind,
                    ca_fingerprint: (*fp).to_owned(),
                };
                Token::checked(grant, expires, nonce, mac).ok_or_else(bad)
            }
            [p, ..] if p.starts_with("mzj") => Err(TokenError::Form("join token", "mzj.<6 fields>")),
            _ => Err(TokenError::Form("token", "mzt.… or mzj.…")),
        }
    }

    fn checked(grant: Grant, expires: &str, nonce: &str, mac: &str) -> Option<Token> {
        let expires_ok = !expires.is_empty() && expires.len() <= 20 && expires.bytes().all(|b| b.is_ascii_digit());
        (expires_ok && is_hex(nonce, 16) && is_hex(mac, MAC_HEX)).then(|| Token {
            grant,
            expires: expires.parse().unwrap_or(u64::MAX),
            nonce: nonce.to_owned(),
            mac: mac.to_owned(),
        })
    }

    /// Checks the signature (in constant time) and the expiry at `now`
    /// (Unix seconds). Revocation is the caller's to check, by nonce.
    pub fn verify(&self, key: &[u8], now: u64) -> Result<(), TokenError> {
        let k = hmac::Key::new(hmac::HMAC_SHA256, key);
        let mac = unhex(&self.mac).ok_or(TokenError::Signature)?;
        hmac::verify(&k, signed_text(&self.grant, self.expires, &self.nonce).as_bytes(), &mac)
            .map_err(|_| TokenError::Signature)?;
        if self.expires != 0 && now >= self.expires {
            return Err(TokenError::Expired);
        }
        Ok(())
    }

    /// The whole token, to hand to its holder once.
    pub fn reveal(&self) -> String {
        match &self.grant {
            Grant::Bearer(p) => format!(
                "mzt.{}.{}.{}.{}",
                hex(p.name().as_bytes()),
                self.expires,
                self.nonce,
                self.mac
            ),
            Grant::Join { kind, ca_fingerprint } => format!(
                "mzj.{ca_fingerprint}.{kind}.{}.{}.{}",
                self.expires, self.nonce, self.mac
            ),
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("grant", &self.grant)
            .field("expires", &self.expires)
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn user(n: &str) -> Principal {
        Principal::user(n).expect("user")
    }

    #[test]
    fn tokens_round_trip_verify_and_hide_their_signature() {
        let fp = fingerprint(b"ca");
        for grant in [
            Grant::Bearer(user("ci@example.com")),
            Grant::Join {
                kind: Kind::Agent,
                ca_fingerprint: fp.clone(),
            },
            Grant::Join {
                kind: Kind::Master,
                ca_fingerprint: fp.clone(),
            },
        ] {
            let t = Token::issue(KEY, grant, 0).expect("issue");
            let back = Token::parse(&t.reveal()).expect("parse");
            assert_eq!(back, t);
            assert_eq!(back.verify(KEY, 1 << 40), Ok(()));
            assert!(!format!("{t:?}").contains(&t.mac));
        }
    }

    #[test]
    fn altered_foreign_and_expired_tokens_are_refused() {
        let t = Token::issue(KEY, Grant::Bearer(user("alice")), 1000).expect("issue");
        assert_eq!(t.verify(KEY, 999), Ok(()));
        assert_eq!(t.verify(KEY, 1000), Err(TokenError::Expired));
        assert_eq!(
            t.verify(b"another cluster's key..........", 0),
            Err(TokenError::Signature)
        );
        // Renaming the holder or stretching the expiry breaks the signature.
        let text = t.reveal();
        let as_bob = text.replacen(&hex(b"alice"), &hex(b"bob"), 1);
        assert_eq!(
            Token::parse(&as_bob).expect("parse").verify(KEY, 0),
            Err(TokenError::Signature)
        );
        let longer = text.replacen(".1000.", ".9000.", 1);
        assert_eq!(
            Token::parse(&longer).expect("parse").verify(KEY, 0),
            Err(TokenError::Signature)
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let t = Token::issue(KEY, Grant::Bearer(user("alice")), 0)
            .expect("issue")
            .reveal();
        for bad in [
            "",
            "mzt",
            "mzt....",
            &t[..t.len() - 1],
            &format!("{t}."),
            &t.replace("mzt", "mzx"),
            &t.to_uppercase(),
            "mzj.x.agent.0.0000000000000000.00",
            "mzt.zz.0.0000000000000000.0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert!(Token::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
