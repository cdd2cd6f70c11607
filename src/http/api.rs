//! Routes: the page and its assets, `/api/ice`, `/ws`, `/healthz`; the access
//! key check and the security headers every answer carries.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Query, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rand::Rng;
use serde_json::json;

use super::{ws, AppState, PageSpec, Remote};
use crate::cluster::node::Cluster;
use crate::cluster::Pick;
use crate::secret::Secret;

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");
const LOCKED: &str = include_str!("assets/locked.html");
const CHECK: &str = include_str!("assets/check.html");
const CHECK_JS: &str = include_str!("assets/check.js");

/// The user part of every REST username `/api/ice` hands out.
const PAGE_USER_PREFIX: &str = "web-";

/// Mints credentials for `/api/ice`.
pub struct IceSource {
    secret: Secret,
    separator: char,
    ttl: Duration,
    endpoints: crate::serve::Endpoints,
    host: String,
}

impl IceSource {
    pub fn new(spec: &PageSpec) -> Self {
        Self {
            secret: spec.secret.clone(),
            separator: spec.separator,
            ttl: spec.cfg.ice_ttl,
            endpoints: spec.endpoints.clone(),
            host: spec.public_host.clone(),
        }
    }

    /// A fresh `{"iceServers":[…],"ttl":…}` for a page reached at `host`
    /// (its Host header). Each caller gets its own user name, so one page's
    /// allocations do not count against another's quota.
    ///
    /// A page opened on a loopback address (trying turnd on the machine it
    /// runs on) gets TURN URLs on that same address: the public host may
    /// not be reachable from there, loopback is. Any other Host is ignored,
    /// so what a client claims never changes where others are sent.
    fn mint(&self, host: Option<&str>) -> serde_json::Value {
        let (host, username, credential) = self.credential(host);
        let mut v = self.endpoints.ice_servers_json(&host, &username, &credential);
        v["ttl"] = json!(self.ttl.as_secs());
        v
    }

    /// [`IceSource::mint`] for the node of the fleet `cluster` picks for a
    /// client of `room`: this one, or a sibling's URLs with a credential
    /// every node accepts (they share the secret). `node` names it.
    fn mint_in(&self, cluster: &Cluster, room: Option<&str>, host: Option<&str>) -> serde_json::Value {
        let (mut v, node) = match cluster.choose(room) {
            Pick::Me => (self.mint(host), cluster.name()),
            Pick::Sibling { name, stun, turn } => {
                let (_, username, credential) = self.credential(None);
                let mut v = crate::serve::ice_servers_json(&stun, &turn, &username, &credential);
                v["ttl"] = json!(self.ttl.as_secs());
                (v, name)
            }
        };
        v["node"] = json!(node);
        v
    }

    /// What the check page tries, with a fresh credential (see
    /// [`crate::serve::Endpoints::check_json`]).
    fn check(&self, host: Option<&str>) -> serde_json::Value {
        let (host, username, credential) = self.credential(host);
        let mut v = self.endpoints.check_json(&host, &username, &credential);
        v["ttl"] = json!(self.ttl.as_secs());
        v
    }

    /// The host for URLs, a fresh REST username of its own and its password.
    fn credential(&self, host: Option<&str>) -> (String, String, String) {
        let user = format!("{PAGE_USER_PREFIX}{:08x}", rand::rng().random::<u32>());
        let (username, credential) = crate::auth::rest_credentials(
            self.secret.as_bytes(),
            Some(&user),
            self.ttl,
            crate::serve::unix_now(),
            self.separator,
        );
        let host = host.and_then(loopback_host).unwrap_or_else(|| self.host.clone());
        (host, username, credential)
    }
}

/// The host part of a Host header value when it is a loopback address (an
/// IPv6 one in brackets), for URLs.
fn loopback_host(host: &str) -> Option<String> {
    let ip: std::net::IpAddr = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']')?.0.parse().ok()?,
        None => host.rsplit_once(':').map_or(host, |(h, _)| h).parse().ok()?,
    };
    ip.is_loopback().then(|| match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    })
}

/// Whether a WebSocket upgrade may go on: no `Origin` (not a browser: the
/// access key is its only check), the page's own origin (its authority is
/// the Host the request names), or one of `allowed`.
fn same_origin_or_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

pub fn ice_quota(per_minute: u32) -> governor::Quota {
    let n = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    governor::Quota::per_minute(n).allow_burst(n)
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(page))
        .route(
            "/assets/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route("/assets/style.css", get(|| asset("text/css; charset=utf-8", STYLE)))
        .route(
            "/assets/check.js",
            get(|| asset("text/javascript; charset=utf-8", CHECK_JS)),
        )
        .route("/check", get(check_page))
        // A shared report: rendered from the link's fragment alone, no key,
        // no API (the key never goes into a report link).
        .route(
            "/check/report",
            get(|| async { Html(CHECK.replace("{{ACCESS_KEY}}", "")) }),
        )
        .route("/api/check", get(check))
        .route("/api/ice", get(ice))
        .route("/api/turn-status", get(turn_status))
        .route("/api/qr.svg", get(qr_code))
        .route(crate::cluster::STATUS_PATH, get(cluster_status))
        .route("/ws", get(websocket))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; media-src 'self' blob:; \
         object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    // The page URL carries the access key: never send it elsewhere.
    set(h, "referrer-policy", "no-referrer");
    set(
        h,
        "permissions-policy",
        "camera=(self), microphone=(self), display-capture=(self)",
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-workers", "no-store");
    }
    r
}

async fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")],
        body,
    )
        .into_response()
}

/// Whether the request carries the access key, in `?key=` or as
/// `Authorization: Bearer`.
fn authorized(state: &AppState, query: &HashMap<String, String>, headers: &HeaderMap) -> bool {
    let Some(want) = &state.access_key else {
        return true;
    };
    let given = query.get("key").map(String::as_str).or(super::bearer(headers));
    given.is_some_and(|g| want.matches(g))
}

fn unauthorized(json_body: bool) -> Response {
    if json_body {
        let body = json!({"error": "access-key", "message": "a valid access key is needed (the join link carries it)"});
        (StatusCode::UNAUTHORIZED, Json(body)).into_response()
    } else {
        (StatusCode::UNAUTHORIZED, Html(LOCKED)).into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match &state.metrics {
        Some((source, token)) => super::ops::metrics_response(source, token.as_ref(), &headers),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A QR code of `?text=` (a join or room link the page shows), as SVG;
/// behind the access key like the page.
async fn qr_code(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &q, &headers) {
        return unauthorized(true);
    }
    match q.get("text").and_then(|t| crate::qr::svg(t)) {
        Some(svg) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            svg,
        )
            .into_response(),
        None => (StatusCode::BAD_REQUEST, "text: 1 to 1024 bytes\n").into_response(),
    }
}

async fn page(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    keyed_page(&state, &q, &headers, INDEX)
}

async fn check_page(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    keyed_page(&state, &q, &headers, CHECK)
}

/// An HTML page that needs the access key, with the key filled in.
fn keyed_page(state: &AppState, q: &HashMap<String, String>, headers: &HeaderMap, html: &str) -> Response {
    if !authorized(state, q, headers) {
        return unauthorized(false);
    }
    let key = state.access_key.as_ref().map_or("", Secret::expose);
    // The key is restricted to [A-Za-z0-9_-] (config check), safe in HTML.
    Html(html.replace("{{ACCESS_KEY}}", key)).into_response()
}

/// The network check's plan: STUN and TURN URLs per transport, one
/// credential (rate-limited with `/api/ice`).
async fn check(
    State(state): State<Arc<AppState>>,
    ConnectInfo(Remote(peer)): ConnectInfo<Remote>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    minted(&state, peer, &q, &headers, |s, host| s.ice.check(host))
}

async fn ice(
    State(state): State<Arc<AppState>>,
    ConnectInfo(Remote(peer)): ConnectInfo<Remote>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    // The participants of one room are sent to the same node of a fleet.
    let room = q
        .get("room")
        .map(String::as_str)
        .filter(|r| !r.is_empty() && r.len() <= 64);
    minted(&state, peer, &q, &headers, |s, host| match &s.cluster {
        Some(c) => s.ice.mint_in(c, room, host),
        None => s.ice.mint(host),
    })
}

/// This node's status for its siblings (`[cluster]`), behind the fleet's
/// token; 404 on a node outside a fleet.
async fn cluster_status(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(cluster) = &state.cluster else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !super::bearer(&headers).is_some_and(|t| cluster.token_ok(t)) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "cluster-token", "message": "the fleet's bearer token is needed"})),
        )
            .into_response();
    }
    Json(cluster.status()).into_response()
}

/// Fresh credentials as `make` words them, for a caller with the key and
/// within the per-address rate.
fn minted(
    state: &AppState,
    peer: std::net::SocketAddr,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    make: impl FnOnce(&AppState, Option<&str>) -> serde_json::Value,
) -> Response {
    if !authorized(state, q, headers) {
        return unauthorized(true);
    }
    if let Some(r) = over_rate(state, peer.ip()) {
        return r;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    Json(make(state, host)).into_response()
}

/// 429 with Retry-After when `ip` is over the per-address rate of
/// `/api/ice` and `/api/turn-status` (one budget for both).
fn over_rate(state: &AppState, ip: std::net::IpAddr) -> Option<Response> {
    use governor::clock::Clock;
    let not_until = state.ice_limiter.check_key(&ip).err()?;
    let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
    let secs = wait.as_secs() + 1;
    let body = json!({"error": "rate-limited", "message": format!("too many requests; retry in {secs}s")});
    Some(
        (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs.to_string())],
            Json(body),
        )
            .into_response(),
    )
}

/// What turnd knows of the allocations of one TURN username the page was
/// handed (`?username=`, a REST name whose user part `/api/ice` minted):
/// the page asks when a call fails, to say why in words (a 403 for the other
/// side's address is invisible to the page's own JavaScript).
async fn turn_status(
    State(state): State<Arc<AppState>>,
    ConnectInfo(Remote(peer)): ConnectInfo<Remote>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &q, &headers) {
        return unauthorized(true);
    }
    let Some(username) = q.get("username").cloned() else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "username", "message": "?username= is missing"})),
        )
            .into_response();
    };
    let minted = username
        .split_once(state.separator)
        .is_some_and(|(_, user)| user.starts_with(PAGE_USER_PREFIX));
    if !minted {
        let body = json!({"error": "username", "message": "only usernames handed out by /api/ice"});
        return (StatusCode::FORBIDDEN, Json(body)).into_response();
    }
    if let Some(r) = over_rate(&state, peer.ip()) {
        return r;
    }
    let workers = state.workers.clone();
    let sessions = tokio::task::spawn_blocking(move || workers.sessions())
        .await
        .unwrap_or_default();
    let mine: Vec<_> = sessions
        .iter()
        .filter(|s| s.user == username)
        .map(|s| {
            json!({
                "relayed": s.relayed.to_string(),
                "transport": s.client.transport.to_string(),
                "permissions": s.peers.len(),
                "channels": s.channels,
                "refused": s.refused.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({ "allocations": mine })).into_response()
}

async fn websocket(
    State(state): State<Arc<AppState>>,
    ConnectInfo(Remote(peer)): ConnectInfo<Remote>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !authorized(&state, &q, &headers) {
        return unauthorized(true);
    }
    if !same_origin_or_allowed(&headers, &state.allowed_origins) {
        let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()).unwrap_or("?");
        tracing::info!(%peer, origin, "cross-origin WebSocket refused");
        let body = json!({"error": "origin", "message": "cross-origin WebSocket refused (see http.allowed-origins)"});
        return (StatusCode::FORBIDDEN, Json(body)).into_response();
    }
    upgrade
        .max_message_size(ws::MAX_FRAME)
        .max_frame_size(ws::MAX_FRAME)
        .on_upgrade(move |socket| ws::serve(socket, state, peer))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_loopback_hosts_are_taken_from_the_page() {
        use super::loopback_host as l;
        assert_eq!(l("127.0.0.1:8080").as_deref(), Some("127.0.0.1"));
        assert_eq!(l("127.0.0.5").as_deref(), Some("127.0.0.5"));
        assert_eq!(l("[::1]:8443").as_deref(), Some("[::1]"));
        for other in [
            "turn.example.org",
            "192.0.2.1:8080",
            "[2001:db8::1]:443",
            "localhost:8080",
            "evil",
            "",
        ] {
            assert_eq!(l(other), None, "{other}");
        }
    }
}
