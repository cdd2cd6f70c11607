//! The people-facing side, in the same process as the relay: the signaling
//! page (assets embedded in the binary), `GET /api/ice` handing out
//! short-lived TURN credentials, `GET /ws` signaling rooms and `GET /healthz`.
//! It runs as turnd's tasks ([`crate::lifecycle`]); the relay workers never
//! wait on it.

mod api;
mod listener;
pub mod ops;
pub mod rooms;
mod ws;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
pub use listener::Remote;
use rand::Rng;

use crate::config::{Access, Http};
use crate::lifecycle::Tasks;
use crate::secret::Secret;

/// What the HTTP side needs from the rest of turnd.
pub struct PageSpec {
    pub cfg: Http,
    /// Where a generated access key and certificate are kept.
    pub data_dir: std::path::PathBuf,
    /// Host name or address for URLs (`public-host`, else external IP, else
    /// a host address).
    pub public_host: String,
    /// Where the relay listens, for `stun:`/`turn:`/`turns:` URLs.
    pub endpoints: crate::serve::Endpoints,
    /// The certificate for HTTPS listeners (needed when there are any).
    pub certs: Option<Arc<crate::tls::Certs>>,
    /// HTTP connections arriving on `auto` listeners: served when inside
    /// TLS, redirected to HTTPS when plain.
    pub handed: tokio::sync::mpsc::Receiver<crate::net::stream::HttpConn>,
    /// `/metrics` on the page's listeners too (`metrics.on-http`), with
    /// its optional token.
    pub metrics: Option<(Arc<crate::metrics::Source>, Option<Secret>)>,
    /// The REST secret credentials are minted with.
    pub secret: Secret,
    pub separator: char,
    /// The relay workers, asked what they know of the page's allocations
    /// (`/api/turn-status`).
    pub workers: Arc<crate::net::Workers>,
    /// The fleet: `/api/ice` may send clients to a sibling, and siblings
    /// read this node's status at `/api/cluster`.
    pub cluster: Option<Arc<crate::cluster::node::Cluster>>,
}

/// The running HTTP side.
pub struct Page {
    /// Bound plain HTTP and HTTPS addresses.
    pub http: Vec<SocketAddr>,
    pub https: Vec<SocketAddr>,
    /// The access key (None with `access = "open"`).
    pub access_key: Option<Secret>,
    /// `auto` listeners that serve the page, for join links.
    auto: Vec<SocketAddr>,
    public_host: String,
}

/// Shared by every request.
pub(crate) struct AppState {
    access_key: Option<Secret>,
    ice: api::IceSource,
    ice_limiter: governor::DefaultKeyedRateLimiter<IpAddr>,
    hub: ws::Hub,
    ws_rate: u32,
    /// How often WebSockets are pinged: often enough that the idle timeout
    /// never cuts a live one.
    ws_ping: Duration,
    /// Origins besides the page's own whose pages may open `/ws`.
    allowed_origins: Vec<String>,
    metrics: Option<(Arc<crate::metrics::Source>, Option<Secret>)>,
    workers: Arc<crate::net::Workers>,
    separator: char,
    cluster: Option<Arc<crate::cluster::node::Cluster>>,
}

/// Runs `f` every `period` while the page serves.
fn every(tasks: &Tasks, period: Duration, f: impl Fn() + Send + 'static) {
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            f();
        }
    });
}

/// Binds every HTTP and HTTPS listener and starts serving as `tasks` (until
/// they are cancelled). Nothing runs if a bind fails.
pub fn start(spec: PageSpec, tasks: &Tasks) -> anyhow::Result<Page> {
    let cfg = &spec.cfg;
    let access_key = match (cfg.access, &cfg.access_key) {
        (Access::Open, _) => None,
        (Access::Key, Some(k)) => Some(k.clone()),
        (Access::Key, None) => Some(generated_key(&spec.data_dir)?),
    };
    let https = match (&spec.certs, cfg.https_listen.is_empty()) {
        (_, true) => None,
        (Some(c), false) => Some(tokio_rustls::TlsAcceptor::from(
            c.server_config(&[crate::tls::ALPN_HTTP]),
        )),
        (None, false) => anyhow::bail!("HTTPS listeners need a certificate"),
    };
    let state = Arc::new(AppState {
        access_key: access_key.clone(),
        ice: api::IceSource::new(&spec),
        ice_limiter: governor::RateLimiter::keyed(api::ice_quota(cfg.ice_requests_per_minute)),
        hub: ws::Hub::new(cfg.room_size),
        ws_rate: cfg.ws_messages_per_second,
        ws_ping: ws::ping_interval(cfg.idle_timeout),
        allowed_origins: cfg.allowed_origins.clone(),
        metrics: spec.metrics.clone(),
        workers: spec.workers.clone(),
        separator: spec.separator,
        cluster: spec.cluster.clone(),
    });
    let gate = crate::net::tcp::Gate::new(cfg.max_connections, cfg.max_connections_per_address);
    let timeouts = listener::Timeouts {
        header: cfg.header_timeout,
        idle: cfg.idle_timeout,
    };
    let guard = tasks.handle().enter();
    let mut bound = (Vec::new(), Vec::new());
    let mut listeners = Vec::new();
    for (addr, tls) in cfg
        .listen
        .iter()
        .map(|a| (a, false))
        .chain(cfg.https_listen.iter().map(|a| (a, true)))
    {
        let scheme = if tls { "https" } else { "http" };
        let l = bind(*addr).with_context(|| format!("cannot listen for {scheme} on {addr}"))?;
        if tls { &mut bound.1 } else { &mut bound.0 }.push(l.local_addr()?);
        listeners.push((l, https.clone().filter(|_| tls)));
    }
    // Only once every bind worked: nothing runs if one fails.
    let app = api::router(state.clone());
    for (l, tls) in listeners {
        listener::serve_listener(tasks, l, tls, app.clone(), gate.clone(), timeouts);
    }
    let plain = listener::redirect_to_https(spec.public_host.clone());
    listener::serve_handed(tasks, spec.handed, app, plain, gate.clone(), timeouts);
    let limiter_state = state.clone();
    every(tasks, Duration::from_secs(60), move || {
        limiter_state.ice_limiter.retain_recent()
    });
    // Participants that did not resume in time leave their rooms.
    let hub_state = state.clone();
    every(tasks, Duration::from_secs(1), move || hub_state.hub.expire());
    drop(guard);
    Ok(Page {
        http: bound.0,
        https: bound.1,
        access_key,
        auto: spec
            .endpoints
            .streams
            .iter()
            .filter(|(_, k)| *k == crate::config::ListenTransport::Auto)
            .map(|(a, _)| *a)
            .collect(),
        public_host: spec.public_host,
    })
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::from_std(crate::net::tcp::bind(addr)?)
}

/// The access key kept in `dir`, generated when missing.
fn generated_key(dir: &Path) -> anyhow::Result<Secret> {
    let (key, created) = crate::serve::load_or_create(&dir.join("access-key"), || {
        let bytes: [u8; 16] = rand::rng().random();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    })?;
    if created {
        tracing::info!(path = %dir.join("access-key").display(), "generated an access key for the page");
    }
    Ok(Secret::new(key))
}

impl Page {
    /// Links to the page, with the access key, one per listener. Listeners
    /// on a wildcard address are shown with the public host.
    pub fn join_links(&self) -> Vec<String> {
        let query = self
            .access_key
            .as_ref()
            .map(|k| format!("?key={}", k.expose()))
            .unwrap_or_default();
        let host = |a: &SocketAddr| {
            if a.ip().is_unspecified() {
                format!("{}:{}", self.public_host, a.port())
            } else {
                a.to_string()
            }
        };
        let http = self.http.iter().map(|a| format!("http://{}/{query}", host(a)));
        let https = self.https.iter().chain(&self.auto).map(|a| {
            if a.port() == 443 {
                format!("https://{}/{query}", host(a).trim_end_matches(":443"))
            } else {
                format!("https://{}/{query}", host(a))
            }
        });
        // 0.0.0.0:443 and [::]:443 are one link.
        let mut links: Vec<String> = Vec::new();
        for l in http.chain(https) {
            if !links.contains(&l) {
                links.push(l);
            }
        }
        links
    }
}
