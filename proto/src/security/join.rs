//! Joining a cluster with a join token: how a new agent or master gets
//! its certificate. The token names the CA's fingerprint, so the first
//! step fetches the CA certificate (from any master, trusting nothing) and
//! checks it against the fingerprint; the second asks over TLS verified
//! against that CA for a certificate over a fresh key, whose private half
//! never leaves this machine.
//!
//! ```text
//! GET  /api/v1/ca    -> the CA certificate (PEM), public
//! POST /api/v1/join  {token, csr, hostname, address} -> {principal, cert, ca, authority?}
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};

use super::principal::MASTER_DNS_NAME;
use super::tls::{self, Credentials, Identity};
use super::token::{Grant, Token, fingerprint};

/// What a joining machine sends.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub token: String,
    /// PEM certificate signing request over the new key.
    pub csr: String,
    /// The machine's hostname (an agent's name is made from it; it also
    /// goes into the certificate for browsers).
    pub hostname: String,
    /// A master's member address; an agent's HTTP address.
    #[serde(default)]
    pub address: String,
}

impl fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinRequest")
            .field("hostname", &self.hostname)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// The material that makes a master a certificate authority, handed to a
/// master that joins (every master must be able to admit agents).
#[derive(Clone, Serialize, Deserialize)]
pub struct AuthorityFiles {
    pub ca_cert: String,
    pub ca_key: String,
    pub data_key: String,
}

impl fmt::Debug for AuthorityFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthorityFiles(<hidden>)")
    }
}

/// What it gets back.
#[derive(Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The principal the certificate names (`agent:NAME`, `master:ADDR`).
    pub principal: String,
    pub cert: String,
    pub ca: String,
    /// Only for a master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<AuthorityFiles>,
}

impl fmt::Debug for JoinResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinResponse")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("join token: {0}")]
    Token(#[from] super::token::TokenError),
    #[error("that is a bearer token; joining needs a join token (mzj.…, from `mezzo token create`)")]
    NotAJoinToken,
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    #[error("new key: {0}")]
    Key(String),
    #[error("{master}: {message}")]
    Master { master: String, message: String },
    #[error(
        "{master} presented CA {got}, but the join token names {want}: \
         this is not the cluster the token is for (or someone is in the way)"
    )]
    WrongCa { master: String, got: String, want: String },
    #[error("no master answered: {0}")]
    NoMaster(String),
}

impl JoinError {
    /// Whether asking again later may succeed (no master answered, or none
    /// could serve yet); a refused token or another cluster's CA is final.
    pub fn is_retryable(&self) -> bool {
        matches!(self, JoinError::NoMaster(_))
    }
}

/// Joins as [`join`] does, asking again with backoff (100 ms to 5 s) while
/// no master can answer (none up yet, no leader elected), until `patience`
/// has passed.
pub async fn join_patiently(
    masters: &[String],
    token: &str,
    hostname: &str,
    address: &str,
    patience: Duration,
) -> Result<Joined, JoinError> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).jitter(0.25);
    loop {
        match join(masters, token, hostname, address).await {
            Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "cannot join yet; trying again");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            other => return other,
        }
    }
}

/// A key, a certificate and the CA: what joining gives.
#[derive(Debug, Clone)]
pub struct Joined {
    pub credentials: Credentials,
    pub key_pem: String,
    pub response: JoinResponse,
}

fn http_client(cfg: Arc<rustls::ClientConfig>) -> Result<reqwest::Client, JoinError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(Arc::unwrap_or_clone(cfg))
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| JoinError::Key(e.to_string()))
}

/// Joins through the first of `masters` that answers.
pub async fn join(masters: &[String], token: &str, hostname: &str, address: &str) -> Result<Joined, JoinError> {
    let parsed = Token::parse(token)?;
    let Grant::Join { ca_fingerprint, .. } = &parsed.grant else {
        return Err(JoinError::NotAJoinToken);
    };
    let (key_pem, csr) = super::csr::new_key_and_request().map_err(|e| JoinError::Key(e.to_string()))?;
    let request = JoinRequest {
        token: token.trim().to_owned(),
        csr,
        hostname: hostname.to_owned(),
        address: address.to_owned(),
    };
    let mut why = Vec::new();
    for master in masters {
        match join_one(master, ca_fingerprint, &request).await {
            Ok(response) => {
                let identity = Identity::from_pem(&response.cert, &key_pem)?;
                let credentials = Credentials::new(&response.ca)?.with_identity(identity);
                return Ok(Joined {
                    credentials,
                    key_pem,
                    response,
                });
            }
            Err(e @ (JoinError::WrongCa { .. } | JoinError::Master { .. })) => return Err(e),
            Err(e) => why.push(e.to_string()),
        }
    }
    Err(JoinError::NoMaster(why.join("; ")))
}

async fn join_one(master: &str, want: &str, request: &JoinRequest) -> Result<JoinResponse, JoinError> {
    let unreachable = |e: reqwest::Error| JoinError::NoMaster(format!("{master}: {}", super::grpc::error_chain(&e)));
    // 1. The CA, from whoever answers; its fingerprint decides.
    let any = http_client(Arc::new(
        rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(tls::TlsError::from)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer))
            .with_no_client_auth(),
    ))?;
    let ca = any
        .get(format!("https://{master}/api/v1/ca"))
        .send()
        .await
        .map_err(unreachable)?
        .text()
        .await
        .map_err(unreachable)?;
    let der = tls::certs_from_pem("CA", &ca)?;
    let got = fingerprint(&der[0]);
    if got != want {
        return Err(JoinError::WrongCa {
            master: master.to_owned(),
            got,
            want: want.to_owned(),
        });
    }
    // 2. The certificate, over TLS verified against that CA.
    let verified = http_client(Credentials::new(&ca)?.client_config(MASTER_DNS_NAME)?)?;
    let answer = verified
        .post(format!("https://{master}/api/v1/join"))
        .json(request)
        .send()
        .await
        .map_err(unreachable)?;
    let status = answer.status();
    let body = answer.text().await.map_err(unreachable)?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or(body);
        // No leader yet, or one that just changed: worth asking again.
        if status.is_server_error() {
            return Err(JoinError::NoMaster(format!("{master}: {status}: {message}")));
        }
        return Err(JoinError::Master {
            master: master.to_owned(),
            message: format!("{status}: {message}"),
        });
    }
    serde_json::from_str(&body).map_err(|e| JoinError::Master {
        master: master.to_owned(),
        message: format!("unreadable answer: {e}"),
    })
}

/// Accepts any server certificate: used only to fetch the CA, whose
/// fingerprint is then checked against the join token. Handshake
/// signatures are still verified, so the server holds its key.
#[derive(Debug)]
struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &tls::provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &tls::provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        tls::provider().signature_verification_algorithms.supported_schemes()
    }
}
