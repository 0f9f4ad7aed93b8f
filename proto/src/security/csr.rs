//! A new key pair and a certificate signing request for it: what an agent,
//! a master or a user sends to join, so that its private key never leaves
//! its machine. The masters ignore everything in the request but the
//! public key; they decide the name and the validity themselves.

use rcgen::{CertificateParams, KeyPair};

/// A fresh ECDSA P-256 key (PEM) and a request (PEM) carrying its public key.
pub fn new_key_and_request() -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let csr = CertificateParams::new(Vec::<String>::new())?.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_request_parses_back() {
        let (key, csr) = super::new_key_and_request().expect("csr");
        assert!(key.contains("PRIVATE KEY"));
        assert!(rcgen::CertificateSigningRequestParams::from_pem(&csr).is_ok());
    }
}
