//! The cluster's certificate authority. The first master of a new cluster
//! creates it in its PKI dir; every master holds it (a master that joins
//! from another machine receives it with its own certificate), so any
//! leader can admit an agent. Certificates name a [`Principal`] in a
//! `mezzo://` URI and carry the DNS names clients verify servers against
//! (see `mezzo_proto::security::principal`).
//!
//! ```text
//! <pki dir>/            mode 0700; default $MEZZO_HOME/pki, shared by the masters of one machine
//! ├── ca.crt            the CA certificate (PEM)
//! ├── ca.key            its private key (PEM, 0600)
//! ├── data.key          the key that encrypts secrets in the registry (hex, 0600)
//! └── lock              held while the files above are first created
//! ```

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use mezzo_proto::security::join::AuthorityFiles;
use mezzo_proto::security::principal::MASTER_DNS_NAME;
use mezzo_proto::security::token::fingerprint;
use mezzo_proto::security::{CertInfo, Kind, Principal};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};

/// How long the CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Default validity of a master's, agent's or user's certificate.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Leeway for clocks a little behind the issuer's.
const BACKDATE: Duration = Duration::from_secs(300);

/// Why the CA could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("certificate signing request: {0}")]
    Request(String),
    #[error("the system random generator failed")]
    Random,
    #[error("validity of {0:?} is out of range")]
    Validity(Duration),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A certificate just issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub info: CertInfo,
}

/// The CA: its certificate and signing key, and the data key.
pub struct Authority {
    cert_pem: String,
    fingerprint: String,
    issuer: Issuer<'static, KeyPair>,
    data_key: [u8; 32],
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn random<const N: usize>() -> Result<[u8; N], PkiError> {
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).map_err(|_| PkiError::Random)?;
    Ok(b)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

pub(crate) fn write_private(path: &Path, text: &str, mode: u32) -> Result<(), PkiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn offset(t: SystemTime) -> Result<time::OffsetDateTime, PkiError> {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| PkiError::Validity(Duration::ZERO))?
        .as_secs();
    time::OffsetDateTime::from_unix_timestamp(secs as i64).map_err(|_| PkiError::Validity(Duration::ZERO))
}

/// Valid from a little before now for `validity`; a validity of zero gives
/// a certificate that has already expired (for tests of expiry).
fn window(p: &mut CertificateParams, validity: Duration) -> Result<(), PkiError> {
    let now = SystemTime::now();
    if validity.is_zero() {
        p.not_before = offset(now - 2 * BACKDATE)?;
        p.not_after = offset(now - BACKDATE)?;
        return Ok(());
    }
    let end = now.checked_add(validity).ok_or(PkiError::Validity(validity))?;
    p.not_before = offset(now - BACKDATE)?;
    p.not_after = offset(end)?;
    Ok(())
}

fn serial() -> Result<SerialNumber, PkiError> {
    let mut b = random::<16>()?;
    b[0] &= 0x7f; // a positive INTEGER
    b[0] |= 0x01; // and a fixed length, so the hex form is stable
    Ok(SerialNumber::from(b.to_vec()))
}

fn ia5(s: &str) -> Result<rcgen::string::Ia5String, PkiError> {
    s.try_into().map_err(PkiError::Rcgen)
}

impl Authority {
    /// A new CA with a random name (two clusters never trust each other).
    pub fn generate() -> Result<Authority, PkiError> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("Mezzo cluster CA {}", hex(&random::<4>()?)));
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.serial_number = Some(serial()?);
        window(&mut p, CA_VALIDITY)?;
        let cert = p.self_signed(&key)?;
        let files = AuthorityFiles {
            ca_cert: cert.pem(),
            ca_key: key.serialize_pem(),
            data_key: hex(&random::<32>()?),
        };
        Authority::from_files(&files, Path::new("<new CA>"))
    }

    /// The CA from its PEM files.
    pub fn from_files(files: &AuthorityFiles, path: &Path) -> Result<Authority, PkiError> {
        let invalid = |message: String| PkiError::Invalid {
            path: path.to_owned(),
            message,
        };
        let key = KeyPair::from_pem(&files.ca_key).map_err(|e| invalid(format!("CA key: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(&files.ca_cert, key).map_err(|e| invalid(format!("CA cert: {e}")))?;
        let der =
            mezzo_proto::security::tls::certs_from_pem("CA", &files.ca_cert).map_err(|e| invalid(e.to_string()))?;
        let data_key = unhex32(&files.data_key).ok_or_else(|| invalid("data key: not 64 hex digits".into()))?;
        Ok(Authority {
            cert_pem: files.ca_cert.clone(),
            fingerprint: fingerprint(&der[0]),
            issuer,
            data_key,
        })
    }

    /// Reads the CA from `dir`, creating it if the dir holds none. The
    /// masters of one machine share the dir, so creation runs under a lock
    /// and the second master finds the first one's CA.
    pub fn load_or_create(dir: &Path) -> Result<(Authority, bool), PkiError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        let lock_path = dir.join("lock");
        let file = std::fs::File::create(&lock_path).map_err(io(&lock_path))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| io(&lock_path)(errno.into()))?;
        let result = if dir.join("ca.crt").exists() {
            Authority::load(dir).map(|a| (a, false))
        } else {
            let a = Authority::generate()?;
            a.save(dir)?;
            Ok((a, true))
        };
        drop(lock);
        result
    }

    /// Reads the CA from `dir`.
    pub fn load(dir: &Path) -> Result<Authority, PkiError> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read_to_string(&p).map_err(io(&p))
        };
        let files = AuthorityFiles {
            ca_cert: read("ca.crt")?,
            ca_key: read("ca.key")?,
            data_key: read("data.key")?,
        };
        Authority::from_files(&files, dir)
    }

    /// Writes the CA into `dir` (as [`Authority::load`] reads it).
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        let files = self.files();
        write_private(&dir.join("ca.key"), &files.ca_key, 0o600)?;
        write_private(&dir.join("data.key"), &files.data_key, 0o600)?;
        write_private(&dir.join("ca.crt"), &files.ca_cert, 0o644)
    }

    pub fn files(&self) -> AuthorityFiles {
        AuthorityFiles {
            ca_cert: self.cert_pem.clone(),
            ca_key: self.issuer.key().serialize_pem(),
            data_key: hex(&self.data_key),
        }
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// SHA-256 of the CA certificate, as join tokens carry it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The key that seals secrets in the registry.
    pub fn data_key(&self) -> &[u8; 32] {
        &self.data_key
    }

    /// Signs a certificate for `principal` over the public key of a PEM
    /// signing request. Only the key is taken from the request: the name,
    /// usages and validity are the CA's decision. `hosts` adds DNS names or
    /// IP addresses a server may also be reached at (for browsers).
    pub fn issue(
        &self,
        principal: &Principal,
        csr_pem: &str,
        hosts: &[String],
        validity: Duration,
    ) -> Result<Issued, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| PkiError::Request(e.to_string()))?;
        self.sign(principal, &csr.public_key, hosts, validity)
    }

    /// Issues a certificate and a new key for `principal` (the CA's own
    /// masters, and credentials handed out whole).
    pub fn issue_with_key(
        &self,
        principal: &Principal,
        hosts: &[String],
        validity: Duration,
    ) -> Result<(Issued, String), PkiError> {
        let key = KeyPair::generate()?;
        let issued = self.sign(principal, &key, hosts, validity)?;
        Ok((issued, key.serialize_pem()))
    }

    fn sign(
        &self,
        principal: &Principal,
        key: &impl PublicKeyData,
        hosts: &[String],
        validity: Duration,
    ) -> Result<Issued, PkiError> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, principal.name());
        dn.push(DnType::OrganizationalUnitName, principal.kind().as_str());
        p.distinguished_name = dn;
        p.serial_number = Some(serial()?);
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let mut sans = vec![SanType::URI(ia5(&principal.uri())?)];
        if let Some(dns) = principal.dns_name() {
            p.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
            sans.push(SanType::DnsName(ia5(&dns)?));
            if principal.kind() == Kind::Master {
                sans.push(SanType::DnsName(ia5("localhost")?));
            }
            for h in hosts {
                let h = h.trim();
                if h.is_empty() || h == MASTER_DNS_NAME {
                    continue;
                }
                sans.push(match h.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(ia5(h)?),
                });
            }
        }
        p.subject_alt_names = sans;
        window(&mut p, validity)?;
        let cert = p.signed_by(key, &self.issuer)?;
        let info = CertInfo::read(cert.der()).map_err(|e| PkiError::Request(e.to_string()))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            info,
        })
    }
}

pub mod setup;

#[cfg(test)]
mod tests;
