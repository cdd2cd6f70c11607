//! Certificates for everything turnd serves over TLS (HTTPS, TURN over TLS,
//! the `auto` listener): PEM files from the operator, or a self-signed one
//! generated once and kept in the data dir (so its fingerprint stays put).
//!
//! Every TLS listener asks one [`Certs`] for the certificate at each
//! handshake, so [`Certs::reload`] (SIGHUP) swaps it for new connections
//! while established ones carry on. A new certificate that does not load
//! leaves the old one in place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

/// ALPN for HTTPS. HTTP/1.1 only: the page needs nothing more, and its
/// WebSocket upgrade is an HTTP/1.1 feature.
pub const ALPN_HTTP: &[u8] = b"http/1.1";
/// ALPN for TURN over TLS ([RFC 7443](https://www.rfc-editor.org/rfc/rfc7443)).
pub const ALPN_TURN: &[u8] = b"stun.turn";

/// The certificate in use and where it comes from.
pub struct Certs {
    cert: PathBuf,
    key: PathBuf,
    self_signed: bool,
    current: RwLock<Loaded>,
}

#[derive(Clone)]
struct Loaded {
    key: Arc<CertifiedKey>,
    fingerprint: String,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certs")
            .field("cert", &self.cert)
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl Certs {
    /// Reads a PEM chain and key.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<Self>> {
        let loaded = read(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            self_signed: false,
            current: RwLock::new(loaded),
        }))
    }

    /// The self-signed certificate in `dir`, generated for `hosts` when
    /// missing.
    pub fn self_signed(dir: &Path, hosts: &[String]) -> anyhow::Result<Arc<Self>> {
        let cert = dir.join("self-signed-cert.pem");
        let key = dir.join("self-signed-key.pem");
        if !cert.exists() || !key.exists() {
            let generated =
                rcgen::generate_simple_self_signed(hosts.to_vec()).context("cannot generate a certificate")?;
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create data dir {}", dir.display()))?;
            let _ = std::fs::remove_file(&key);
            crate::serve::write_private(&key, &generated.signing_key.serialize_pem())?;
            std::fs::write(&cert, generated.cert.pem()).with_context(|| format!("cannot write {}", cert.display()))?;
        }
        let loaded = read(&cert, &key)?;
        Ok(Arc::new(Self {
            cert,
            key,
            self_signed: true,
            current: RwLock::new(loaded),
        }))
    }

    /// Reads the files again. On success new handshakes use the new
    /// certificate and its fingerprint is returned; on failure the old one
    /// stays and the error says why.
    pub fn reload(&self) -> anyhow::Result<String> {
        let loaded = read(&self.cert, &self.key)?;
        let fp = loaded.fingerprint.clone();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        Ok(fp)
    }

    /// SHA-256 of the leaf certificate in use, `AB:CD:…`.
    pub fn fingerprint(&self) -> String {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .fingerprint
            .clone()
    }

    /// Whether this is the generated self-signed certificate.
    pub fn is_self_signed(&self) -> bool {
        self.self_signed
    }

    /// A rustls server configuration (TLS 1.2 and 1.3) that takes its
    /// certificate from `self` at every handshake and offers `alpn`.
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).key.clone())
    }
}

fn read(cert: &Path, key: &Path) -> anyhow::Result<Loaded> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad PEM in {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in {}", cert.display());
    let der = PrivateKeyDer::from_pem_file(key).with_context(|| format!("cannot read key {}", key.display()))?;
    let fingerprint = fingerprint(&chain[0]);
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, der, &provider).with_context(|| {
        format!(
            "certificate {} and key {} do not fit together",
            cert.display(),
            key.display()
        )
    })?;
    Ok(Loaded {
        key: Arc::new(certified),
        fingerprint,
    })
}

/// A client configuration (for `turnd probe` and tests): Mozilla's roots,
/// or with `insecure` any certificate (signatures still checked).
pub fn client_config(insecure: bool) -> Arc<rustls::ClientConfig> {
    client_config_for(insecure, rustls::DEFAULT_VERSIONS)
}

/// [`client_config`] offering only `versions` (tests check TLS 1.2 and 1.3
/// one at a time).
pub fn client_config_for(
    insecure: bool,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("the ring provider supports TLS 1.2 and 1.3");
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Arc::new(config)
}

/// `--insecure`: any certificate, signatures still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
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
        let a = Certs::self_signed(dir.path(), &["localhost".into()]).expect("generated");
        let b = Certs::self_signed(dir.path(), &["localhost".into()]).expect("reloaded");
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 32 * 3 - 1);
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
        let e = Certs::load(&dir.path().join("nope.pem"), &dir.path().join("nope.key")).expect_err("fails");
        assert!(format!("{e:#}").contains("nope.pem"), "{e:#}");
        std::fs::write(dir.path().join("empty.pem"), "").expect("write");
        let e = Certs::load(&dir.path().join("empty.pem"), &dir.path().join("nope.key")).expect_err("fails");
        assert!(format!("{e:#}").contains("no certificate"), "{e:#}");
    }

    #[test]
    fn reload_swaps_a_good_certificate_and_keeps_the_old_on_a_bad_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str| {
            let g = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("cert");
            std::fs::write(dir.path().join("c.pem"), g.cert.pem()).expect("write");
            std::fs::write(dir.path().join("k.pem"), g.signing_key.serialize_pem()).expect("write");
            g
        };
        write("a.example");
        let certs = Certs::load(&dir.path().join("c.pem"), &dir.path().join("k.pem")).expect("loads");
        let first = certs.fingerprint();
        let b = write("b.example");
        let second = certs.reload().expect("reloads");
        assert_ne!(first, second);
        assert_eq!(second, fingerprint(b.cert.der()));
        // A key that is not the certificate's: refused, the old one stays.
        let other = rcgen::generate_simple_self_signed(vec!["c.example".into()]).expect("cert");
        std::fs::write(dir.path().join("k.pem"), other.signing_key.serialize_pem()).expect("write");
        let e = certs.reload().expect_err("mismatch");
        assert!(format!("{e:#}").contains("do not fit together"), "{e:#}");
        std::fs::write(dir.path().join("c.pem"), "garbage").expect("write");
        assert!(certs.reload().is_err());
        assert_eq!(certs.fingerprint(), second);
    }
}
