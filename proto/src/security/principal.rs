//! Who is calling: a [`Principal`] is established once at the edge, from
//! the caller's TLS certificate or bearer token, and carried with the
//! request. Certificates name it in a URI subject alternative name,
//! `mezzo://<kind>/<name>`, and in a DNS name under `.mezzo` that clients
//! verify servers against (`master.mezzo`, `<name>.agent.mezzo`), so that
//! a cluster's own names need no DNS and no IP address in certificates.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest principal name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// What kind of party a principal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A master (a Raft peer); its name is its member address.
    Master,
    /// An agent; its name is assigned when it joins.
    Agent,
    /// A person or a program: operators and frameworks.
    User,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Master, Kind::Agent, Kind::User];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Master => "master",
            Kind::Agent => "agent",
            Kind::User => "user",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = PrincipalError;
    fn from_str(s: &str) -> Result<Kind, PrincipalError> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| PrincipalError::Kind(s.to_owned()))
    }
}

/// Why a principal was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalError {
    #[error("unknown principal kind {0:?} (master, agent or user)")]
    Kind(String),
    #[error("principal {0:?} is not KIND:NAME (e.g. user:alice)")]
    Form(String),
    #[error("principal name {0:?} must be 1 to {MAX_NAME_LEN} bytes of letters, digits and '-', '_', '.', ':', '@'")]
    Name(String),
    #[error("an agent's name must be a DNS label (lowercase letters, digits, '-'; at most 63), not {0:?}")]
    AgentName(String),
    #[error("certificate: {0}")]
    Certificate(String),
}

/// An authenticated identity: `user:alice`, `agent:node-1-3f2a`,
/// `master:10.0.0.1:5050`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Principal {
    kind: Kind,
    name: String,
}

/// The URI scheme of the subject alternative name that carries a principal.
pub const URI_SCHEME: &str = "mezzo://";
/// The DNS name every master's certificate carries, and clients verify.
pub const MASTER_DNS_NAME: &str = "master.mezzo";

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Principal {
    pub fn new(kind: Kind, name: impl Into<String>) -> Result<Principal, PrincipalError> {
        let name = name.into();
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@');
        if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(ok) {
            return Err(PrincipalError::Name(name));
        }
        if kind == Kind::Agent && !dns_label(&name) {
            return Err(PrincipalError::AgentName(name));
        }
        Ok(Principal { kind, name })
    }

    /// `user:NAME`.
    pub fn user(name: impl Into<String>) -> Result<Principal, PrincipalError> {
        Principal::new(Kind::User, name)
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `mezzo://KIND/NAME`, the URI SAN of its certificate.
    pub fn uri(&self) -> String {
        format!("{URI_SCHEME}{}/{}", self.kind, self.name)
    }

    /// Reads a principal back from a URI SAN.
    pub fn from_uri(uri: &str) -> Result<Principal, PrincipalError> {
        let rest = uri
            .strip_prefix(URI_SCHEME)
            .ok_or_else(|| PrincipalError::Form(uri.to_owned()))?;
        let (kind, name) = rest
            .split_once('/')
            .ok_or_else(|| PrincipalError::Form(uri.to_owned()))?;
        Principal::new(kind.parse()?, name)
    }

    /// The DNS name a client verifies this principal's server certificate
    /// against: `master.mezzo` for any master, `NAME.agent.mezzo` for one
    /// agent; users serve nothing.
    pub fn dns_name(&self) -> Option<String> {
        match self.kind {
            Kind::Master => Some(MASTER_DNS_NAME.to_owned()),
            Kind::Agent => Some(format!("{}.agent.mezzo", self.name)),
            Kind::User => None,
        }
    }

    /// The principal named by a DER certificate's `mezzo://` URI SAN.
    pub fn from_certificate(der: &[u8]) -> Result<Principal, PrincipalError> {
        CertInfo::read(der).map(|c| c.principal)
    }
}

/// What the authentication layer needs from a peer's certificate: whom it
/// names and its serial number (to check against revocations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub principal: Principal,
    /// Lowercase hex, as `mezzo credential list` shows it.
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
}

impl CertInfo {
    /// Reads a DER certificate (already verified by the TLS handshake).
    pub fn read(der: &[u8]) -> Result<CertInfo, PrincipalError> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| PrincipalError::Certificate(e.to_string()))?;
        let serial = cert.raw_serial().iter().map(|b| format!("{b:02x}")).collect();
        let not_after = cert.validity().not_after.timestamp();
        let san = cert
            .subject_alternative_name()
            .map_err(|e| PrincipalError::Certificate(e.to_string()))?
            .ok_or_else(|| PrincipalError::Certificate("no subject alternative name".into()))?;
        san.value
            .general_names
            .iter()
            .find_map(|n| match n {
                GeneralName::URI(u) if u.starts_with(URI_SCHEME) => Some(Principal::from_uri(u)),
                _ => None,
            })
            .unwrap_or_else(|| Err(PrincipalError::Certificate("no mezzo:// name".into())))
            .map(|principal| CertInfo {
                principal,
                serial,
                not_after,
            })
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

impl FromStr for Principal {
    type Err = PrincipalError;
    /// `KIND:NAME`; a bare name is a user.
    fn from_str(s: &str) -> Result<Principal, PrincipalError> {
        match s.split_once(':') {
            Some((kind, name)) if Kind::ALL.iter().any(|k| k.as_str() == kind) => Principal::new(kind.parse()?, name),
            _ => Principal::user(s),
        }
    }
}

impl Serialize for Principal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Principal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Principal, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_uri_forms_round_trip() {
        for text in [
            "user:alice",
            "agent:node-1-3f2a",
            "master:127.0.0.1:5050",
            "user:ci@example.com",
        ] {
            let p: Principal = text.parse().expect(text);
            assert_eq!(p.to_string(), text);
            assert_eq!(Principal::from_uri(&p.uri()), Ok(p.clone()));
        }
        assert_eq!("bob".parse::<Principal>().map(|p| p.to_string()), Ok("user:bob".into()));
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["user:", "user:a/b", "user:a b", "agent:Node_1", "agent:-x", "master:"] {
            assert!(bad.parse::<Principal>().is_err(), "{bad} accepted");
        }
        assert!(Principal::user("x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(Principal::from_uri("https://user/alice").is_err());
        assert!(Principal::from_uri("mezzo://root/alice").is_err());
    }

    #[test]
    fn servers_are_verified_against_fixed_dns_names() {
        let m: Principal = "master:10.0.0.1:5050".parse().expect("master");
        assert_eq!(m.dns_name().as_deref(), Some("master.mezzo"));
        let a: Principal = "agent:n1".parse().expect("agent");
        assert_eq!(a.dns_name().as_deref(), Some("n1.agent.mezzo"));
        assert_eq!(Principal::user("u").expect("user").dns_name(), None);
    }
}
