//! The operator's endpoints, on listeners of their own (keep them private):
//! Prometheus `/metrics` (optionally behind a bearer token) and the admin
//! API (always behind one): `GET /admin/sessions`, `POST /admin/kill?user=`.
//! On turnd's runtime, like the page.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::lifecycle::Tasks;
use crate::metrics::Source;
use crate::net::Workers;
use crate::secret::Secret;

/// What to serve where.
pub struct OpsSpec {
    pub metrics: Vec<SocketAddr>,
    pub metrics_token: Option<Secret>,
    pub admin: Vec<SocketAddr>,
    pub admin_token: Option<Secret>,
    pub source: Arc<Source>,
    pub workers: Arc<Workers>,
    /// The limits and timeouts of `[http]`, for these listeners too.
    pub http: crate::config::Http,
}

/// The running endpoints' bound addresses; they stop with turnd's tasks.
pub struct Ops {
    pub metrics: Vec<SocketAddr>,
    pub admin: Vec<SocketAddr>,
}

/// Whether `headers` carry `Authorization: Bearer <want>` (always true
/// without a token).
pub fn bearer_ok(headers: &HeaderMap, want: Option<&Secret>) -> bool {
    want.is_none_or(|w| super::bearer(headers).is_some_and(|g| w.matches(g)))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a bearer token is needed\n",
    )
        .into_response()
}

/// `/metrics` for `source`, behind `token` when there is one.
pub fn metrics_response(source: &Arc<Source>, token: Option<&Secret>, headers: &HeaderMap) -> Response {
    if !bearer_ok(headers, token) {
        return unauthorized();
    }
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::render(source),
    )
        .into_response()
}

struct Admin {
    workers: Arc<Workers>,
    token: Secret,
}

/// Binds every listener; nothing runs if one fails.
pub fn start(spec: OpsSpec, tasks: &Tasks) -> anyhow::Result<Ops> {
    let _guard = tasks.handle().enter();
    // A few scrapers and admins: a small total, the page's limits otherwise.
    let gate = crate::net::tcp::Gate::new(64, spec.http.max_connections_per_address.min(16));
    let timeouts = super::listener::Timeouts {
        header: spec.http.header_timeout,
        idle: spec.http.idle_timeout,
    };
    let (source, token) = (spec.source.clone(), spec.metrics_token.clone());
    let ready = spec.source.shared.clone();
    // Liveness (/healthz: the process answers) and readiness (/readyz: 503
    // while draining, so an orchestrator stops counting this node before
    // it exits) on the operator's listeners, without a token: they say
    // nothing but "ok" or "draining".
    let health = Router::new().route("/healthz", get(|| async { "ok\n" })).route(
        "/readyz",
        get(move || {
            let draining = ready.is_draining();
            async move {
                if draining {
                    (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                } else {
                    (StatusCode::OK, "ok\n")
                }
            }
        }),
    );
    let metrics = Router::new()
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let (source, token) = (source.clone(), token.clone());
                async move { metrics_response(&source, token.as_ref(), &headers) }
            }),
        )
        .merge(health.clone());
    let admin = spec.admin_token.map(|token| {
        Router::new()
            .route("/admin/sessions", get(sessions))
            .route("/admin/kill", post(kill))
            .with_state(Arc::new(Admin {
                workers: spec.workers.clone(),
                token,
            }))
            .merge(health)
    });
    let mut bound = (Vec::new(), Vec::new());
    let mut serving = Vec::new();
    for (addrs, router, which) in [(&spec.metrics, Some(metrics), 0), (&spec.admin, admin, 1)] {
        let Some(router) = router else { continue };
        for addr in addrs {
            let l = super::bind(*addr).with_context(|| format!("cannot listen on {addr}"))?;
            let local = l.local_addr()?;
            if which == 0 { &mut bound.0 } else { &mut bound.1 }.push(local);
            serving.push((l, router.clone()));
        }
    }
    // Only once every bind worked: nothing runs if one fails.
    for (l, router) in serving {
        super::listener::serve_listener(tasks, l, None, router, gate.clone(), timeouts);
    }
    Ok(Ops {
        metrics: bound.0,
        admin: bound.1,
    })
}

async fn sessions(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if !bearer_ok(&headers, Some(&admin.token)) {
        return unauthorized();
    }
    let workers = admin.workers.clone();
    let list = tokio::task::spawn_blocking(move || workers.sessions())
        .await
        .unwrap_or_default();
    let out: Vec<_> = list
        .iter()
        .map(|s| {
            json!({
                "user": s.user,
                "quota_user": s.quota_user,
                "client": s.client.remote.to_string(),
                "listener": s.client.local.to_string(),
                "transport": s.client.transport.to_string(),
                "relayed": s.relayed.to_string(),
                "peers": s.peers.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                "channels": s.channels,
                "age_secs": s.age.as_secs(),
                "expires_in_secs": s.expires_in.as_secs(),
                "silent_secs": s.silent.as_secs(),
                "idle": s.idle,
                "to_peer_bytes": s.to_peer.bytes,
                "to_peer_packets": s.to_peer.packets,
                "to_client_bytes": s.to_client.bytes,
                "to_client_packets": s.to_client.packets,
                "refused_peers": s.refused.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({ "sessions": out })).into_response()
}

#[derive(serde::Deserialize)]
struct KillQuery {
    user: String,
}

async fn kill(State(admin): State<Arc<Admin>>, headers: HeaderMap, Query(q): Query<KillQuery>) -> Response {
    if !bearer_ok(&headers, Some(&admin.token)) {
        return unauthorized();
    }
    let workers = admin.workers.clone();
    let user = q.user.clone();
    let n = tokio::task::spawn_blocking(move || workers.kill_user(&user))
        .await
        .unwrap_or(0);
    tracing::info!(user = %q.user, killed = n, "admin: sessions killed");
    Json(json!({ "user": q.user, "killed": n })).into_response()
}
