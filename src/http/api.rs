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

use super::{ws, AppState, Remote, Spec};

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");
const LOCKED: &str = include_str!("assets/locked.html");

/// Mints credentials for `/api/ice`.
pub struct IceSource {
    secret: Vec<u8>,
    separator: char,
    ttl: Duration,
    endpoints: crate::serve::Endpoints,
    host: String,
}

impl IceSource {
    pub fn new(spec: &Spec) -> Self {
        Self {
            secret: spec.secret.clone(),
            separator: spec.separator,
            ttl: spec.cfg.ice_ttl,
            endpoints: spec.endpoints.clone(),
            host: spec.public_host.clone(),
        }
    }

    /// A fresh `{"iceServers":[…],"ttl":…}`. Each caller gets its own user
    /// name, so one page's allocations do not count against another's quota.
    fn mint(&self) -> serde_json::Value {
        let user = format!("web-{:08x}", rand::rng().random::<u32>());
        let (username, credential) = crate::auth::rest_credentials(
            &self.secret,
            Some(&user),
            self.ttl,
            crate::serve::unix_now(),
            self.separator,
        );
        let mut v = self.endpoints.ice_servers_json(&self.host, &username, &credential);
        v["ttl"] = json!(self.ttl.as_secs());
        v
    }
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
        .route("/api/ice", get(ice))
        .route("/ws", get(websocket))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Plain HTTP on an `auto` listener: every request is sent to the same
/// host and path over HTTPS (308 keeps the method).
pub fn redirect_to_https() -> Router {
    Router::new().fallback(|headers: HeaderMap, uri: axum::http::Uri| async move {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b)));
        let Some(host) = host else {
            return (StatusCode::BAD_REQUEST, "use https://\n").into_response();
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let location = format!("https://{host}{path}");
        match HeaderValue::from_str(&location) {
            Ok(v) => (
                StatusCode::PERMANENT_REDIRECT,
                [(header::LOCATION, v)],
                "use https://\n",
            )
                .into_response(),
            Err(_) => (StatusCode::BAD_REQUEST, "use https://\n").into_response(),
        }
    })
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
        set(h, "cache-control", "no-store");
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
    given.is_some_and(|g| super::same_secret(g, want))
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
        Some((source, token)) => super::ops::metrics_response(source, token.as_deref(), &headers),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn page(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &q, &headers) {
        return unauthorized(false);
    }
    let key = state.access_key.as_deref().unwrap_or("");
    // The key is restricted to [A-Za-z0-9_-] (config check), safe in HTML.
    Html(INDEX.replace("{{ACCESS_KEY}}", key)).into_response()
}

async fn ice(
    State(state): State<Arc<AppState>>,
    ConnectInfo(Remote(peer)): ConnectInfo<Remote>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &q, &headers) {
        return unauthorized(true);
    }
    if let Err(not_until) = state.ice_limiter.check_key(&peer.ip()) {
        use governor::clock::Clock;
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        let secs = wait.as_secs() + 1;
        let body = json!({"error": "rate-limited", "message": format!("too many requests; retry in {secs}s")});
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs.to_string())],
            Json(body),
        )
            .into_response();
    }
    Json(state.ice.mint()).into_response()
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
    upgrade
        .max_message_size(ws::MAX_FRAME)
        .max_frame_size(ws::MAX_FRAME)
        .on_upgrade(move |socket| ws::serve(socket, state, peer))
}
