//! TLS material and the rustls configurations built from it. Every Mezzo
//! connection is TLS with certificates of the cluster's own CA: servers
//! present theirs, clients present theirs (or a bearer token), and both
//! sides verify the other against the CA alone.
//!
//! A client verifies a server against the fixed DNS name of the principal
//! it expects ([`Principal::dns_name`]: `master.mezzo`, or
//! `NAME.agent.mezzo` for one agent) rather than against the address it
//! dialled, so a cluster works on bare IP addresses and no certificate has
//! to know them.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::principal::{CertInfo, Principal};

/// ALPN protocols a Mezzo server speaks: gRPC and HTTP/2 first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: no PEM {kind} found")]
    Empty { what: &'static str, kind: &'static str },
    #[error("{what}: {source}")]
    Pem {
        what: &'static str,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    #[error("these credentials hold no certificate and key, which a server needs")]
    NoIdentity,
    #[error("the certificate does not name a Mezzo principal: {0}")]
    Principal(#[from] super::principal::PrincipalError),
}

/// The crypto provider of every Mezzo TLS config (ring: pure Rust and C,
/// no cmake).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process's default crypto provider (once; later calls do
/// nothing). HTTP clients built without our own TLS config (plain-text
/// ones, to an `--insecure` cluster or a task's endpoint) need one.
pub fn ensure_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// PEM text that holds certificates, parsed.
pub fn certs_from_pem(what: &'static str, pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { what, source })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            kind: "certificate",
        });
    }
    Ok(certs)
}

fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            what: "key",
            kind: "private key",
        },
        source => TlsError::Pem { what: "key", source },
    })
}

/// A party's certificate chain and key, with the principal it names.
#[derive(Clone)]
pub struct Identity {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: Arc<PrivateKeyDer<'static>>,
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    info: CertInfo,
}

impl Identity {
    /// Reads a PEM certificate (chain) and its PEM private key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Identity, TlsError> {
        let chain = certs_from_pem("certificate", cert_pem)?;
        let key = key_from_pem(key_pem)?;
        let info = CertInfo::read(&chain[0])?;
        Ok(Identity {
            chain,
            key: Arc::new(key),
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            info,
        })
    }

    pub fn principal(&self) -> &Principal {
        &self.info.principal
    }

    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("principal", &self.info.principal.to_string())
            .field("serial", &self.info.serial)
            .finish_non_exhaustive()
    }
}

/// What a party trusts (the cluster CA) and how it proves itself: a
/// certificate, or a bearer token for clients without one. Cheap to clone.
#[derive(Clone)]
pub struct Credentials(Arc<Inner>);

#[derive(Clone)]
struct Inner {
    ca: Vec<CertificateDer<'static>>,
    ca_pem: String,
    identity: Option<Identity>,
    token: Option<Arc<str>>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.0.identity)
            .field("token", &self.0.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl Credentials {
    /// Trusts the CA certificate(s) in `ca_pem`.
    pub fn new(ca_pem: &str) -> Result<Credentials, TlsError> {
        Ok(Credentials(Arc::new(Inner {
            ca: certs_from_pem("CA", ca_pem)?,
            ca_pem: ca_pem.to_owned(),
            identity: None,
            token: None,
        })))
    }

    /// Proves itself with a certificate.
    pub fn with_identity(mut self, identity: Identity) -> Credentials {
        Arc::make_mut(&mut self.0).identity = Some(identity);
        self
    }

    /// Proves itself with a bearer token (sent by clients only).
    pub fn with_token(mut self, token: impl Into<Arc<str>>) -> Credentials {
        Arc::make_mut(&mut self.0).token = Some(token.into());
        self
    }

    pub fn identity(&self) -> Option<&Identity> {
        self.0.identity.as_ref()
    }

    pub fn token(&self) -> Option<&str> {
        self.0.token.as_deref()
    }

    pub fn ca_pem(&self) -> &str {
        &self.0.ca_pem
    }

    /// Whom these credentials name: the certificate's principal (a token's
    /// is known only to the masters).
    pub fn principal(&self) -> Option<&Principal> {
        self.0.identity.as_ref().map(Identity::principal)
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        let (_, _) = roots.add_parsable_certificates(self.0.ca.iter().cloned());
        roots
    }

    /// A server's config: presents this identity; asks every client for a
    /// certificate, verifies any it gets against the CA, and lets one
    /// without a certificate through to authenticate by token (or be
    /// refused) at the request layer.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let id = self.0.identity.as_ref().ok_or(TlsError::NoIdentity)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(id.chain.clone(), id.key.clone_key())?;
        cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(cfg))
    }

    /// A client's config that accepts only a server certificate of the CA
    /// naming `server` (see [`Principal::dns_name`]), and presents this
    /// identity if there is one.
    pub fn client_config(&self, server: &str) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(self.roots()), provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let expect =
            ServerName::try_from(server.to_owned()).map_err(|e| TlsError::Verifier(format!("{server:?}: {e}")))?;
        let verifier = Arc::new(NamedServer { inner, expect });
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut cfg = match &self.0.identity {
            Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(cfg))
    }

    /// Whether `identity`'s certificate is one this CA issued for a server
    /// named `server` and valid now (a master checks its saved certificate
    /// with it at start).
    pub fn would_accept(&self, identity: &Identity, server: &str) -> bool {
        let Ok(inner) =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(self.roots()), provider()).build()
        else {
            return false;
        };
        let Ok(name) = ServerName::try_from(server.to_owned()) else {
            return false;
        };
        inner
            .verify_server_cert(&identity.chain[0], &identity.chain[1..], &name, &[], UnixTime::now())
            .is_ok()
    }

    /// The gRPC client side: verify the master as `master.mezzo`.
    pub fn grpc_tls(&self) -> tonic::transport::ClientTlsConfig {
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.0.ca_pem))
            .domain_name(super::principal::MASTER_DNS_NAME)
            .assume_http2(true);
        if let Some(id) = &self.0.identity {
            tls = tls.identity(tonic::transport::Identity::from_pem(&id.cert_pem, &id.key_pem));
        }
        tls
    }
}

/// Verifies the chain against the CA and the certificate against the name
/// of the expected principal, whatever address was dialled.
#[derive(Debug)]
struct NamedServer {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    expect: ServerName<'static>,
}

impl ServerCertVerifier for NamedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.expect, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
