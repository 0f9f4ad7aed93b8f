//! The client configuration file: where the masters are and how to prove
//! who you are. The first start of a new cluster writes one for its
//! administrator (as K3s writes its kubeconfig), and the CLI, the SDK, the
//! agent and the frameworks find it without being told:
//!
//! 1. `$MEZZO_CLIENT_CONFIG`, if set;
//! 2. `$MEZZO_HOME/config.toml`, where `MEZZO_HOME` defaults to
//!    `$HOME/.mezzo`.
//!
//! `MEZZO_TOKEN` (a bearer token) overrides the file's credential, so a
//! secret never has to be typed on a command line.
//!
//! ```toml
//! masters = ["127.0.0.1:5050"]
//! ca = "-----BEGIN CERTIFICATE-----\n..."
//! cert = "-----BEGIN CERTIFICATE-----\n..."   # or: token = "mzt...."
//! key = "-----BEGIN PRIVATE KEY-----\n..."
//! agent_join_token = "mzj...."                 # lets a local agent join
//! ```

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::tls::{Credentials, Identity, TlsError};

/// Why the client configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no Mezzo client configuration at {0}: a master writes one on a new cluster's first start; \
         elsewhere ask an operator for one (`mezzo credential issue`), or set MEZZO_CLIENT_CONFIG"
    )]
    Missing(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Tls { path: PathBuf, source: TlsError },
    #[error("{path}: `cert` and `key` go together")]
    HalfIdentity { path: PathBuf },
}

/// The file's contents. PEM is inline, so one file is the whole credential.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Masters to try, in order (`host:port`).
    #[serde(default)]
    pub masters: Vec<String>,
    /// The cluster CA certificate (PEM).
    #[serde(default)]
    pub ca: String,
    /// This client's certificate (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// Its private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A bearer token, instead of a certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A join token for an agent on this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_join_token: Option<String>,
    /// The cluster runs without TLS (`--insecure`): talk plain text.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("masters", &self.masters)
            .field("cert", &self.cert.is_some())
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

/// `$MEZZO_HOME`, else `$HOME/.mezzo`, else `/var/lib/mezzo`.
pub fn mezzo_home() -> PathBuf {
    if let Some(h) = std::env::var_os("MEZZO_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Path::new(&home).join(".mezzo"),
        None => PathBuf::from("/var/lib/mezzo"),
    }
}

/// Where clients look for their configuration (see the module docs).
pub fn default_path() -> PathBuf {
    match std::env::var_os("MEZZO_CLIENT_CONFIG").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => mezzo_home().join("config.toml"),
    }
}

/// How a client talks to the cluster.
#[derive(Debug, Clone)]
pub enum Transport {
    /// TLS with these credentials.
    Tls(Credentials),
    /// Plain text, to a cluster started with `--insecure`.
    Plain,
}

impl Transport {
    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Transport::Tls(_) => "https",
            Transport::Plain => "http",
        }
    }

    pub fn credentials(&self) -> Option<&Credentials> {
        match self {
            Transport::Tls(c) => Some(c),
            Transport::Plain => None,
        }
    }

    /// How a client reaches the cluster, and the masters its
    /// configuration names: plain text when `MEZZO_INSECURE` is `1` or
    /// `true` (an `--insecure` cluster), else the client configuration
    /// found where clients look, with `MEZZO_TOKEN` applied.
    pub fn discover() -> Result<(Transport, Vec<String>), ConfigError> {
        if std::env::var("MEZZO_INSECURE").is_ok_and(|v| v == "1" || v == "true") {
            return Ok((Transport::Plain, Vec::new()));
        }
        let path = default_path();
        let cfg = ClientConfig::load(&path)?;
        Ok((cfg.transport(&path)?, cfg.masters))
    }
}

impl ClientConfig {
    pub fn load(path: &Path) -> Result<ClientConfig, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ConfigError::Missing(path.into())),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.into(),
                    source,
                });
            }
        };
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
    }

    /// Writes the file readable by its owner only (it holds a key), via a
    /// temporary file and a rename so a reader never sees half of it.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let err = |source| ConfigError::Write {
            path: path.into(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(err)?;
        }
        let text = toml::to_string(self).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        let tmp = path.with_extension("toml.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(b"# Mezzo client configuration: it holds a credential, keep it private.\n")
            .and_then(|()| f.write_all(text.as_bytes()))
            .and_then(|()| f.sync_all())
            .map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// The transport this file describes; `MEZZO_TOKEN` replaces its
    /// credential.
    pub fn transport(&self, path: &Path) -> Result<Transport, ConfigError> {
        if self.insecure {
            return Ok(Transport::Plain);
        }
        let tls = |source| ConfigError::Tls {
            path: path.into(),
            source,
        };
        let mut creds = Credentials::new(&self.ca).map_err(tls)?;
        let env_token = std::env::var("MEZZO_TOKEN").ok().filter(|t| !t.trim().is_empty());
        if let Some(token) = env_token.or_else(|| self.token.clone()) {
            return Ok(Transport::Tls(creds.with_token(token.trim())));
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => creds = creds.with_identity(Identity::from_pem(cert, key).map_err(tls)?),
            (None, None) => {}
            _ => return Err(ConfigError::HalfIdentity { path: path.into() }),
        }
        Ok(Transport::Tls(creds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_says_where_it_looked() {
        let err = ClientConfig::load(Path::new("/nonexistent/mezzo/config.toml")).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/mezzo/config.toml"), "{err}");
    }

    #[test]
    fn saved_files_are_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/config.toml");
        let cfg = ClientConfig {
            masters: vec!["127.0.0.1:5050".into()],
            insecure: true,
            ..Default::default()
        };
        cfg.save(&path).expect("save");
        assert_eq!(ClientConfig::load(&path).expect("load"), cfg);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(cfg.transport(&path), Ok(Transport::Plain)));
    }

    #[test]
    fn unknown_keys_and_half_identities_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "mastrs = []\n").expect("write");
        assert!(matches!(ClientConfig::load(&path), Err(ConfigError::Parse { .. })));
        let half = ClientConfig {
            ca: String::new(),
            cert: Some("x".into()),
            ..Default::default()
        };
        assert!(half.transport(&path).is_err());
    }
}
