//! HTTPS certificates: PEM files from the operator, or a self-signed one
//! generated once and kept in the data dir (so its fingerprint stays put).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// A server certificate ready for rustls, and how to recognise it.
pub struct Identity {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate, `AB:CD:…`.
    pub fingerprint: String,
    pub self_signed: bool,
}

/// Reads a PEM chain and key.
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Identity> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad PEM in {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in {}", cert.display());
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("cannot read key {}", key.display()))?;
    let fingerprint = fingerprint(&chain[0]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| format!("certificate and key in {} do not fit together", cert.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Identity {
        config: Arc::new(config),
        fingerprint,
        self_signed: false,
    })
}

/// The self-signed certificate in `dir`, generated for `hosts` when missing.
pub fn self_signed(dir: &Path, hosts: &[String]) -> anyhow::Result<Identity> {
    let cert = dir.join("self-signed-cert.pem");
    let key = dir.join("self-signed-key.pem");
    if !cert.exists() || !key.exists() {
        let generated = rcgen::generate_simple_self_signed(hosts.to_vec()).context("cannot generate a certificate")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create data dir {}", dir.display()))?;
        crate::serve::write_private(&key, &generated.signing_key.serialize_pem())?;
        std::fs::write(&cert, generated.cert.pem()).with_context(|| format!("cannot write {}", cert.display()))?;
    }
    let mut id = load(&cert, &key)?;
    id.self_signed = true;
    Ok(id)
}

/// `AB:CD:…` SHA-256 of a DER certificate, as browsers show it.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = self_signed(dir.path(), &["localhost".into()]).expect("generated");
        let b = self_signed(dir.path(), &["localhost".into()]).expect("reloaded");
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint.len(), 32 * 3 - 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("self-signed-key.pem"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn mismatched_or_missing_files_are_explained() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = load(&dir.path().join("nope.pem"), &dir.path().join("nope.key"))
            .err()
            .expect("fails");
        assert!(format!("{e:#}").contains("nope.pem"), "{e:#}");
        std::fs::write(dir.path().join("empty.pem"), "").expect("write");
        let e = load(&dir.path().join("empty.pem"), &dir.path().join("nope.key"))
            .err()
            .expect("fails");
        assert!(format!("{e:#}").contains("no certificate"), "{e:#}");
    }
}
