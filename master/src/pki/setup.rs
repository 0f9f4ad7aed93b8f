//! What a master needs before it serves: the cluster CA (found in the PKI
//! dir, created on a new cluster's first start, or received by joining
//! with a master join token), its own certificate, and on a new cluster
//! the administrator's client configuration.
//!
//! ```text
//! <work dir>/tls/master.crt, master.key   this master's certificate (principal master:<member address>)
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use mezzo_proto::security::client_config::ClientConfig;
use mezzo_proto::security::join;
use mezzo_proto::security::token::{Grant, Token};
use mezzo_proto::security::{Credentials, Identity, Kind, Principal};

use super::{Authority, LEAF_VALIDITY, PkiError};

/// How a master secures itself (`mezzo master` flags).
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// Plain text and no authentication (`--insecure`).
    pub insecure: bool,
    /// The CA's directory, shared by the masters of one machine.
    pub pki_dir: PathBuf,
    /// Where a master that creates a new CA writes the administrator's
    /// client configuration (None: nowhere).
    pub client_config: Option<PathBuf>,
    /// A master join token, to get the CA and a certificate from a running
    /// cluster (another machine).
    pub join_token: Option<String>,
    /// GETs need no credential (`--anonymous-read`).
    pub anonymous_read: bool,
    /// Calls per second per principal; 0 for no limit.
    pub max_calls_per_second: u32,
    /// Connections open at once.
    pub max_connections: usize,
}

impl SecurityConfig {
    pub fn new(pki_dir: PathBuf) -> SecurityConfig {
        SecurityConfig {
            insecure: false,
            pki_dir,
            client_config: None,
            join_token: None,
            anonymous_read: false,
            max_calls_per_second: 5_000,
            max_connections: 16_384,
        }
    }
}

/// Why the master could not set up its TLS.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("{0}")]
    Tls(#[from] mezzo_proto::security::tls::TlsError),
    #[error("joining with the master join token: {0}")]
    Join(#[from] join::JoinError),
    #[error(
        "no CA in {pki} and --join names no master to get one from; \
         a master on a new machine joins with MEZZO_JOIN_TOKEN and --join"
    )]
    NoCa { pki: PathBuf },
    #[error("MEZZO_JOIN_TOKEN: {0}")]
    Token(String),
    #[error("{0}")]
    Config(#[from] mezzo_proto::security::client_config::ConfigError),
}

/// A master's TLS material.
#[derive(Debug)]
pub struct MasterTls {
    pub authority: Authority,
    /// The CA, this master's certificate and key.
    pub credentials: Credentials,
}

/// Prepares the CA and this master's certificate. `member` is this
/// master's member address (its principal's name); `hosts` what else its
/// certificate names (for browsers); `masters` every known master address
/// (for the client configuration, and to join).
pub async fn prepare(
    cfg: &SecurityConfig,
    work_dir: &Path,
    member: &str,
    hosts: &[String],
    masters: &[String],
) -> Result<MasterTls, SetupError> {
    let principal = Principal::new(Kind::Master, member).map_err(|e| SetupError::Token(e.to_string()))?;
    let tls_dir = work_dir.join("tls");
    let (authority, joined) = match (cfg.join_token.as_deref(), cfg.pki_dir.join("ca.crt").exists()) {
        (Some(token), false) => join_cluster(cfg, token, member, masters, &tls_dir).await?,
        (None, false) if !masters.iter().any(|m| m != member) || cfg.client_config.is_some() => {
            let (a, created) = Authority::load_or_create(&cfg.pki_dir)?;
            if created {
                tracing::info!(pki = %cfg.pki_dir.display(), fingerprint = a.fingerprint(), "created the cluster CA");
                if let Some(path) = &cfg.client_config {
                    write_admin_config(&a, path, masters)?;
                }
            }
            (a, false)
        }
        (None, false) => {
            return Err(SetupError::NoCa {
                pki: cfg.pki_dir.clone(),
            });
        }
        (_, true) => (Authority::load(&cfg.pki_dir)?, false),
    };
    let identity = if joined {
        load_identity(&tls_dir)?.ok_or_else(|| SetupError::Token("joined, but no certificate was saved".into()))?
    } else {
        own_identity(&authority, &principal, hosts, &tls_dir)?
    };
    let credentials = Credentials::new(authority.cert_pem())?.with_identity(identity);
    Ok(MasterTls { authority, credentials })
}

/// This master's certificate: the one in `dir` if the CA issued it for
/// this principal and it has a month left, else a new one.
fn own_identity(ca: &Authority, me: &Principal, hosts: &[String], dir: &Path) -> Result<Identity, SetupError> {
    if let Some(id) = load_identity(dir)? {
        let month = 30 * 24 * 3600;
        let fresh = id.info().not_after > mezzo_proto::clock::unix_now() as i64 + month;
        let ours =
            Credentials::new(ca.cert_pem())?.would_accept(&id, mezzo_proto::security::principal::MASTER_DNS_NAME);
        if id.principal() == me && fresh && ours {
            return Ok(id);
        }
    }
    let (issued, key) = ca.issue_with_key(me, hosts, LEAF_VALIDITY)?;
    save_identity(dir, &issued.cert_pem, &key)?;
    Ok(Identity::from_pem(&issued.cert_pem, &key)?)
}

fn load_identity(dir: &Path) -> Result<Option<Identity>, SetupError> {
    let (cert, key) = (dir.join("master.crt"), dir.join("master.key"));
    match (std::fs::read_to_string(&cert), std::fs::read_to_string(&key)) {
        (Ok(c), Ok(k)) => Ok(Identity::from_pem(&c, &k).ok()),
        _ => Ok(None),
    }
}

fn save_identity(dir: &Path, cert: &str, key: &str) -> Result<(), SetupError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| PkiError::Io {
            path: dir.to_owned(),
            source,
        })?;
    super::write_private(&dir.join("master.key"), key, 0o600)?;
    super::write_private(&dir.join("master.crt"), cert, 0o644)?;
    Ok(())
}

/// Gets the CA (with its keys) and a certificate from a running cluster.
async fn join_cluster(
    cfg: &SecurityConfig,
    token: &str,
    member: &str,
    masters: &[String],
    tls_dir: &Path,
) -> Result<(Authority, bool), SetupError> {
    match Token::parse(token).map(|t| t.grant) {
        Ok(Grant::Join { kind: Kind::Master, .. }) => {}
        Ok(_) => {
            return Err(SetupError::Token(
                "not a master join token (`mezzo token create --kind master`)".into(),
            ));
        }
        Err(e) => return Err(SetupError::Token(e.to_string())),
    }
    let others: Vec<String> = masters.iter().filter(|m| *m != member).cloned().collect();
    let host = hostname();
    let joined = join::join_patiently(&others, token, &host, member, Duration::from_secs(300)).await?;
    let files = joined
        .response
        .authority
        .ok_or_else(|| SetupError::Token("the cluster sent no CA keys to this master".into()))?;
    let authority = Authority::from_files(&files, &cfg.pki_dir)?;
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cfg.pki_dir)
            .map_err(|source| PkiError::Io {
                path: cfg.pki_dir.clone(),
                source,
            })?;
    }
    authority.save(&cfg.pki_dir)?;
    save_identity(tls_dir, &joined.response.cert, &joined.key_pem)?;
    tracing::info!(principal = %joined.response.principal, "joined the cluster: got its CA and a certificate");
    Ok((authority, true))
}

/// The administrator's client configuration, written when a new CA is
/// created: masters, CA, a `user:admin` certificate, and a join token for
/// agents on this machine. An existing file for another CA is kept as
/// `<file>.old`.
fn write_admin_config(ca: &Authority, path: &Path, masters: &[String]) -> Result<(), SetupError> {
    let admin = Principal::user(crate::auth::acl::ADMIN).map_err(|e| SetupError::Token(e.to_string()))?;
    let (issued, key) = ca.issue_with_key(&admin, &[], LEAF_VALIDITY)?;
    let agent_token = Token::issue(
        ca.data_key(),
        Grant::Join {
            kind: Kind::Agent,
            ca_fingerprint: ca.fingerprint().to_owned(),
        },
        0,
    )
    .map_err(|e| SetupError::Token(e.to_string()))?;
    if let Ok(old) = ClientConfig::load(path) {
        let backup = path.with_extension("toml.old");
        tracing::warn!(path = %path.display(), backup = %backup.display(), "replacing a client configuration of another CA");
        let _ = std::fs::rename(path, &backup);
        drop(old);
    }
    let cfg = ClientConfig {
        masters: masters.to_vec(),
        ca: ca.cert_pem().to_owned(),
        cert: Some(issued.cert_pem),
        key: Some(key),
        token: None,
        agent_join_token: Some(agent_token.reveal()),
        insecure: false,
    };
    cfg.save(path)?;
    tracing::info!(path = %path.display(), "wrote the administrator's client configuration (user:admin)");
    Ok(())
}

/// This machine's hostname, for certificates.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A master's certificate lasts this long; it is renewed at start when a
/// month is left.
pub const MASTER_VALIDITY: Duration = LEAF_VALIDITY;
