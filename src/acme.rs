//! Certificates by ACME ([RFC 8555](https://www.rfc-editor.org/rfc/rfc8555)),
//! inside turnd: an account and the certificate it was issued are kept in
//! the data directory and reused across restarts; a background task orders
//! a certificate when there is none and renews it when a third of its
//! lifetime is left (or `acme.renew-before`), answering the CA's challenge
//! itself — TLS-ALPN-01 ([RFC 8737](https://www.rfc-editor.org/rfc/rfc8737))
//! on the TLS listeners through [`Certs::set_challenge`], or HTTP-01 on
//! `acme.http-listen` ([`http01_router`]). A new certificate serves new
//! handshakes at once ([`Certs::install`]); connections already up keep
//! theirs. A failed order keeps the certificate in use, says why in one log
//! line and tries again with a growing pause (30 s doubling to an hour).
//! The protocol is the `instant-acme` crate's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

use crate::config::AcmeChallenge;
use crate::lifecycle::Tasks;
use crate::tls::{Certs, Source};

/// The shortest pause between two orders, and the first after a failure.
const MIN_PAUSE: Duration = Duration::from_secs(10);
const FIRST_RETRY: Duration = Duration::from_secs(30);
const MAX_RETRY: Duration = Duration::from_secs(3600);

/// What the ACME task needs, from `[acme]`.
#[derive(Debug, Clone)]
pub struct AcmeSpec {
    pub directory: String,
    pub email: Option<String>,
    pub domains: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub renew_before: Option<Duration>,
    pub challenge: AcmeChallenge,
    /// `data-dir/acme`: the account and the certificate.
    pub dir: PathBuf,
}

impl AcmeSpec {
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// One account per CA directory.
    fn account_path(&self) -> PathBuf {
        let id: String = Sha256::digest(self.directory.as_bytes())
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir.join(format!("account-{id}.json"))
    }
}

/// HTTP-01 key authorizations by token, while their challenges are up.
#[derive(Debug, Default)]
pub struct Tokens(RwLock<HashMap<String, String>>);

impl Tokens {
    fn insert(&self, token: String, key_authorization: String) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, key_authorization);
    }

    fn clear(&self) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn get(&self, token: &str) -> Option<String> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).get(token).cloned()
    }
}

/// `acme.http-listen`: `/.well-known/acme-challenge/TOKEN` answered while
/// its challenge is up, everything else redirected to HTTPS.
pub fn http01_router(tokens: Arc<Tokens>) -> Router {
    Router::new()
        .route("/.well-known/acme-challenge/{token}", get(challenge))
        .fallback(redirect)
        .with_state(tokens)
}

async fn challenge(State(tokens): State<Arc<Tokens>>, UrlPath(token): UrlPath<String>) -> Response {
    match tokens.get(&token) {
        Some(k) => ([(header::CONTENT_TYPE, "application/octet-stream")], k).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn redirect(headers: HeaderMap, uri: Uri) -> Response {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    // The host without the plain-HTTP port; HTTPS on its default one.
    let host = match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, format!("https://{host}{path}"))],
    )
        .into_response()
}

/// Runs the ACME task until turnd stops.
pub fn start(spec: AcmeSpec, certs: Arc<Certs>, tokens: Arc<Tokens>, tasks: &Tasks) {
    tasks.spawn(run(spec, certs, tokens));
}

/// When the certificate in use should be replaced, Unix seconds: now if it
/// is not one the CA issued; else `renew_before` before it expires when
/// the operator set it; else within the CA's suggested window (`ari`, RFC
/// 9773: `pick` in 0..=1 chooses the moment, uniformly) when it gave one;
/// else when a third of its lifetime is left.
pub fn due(certs: &Certs, renew_before: Option<Duration>, ari: Option<(i64, i64)>, pick: f64) -> i64 {
    if certs.source() != Source::Acme {
        return 0;
    }
    let (not_before, not_after) = certs.validity();
    match (renew_before, ari) {
        (Some(d), _) => not_after - d.as_secs() as i64,
        (None, Some((start, end))) if start <= end => start + ((end - start) as f64 * pick.clamp(0.0, 1.0)) as i64,
        _ => not_after - (not_after - not_before) / 3,
    }
}

/// The CA's suggested renewal window for the certificate in use (RFC 9773
/// ACME Renewal Information), Unix seconds, and when to ask again; `None`
/// when the CA has none for it or cannot be asked.
async fn renewal_window(spec: &AcmeSpec, certs: &Certs) -> Option<((i64, i64), Duration)> {
    if spec.renew_before.is_some() || certs.source() != Source::Acme {
        return None;
    }
    let leaf = certs.leaf()?;
    let id = instant_acme::CertificateIdentifier::try_from(&leaf).ok()?;
    let ask = async {
        let account = account(spec).await.ok()?;
        account.renewal_info(&id).await.ok()
    };
    let (info, again) = tokio::time::timeout(Duration::from_secs(15), ask).await.ok()??;
    let w = info.suggested_window;
    Some((
        (w.start.unix_timestamp(), w.end.unix_timestamp()),
        again.clamp(Duration::from_secs(3600), Duration::from_secs(24 * 3600)),
    ))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

async fn run(spec: AcmeSpec, certs: Arc<Certs>, tokens: Arc<Tokens>) {
    let mut retry = FIRST_RETRY;
    let mut last_order: Option<tokio::time::Instant> = None;
    // Where in the CA's window to renew, drawn once per certificate.
    let mut pick: f64 = rand::random();
    loop {
        let window = renewal_window(&spec, &certs).await;
        let due_at = due(&certs, spec.renew_before, window.map(|(w, _)| w), pick);
        let left = due_at - unix_now();
        if left > 0 {
            // Not due: sleep until it is, or until the CA's window should
            // be asked for again.
            let wait = Duration::from_secs(left as u64);
            let wait = window.map_or(wait, |(_, again)| wait.min(again));
            tracing::debug!(in_seconds = wait.as_secs(), ari = window.is_some(), "next ACME check");
            tokio::time::sleep(wait).await;
            continue;
        }
        if let Some(at) = last_order {
            tokio::time::sleep_until(at + MIN_PAUSE).await;
        }
        last_order = Some(tokio::time::Instant::now());
        match obtain(&spec, &certs, &tokens).await {
            Ok(fingerprint) => {
                certs.orders[0].fetch_add(1, Ordering::Relaxed);
                retry = FIRST_RETRY;
                pick = rand::random();
                let (_, not_after) = certs.validity();
                tracing::info!(
                    domains = ?spec.domains,
                    ca = %spec.directory,
                    fingerprint,
                    expires = %crate::tls::date(not_after),
                    "certificate issued: new TLS connections use it"
                );
            }
            Err(e) => {
                certs.orders[1].fetch_add(1, Ordering::Relaxed);
                // The CA's rate limit: no sooner than the longest pause.
                if format!("{e:#}").contains("rateLimited") {
                    retry = MAX_RETRY;
                }
                tracing::warn!(
                    domains = ?spec.domains,
                    ca = %spec.directory,
                    retry_in_seconds = retry.as_secs(),
                    "ACME order failed, the certificate in use stays: {e:#}"
                );
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}

/// The account for `spec.directory`: stored, or created and stored.
async fn account(spec: &AcmeSpec) -> anyhow::Result<Account> {
    let builder = || match &spec.ca_file {
        Some(f) => Account::builder_with_root(f).with_context(|| format!("acme.ca-file {}", f.display())),
        None => Account::builder().context("the system's root certificates"),
    };
    let path = spec.account_path();
    if let Ok(text) = std::fs::read_to_string(&path) {
        let creds: AccountCredentials = serde_json::from_str(&text)
            .with_context(|| format!("cannot read the ACME account in {}", path.display()))?;
        return builder()?
            .from_credentials(creds)
            .await
            .with_context(|| format!("the ACME account in {}", path.display()));
    }
    let contact = spec.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount {
        contact: &contacts,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, creds) = builder()?
        .create(&new, spec.directory.clone(), None)
        .await
        .with_context(|| format!("cannot create an account at {}", spec.directory))?;
    std::fs::create_dir_all(&spec.dir).with_context(|| format!("cannot create {}", spec.dir.display()))?;
    crate::secret::write_private(&path, &serde_json::to_string(&creds)?)?;
    Ok(account)
}

/// Orders a certificate for `spec.domains`, answers the challenges, stores
/// the result and installs it; its fingerprint.
async fn obtain(spec: &AcmeSpec, certs: &Certs, tokens: &Tokens) -> anyhow::Result<String> {
    let account = account(spec).await?;
    let ids: Vec<Identifier> = spec.domains.iter().map(|d| Identifier::Dns(d.clone())).collect();
    let mut order = account.new_order(&NewOrder::new(&ids)).await.context("new order")?;
    let mut names = Vec::new();
    let issued = answer_and_finalize(spec, &mut order, certs, tokens, &mut names).await;
    for n in &names {
        certs.clear_challenge(n);
    }
    tokens.clear();
    let (chain, key) = issued?;
    std::fs::create_dir_all(&spec.dir).with_context(|| format!("cannot create {}", spec.dir.display()))?;
    let (cert_path, key_path) = (spec.cert_path(), spec.key_path());
    let (cert_new, key_new) = (cert_path.with_extension("pem.new"), key_path.with_extension("pem.new"));
    let _ = std::fs::remove_file(&key_new);
    crate::secret::write_private(&key_new, &key)?;
    std::fs::write(&cert_new, chain).with_context(|| format!("cannot write {}", cert_new.display()))?;
    // Checked before it replaces anything.
    let fingerprint = certs
        .install(&cert_new, &key_new, Source::Acme)
        .context("the issued certificate does not load")?;
    std::fs::rename(&key_new, &key_path).with_context(|| format!("cannot write {}", key_path.display()))?;
    std::fs::rename(&cert_new, &cert_path).with_context(|| format!("cannot write {}", cert_path.display()))?;
    certs.install(&cert_path, &key_path, Source::Acme)?;
    Ok(fingerprint)
}

/// The order's challenges answered, then the certificate: its chain and
/// private key, PEM. `names` gets every TLS-ALPN-01 name put up.
async fn answer_and_finalize(
    spec: &AcmeSpec,
    order: &mut instant_acme::Order,
    certs: &Certs,
    tokens: &Tokens,
    names: &mut Vec<String>,
) -> anyhow::Result<(String, String)> {
    let kind = match spec.challenge {
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        AcmeChallenge::Http01 => ChallengeType::Http01,
    };
    let mut authorizations = order.authorizations();
    while let Some(a) = authorizations.next().await {
        let mut a = a.context("authorization")?;
        match a.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            s => bail!("authorization for {} is {s:?}", a.identifier()),
        }
        let name = a.identifier().to_string();
        let mut ch = a
            .challenge(kind.clone())
            .ok_or_else(|| anyhow!("the CA offers no {} challenge for {name}", spec.challenge))?;
        let key_authorization = ch.key_authorization();
        match spec.challenge {
            AcmeChallenge::TlsAlpn01 => {
                certs.set_challenge(&name, alpn_certificate(&name, key_authorization.digest().as_ref())?);
                names.push(name.clone());
            }
            AcmeChallenge::Http01 => tokens.insert(ch.token.clone(), key_authorization.as_str().to_string()),
        }
        ch.set_ready().await.with_context(|| format!("challenge for {name}"))?;
    }
    let status = order
        .poll_ready(&RetryPolicy::new())
        .await
        .context("waiting for validation")?;
    if status != OrderStatus::Ready {
        bail!("the order is {status:?}: {}", failure(order).await);
    }
    let key = order.finalize().await.context("finalize")?;
    let chain = order
        .poll_certificate(&RetryPolicy::new())
        .await
        .context("waiting for the certificate")?;
    Ok((chain, key))
}

/// What the CA said about the challenges that failed.
async fn failure(order: &mut instant_acme::Order) -> String {
    let mut out = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(a)) = authorizations.next().await {
        for c in &a.challenges {
            if let Some(p) = &c.error {
                out.push(format!(
                    "{}: {} ({})",
                    a.identifier(),
                    p.detail.as_deref().unwrap_or("no detail"),
                    p.r#type.as_deref().unwrap_or("no type")
                ));
            }
        }
    }
    if out.is_empty() {
        "no reason given".into()
    } else {
        out.join("; ")
    }
}

/// The TLS-ALPN-01 certificate for `name` (RFC 8737 §3): self-signed,
/// the name alone, the key authorization's SHA-256 in the critical
/// acmeIdentifier extension.
fn alpn_certificate(name: &str, digest: &[u8]) -> anyhow::Result<Arc<CertifiedKey>> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).context("challenge certificate")?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().context("challenge key")?;
    let cert = params.self_signed(&key).context("challenge certificate")?;
    let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| anyhow!("{e}"))?;
    // Not CertifiedKey::from_der: its check parses the certificate with
    // webpki, which refuses the critical acmeIdentifier extension.
    let signer = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(der)
        .context("challenge key")?;
    Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone()], signer)))
}

/// For `turnd check-config` and the startup output: what ACME will do.
pub fn describe(spec: &AcmeSpec, stored: &Path) -> String {
    let have = if stored.exists() {
        "a stored certificate is reused until it is due"
    } else {
        "the first certificate is ordered at start (self-signed until then)"
    };
    format!(
        "{} for {} from {}; {have}",
        spec.challenge,
        spec.domains.join(", "),
        spec.directory
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate from the CA valid 2026-01-01 to 2026-04-01 (90 days).
    fn issued(dir: &Path) -> Arc<Certs> {
        let mut params = rcgen::CertificateParams::new(vec!["turn.example.org".to_string()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2026, 4, 1);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write");
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write");
        Certs::acme(&dir.join("cert.pem"), &dir.join("key.pem"), dir, &[]).expect("loads")
    }

    #[test]
    fn renewal_is_due_as_the_operator_the_ca_or_the_lifetime_says() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = issued(dir.path());
        assert_eq!(certs.source(), Source::Acme);
        let (not_before, not_after) = certs.validity();
        assert_eq!(not_after - not_before, 90 * 86400);
        // A third of the lifetime left.
        assert_eq!(due(&certs, None, None, 0.5), not_after - 30 * 86400);
        // The CA's window (RFC 9773), at the drawn point.
        let window = (not_after - 20 * 86400, not_after - 10 * 86400);
        assert_eq!(due(&certs, None, Some(window), 0.0), window.0);
        assert_eq!(due(&certs, None, Some(window), 0.5), not_after - 15 * 86400);
        assert_eq!(due(&certs, None, Some(window), 1.0), window.1);
        // The operator's renew-before wins.
        let week = Duration::from_secs(7 * 86400);
        assert_eq!(due(&certs, Some(week), Some(window), 0.5), not_after - 7 * 86400);
        // A certificate not from the CA: due now.
        let other = Certs::self_signed(dir.path(), &["x.example".into()]).expect("self-signed");
        assert_eq!(due(&other, None, None, 0.5), 0);
    }

    #[test]
    fn the_challenge_certificate_carries_the_key_authorization() {
        let digest = [7u8; 32];
        let key = alpn_certificate("turn.example.org", &digest).expect("certificate");
        let der = &key.cert[0];
        let (_, c) = x509_parser::parse_x509_certificate(der).expect("parses");
        // id-pe-acmeIdentifier (1.3.6.1.5.5.7.1.31), critical, OCTET STRING of the digest.
        let ext = c
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier");
        assert!(ext.critical);
        assert_eq!(&ext.value[2..], &digest);
        let names = crate::tls::describe(der).expect("describe").2;
        assert_eq!(names, ["turn.example.org"]);
    }
}
