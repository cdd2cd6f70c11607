//! Accepting HTTP and HTTPS connections for axum: a total connection limit
//! (a permit travels with each connection), TLS handshakes in their own tasks
//! with a deadline, so a silent client never holds up the accept loop.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::net::stream::{HttpConn, Io};
use crate::net::tcp::Slot;

/// How long a client may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One accepted connection, plain or TLS, holding its connection permit.
pub struct Conn {
    stream: Stream,
    _permit: OwnedSemaphorePermit,
    /// A connection from an `auto` listener also holds its place under the
    /// relay's TCP limits.
    _slot: Option<Slot>,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Handed(Box<dyn Io>),
}

/// The client's address, as handlers see it (`ConnectInfo<Remote>`).
#[derive(Clone, Copy, Debug)]
pub struct Remote(pub SocketAddr);

/// A stream of accepted connections, for [`axum::serve`].
pub struct Accepted {
    rx: mpsc::Receiver<(Conn, SocketAddr)>,
    local: SocketAddr,
}

/// Starts accepting on `listener` (TLS when `tls` is set), at most as many
/// connections at once as `permits` holds, across every listener sharing it.
pub fn accept(listener: TcpListener, tls: Option<TlsAcceptor>, permits: Arc<Semaphore>) -> io::Result<Accepted> {
    let local = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = crate::net::tcp::accept(&listener, "http").await;
            let _ = tcp.set_nodelay(true);
            match &tls {
                None => {
                    if tx.send((Conn::new(Stream::Plain(tcp), permit), peer)).await.is_err() {
                        return;
                    }
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => {
                                let _ = tx.send((Conn::new(Stream::Tls(Box::new(s)), permit), peer)).await;
                            }
                            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
            }
        }
    });
    Ok(Accepted { rx, local })
}

/// Connections handed over by `auto` listeners: those inside TLS, and the
/// plain ones (to be redirected to HTTPS).
pub fn handed(mut rx: mpsc::Receiver<HttpConn>, permits: Arc<Semaphore>) -> (Accepted, Accepted) {
    let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
    let (secure_tx, secure_rx) = mpsc::channel(64);
    let (plain_tx, plain_rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(c) = rx.recv().await {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let tx = if c.secure { &secure_tx } else { &plain_tx };
            let conn = Conn {
                stream: Stream::Handed(c.io),
                _permit: permit,
                _slot: Some(c.slot),
            };
            if tx.send((conn, c.remote)).await.is_err() {
                return;
            }
        }
    });
    (
        Accepted {
            rx: secure_rx,
            local: unknown,
        },
        Accepted {
            rx: plain_rx,
            local: unknown,
        },
    )
}

impl Conn {
    fn new(stream: Stream, permit: OwnedSemaphorePermit) -> Self {
        Self {
            stream,
            _permit: permit,
            _slot: None,
        }
    }
}

impl axum::serve::Listener for Accepted {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task only ends with the runtime.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Accepted>> for Remote {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Accepted>) -> Self {
        Remote(*stream.remote_addr())
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Handed(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Handed(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Handed(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Handed(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
