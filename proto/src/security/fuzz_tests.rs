//! Property tests of the security decoders over arbitrary and mutated
//! input (DESIGN.md "Trust", "Bad input"; docs/fuzzing.md): principals,
//! tokens, client configurations, certificates, join requests and secret
//! file paths. Whatever they are given, they refuse with a typed error or
//! accept something that satisfies their invariants; none panics.

use proptest::prelude::*;

use super::client_config::ClientConfig;
use super::join::JoinRequest;
use super::principal::{CertInfo, Principal};
use super::secret;
use super::token::{Grant, Token};
use crate::mutate::{config, mutated, mutated_text};

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fn valid_tokens() -> impl Strategy<Value = String> {
    (any::<u64>(), prop_oneof![Just(true), Just(false)]).prop_map(|(exp, bearer)| {
        let grant = if bearer {
            Grant::Bearer(Principal::user("ci").unwrap_or_else(|_| unreachable!()))
        } else {
            Grant::Join {
                kind: super::Kind::Agent,
                ca_fingerprint: "ab".repeat(32),
            }
        };
        Token::issue(KEY, grant, exp).map(|t| t.reveal()).unwrap_or_default()
    })
}

proptest! {
    #![proptest_config(config(256))]

    /// A principal that parses prints back to itself, and its URI form
    /// names it again.
    #[test]
    fn principals(text in mutated_text(prop::sample::select(vec!["user:ci", "agent:n-1", "master:10.0.0.1:5050"]).prop_map(str::to_owned), vec![":", "/", "..", "mezzo://", " "])) {
        if let Ok(p) = text.parse::<Principal>() {
            prop_assert_eq!(p.to_string().parse::<Principal>(), Ok(p.clone()));
            prop_assert_eq!(Principal::from_uri(&p.uri()), Ok(p.clone()));
        }
        let _ = Principal::from_uri(&text);
    }

    /// A token that parses was either signed by this key (and verifies,
    /// unless expired) or fails its signature: an altered token never
    /// verifies as a different grant.
    #[test]
    fn tokens(text in mutated_text(valid_tokens(), vec![".", "mzt", "mzj", "0", "ff"])) {
        if let Ok(t) = Token::parse(&text) {
            match t.verify(KEY, 0) {
                Ok(()) => prop_assert!(Token::parse(&t.reveal()).is_ok()),
                Err(e) => prop_assert!(matches!(e, super::token::TokenError::Signature | super::token::TokenError::Expired)),
            }
        }
    }

    /// A client configuration reads or is refused, and a read one writes
    /// back to the same.
    #[test]
    fn client_configs(text in mutated_text(Just("masters = [\"127.0.0.1:5050\"]\nca = \"x\"\ninsecure = true\n".to_owned()), vec!["=", "\"", "[", "]", "\n", "token"])) {
        if let Ok(cfg) = toml::from_str::<ClientConfig>(&text) {
            let again: ClientConfig = toml::from_str(&toml::to_string(&cfg).unwrap_or_default()).unwrap_or_default();
            prop_assert_eq!(again, cfg);
        }
    }

    /// Any bytes as a certificate: refused, never a panic.
    #[test]
    fn certificates(bytes in mutated(Just(vec![0x30, 0x82, 0x01, 0x0a, 0x02, 0x01, 0x00]))) {
        prop_assert!(CertInfo::read(&bytes).is_err() || !bytes.is_empty());
    }

    /// A join request is JSON of known fields only.
    #[test]
    fn join_requests(bytes in mutated(Just(br#"{"token":"mzj.x","csr":"y","hostname":"h","address":"a:1"}"#.to_vec()))) {
        if let Ok(r) = serde_json::from_slice::<JoinRequest>(&bytes) {
            prop_assert!(serde_json::to_vec(&r).is_ok());
        }
    }

    /// A secret file path that is accepted stays inside the sandbox.
    #[test]
    fn secret_paths(text in mutated_text(Just("conf/db.pw".to_owned()), vec!["/", "..", ".", "\0", "//"])) {
        if let Ok(p) = secret::sandbox_path(&text) {
            prop_assert!(p.is_relative());
            prop_assert!(p.components().all(|c| matches!(c, std::path::Component::Normal(_))));
        }
    }
}
