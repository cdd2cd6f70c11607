//! Serving HTTP and HTTPS connections: every listener of the page and of
//! the operator endpoints, and the HTTP connections `auto` listeners hand
//! over, go through [`serve_listener`] or [`serve_handed`]. Each connection
//! is admitted under a limit in total and per client address (refused ones
//! are closed at once, so a flood from one address never queues others),
//! finishes its TLS handshake in its own task under a deadline, then gets
//! hyper with a header-read timeout (which also ends idle keep-alive
//! connections) and an idle timeout on the byte stream itself (a client that
//! neither sends nor reads is cut; WebSockets stay up through their pings).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

use crate::lifecycle::Tasks;
use crate::net::stream::HttpConn;
use crate::net::tcp::{Gate, Slot};

/// How long a client may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The client's address, as handlers see it (`ConnectInfo<Remote>`).
#[derive(Clone, Copy, Debug)]
pub struct Remote(pub SocketAddr);

/// The local address a connection came in on (an `axum::Extension`).
#[derive(Clone, Copy, Debug)]
pub struct Local(pub SocketAddr);

/// The timeouts every HTTP connection runs under.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From the moment a connection is ready for a request until its
    /// headers are in.
    pub header: Duration,
    /// Nothing read or written for this long ends the connection.
    pub idle: Duration,
}

/// Accepts on `listener` until turnd stops, serving `app` (inside TLS when
/// `tls` is set) to every connection `gate` admits.
pub fn serve_listener(
    tasks: &Tasks,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    gate: Arc<Gate>,
    t: Timeouts,
) {
    let spawner = tasks.clone();
    tasks.spawn(async move {
        let local = listener.local_addr().ok();
        loop {
            let (tcp, remote) = crate::net::tcp::accept(&listener, "http").await;
            let Some(slot) = gate.admit(remote.ip()) else {
                tracing::debug!(%remote, "http connection refused: limit reached");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let local = local.unwrap_or(remote);
            let (app, tls) = (app.clone(), tls.clone());
            spawner.spawn(async move {
                match tls {
                    None => serve(tcp, remote, local, app, t, (slot, None)).await,
                    Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        // A CA's TLS-ALPN-01 validation ends with the handshake.
                        Ok(Ok(s)) if crate::tls::is_acme_validation(s.get_ref().1.alpn_protocol()) => {}
                        Ok(Ok(s)) => serve(s, remote, local, app, t, (slot, None)).await,
                        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    },
                }
            });
        }
    });
}

/// Serves the HTTP connections `auto` listeners hand over: `secure` (inside
/// TLS) ones with `app`, plain ones with `plain` (a redirect to HTTPS). They
/// keep their place under the relay's TCP limits and take one under `gate`.
pub fn serve_handed(
    tasks: &Tasks,
    mut rx: mpsc::Receiver<HttpConn>,
    app: Router,
    plain: Router,
    gate: Arc<Gate>,
    t: Timeouts,
) {
    let spawner = tasks.clone();
    tasks.spawn(async move {
        while let Some(c) = rx.recv().await {
            let Some(slot) = gate.admit(c.remote.ip()) else {
                tracing::debug!(remote = %c.remote, "http connection refused: limit reached");
                continue;
            };
            let app = if c.secure { app.clone() } else { plain.clone() };
            spawner.spawn(serve(c.io, c.remote, c.local, app, t, (slot, Some(c.slot))));
        }
    });
}

/// One connection, until either side ends it. The slots are held as long.
async fn serve<S>(io: S, remote: SocketAddr, local: SocketAddr, app: Router, t: Timeouts, _slots: (Slot, Option<Slot>))
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(Remote(remote)));
        req.extensions_mut().insert(Local(local));
        tower::ServiceExt::oneshot(app.clone(), req)
    });
    let io = hyper_util::rt::TokioIo::new(Idle::new(io, t.idle));
    let served = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(t.header)
        .serve_connection(io, service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!(%remote, error = %e, "http connection ended");
    }
}

/// A byte stream that fails with `TimedOut` once nothing has been read or
/// written for `limit`.
struct Idle<S> {
    inner: S,
    limit: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Idle<S> {
    fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }

    fn moved(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.limit);
    }

    /// After the inner stream said Pending: an error once the deadline is
    /// past (the deadline's waker is registered meanwhile).
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "idle connection")),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.check(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.moved();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.check(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.check(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The Router answering every request on a plain `auto` connection: a
/// redirect to the same path over HTTPS on `public_host` (never the
/// client's Host header), at the port the connection came in on.
pub fn redirect_to_https(public_host: String) -> Router {
    use axum::http::{header, HeaderValue, StatusCode};
    use axum::response::IntoResponse;
    Router::new().fallback(
        move |axum::Extension(Local(local)): axum::Extension<Local>, uri: axum::http::Uri| {
            let host = public_host.clone();
            async move {
                let path = uri.path_and_query().map_or("/", |p| p.as_str());
                let port = if local.port() == 443 {
                    String::new()
                } else {
                    format!(":{}", local.port())
                };
                match HeaderValue::from_str(&format!("https://{host}{port}{path}")) {
                    Ok(v) => (
                        StatusCode::PERMANENT_REDIRECT,
                        [(header::LOCATION, v)],
                        "use https://\n",
                    )
                        .into_response(),
                    Err(_) => (StatusCode::BAD_REQUEST, "use https://\n").into_response(),
                }
            }
        },
    )
}
