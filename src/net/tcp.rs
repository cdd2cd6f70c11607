//! TCP, TLS and `auto` listeners: accept loops on turnd's tokio runtime,
//! with a limit on connections in total and per source address, TLS
//! handshakes in each connection's own task under a deadline; TURN
//! connections are then served by [`Bridge::serve`], HTTP ones (on `auto`)
//! handed to the page.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::stream::{Bridge, HttpConn, Io, Rewound};
use super::StreamKind;
use crate::lifecycle::Tasks;
use crate::proto::ClientAddr;

/// Limits on stream connections, shared by every TCP and TLS listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_per_address: usize,
    pub handshake_timeout: Duration,
    /// A connection without an allocation that sends nothing for this long
    /// is closed.
    pub idle_timeout: Duration,
    /// Time to finish a message once begun.
    pub frame_timeout: Duration,
    /// Time a connection may have no allocation, in all.
    pub unallocated_timeout: Duration,
}

impl Limits {
    fn timeouts(&self) -> super::stream::Timeouts {
        super::stream::Timeouts {
            idle: self.idle_timeout,
            frame: self.frame_timeout,
            unallocated: self.unallocated_timeout,
        }
    }
}

/// Counts connections; a [`Slot`] is held for each one.
pub struct Gate {
    max_total: usize,
    max_per_address: usize,
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping it frees its place.
pub struct Slot {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Gate {
    /// At most `max_total` connections, `max_per_address` from one IP.
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_address,
            counts: Mutex::new((0, HashMap::new())),
        })
    }

    /// A place for a connection from `ip`, unless a limit is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut g = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let per = g.1.get(&ip).copied().unwrap_or(0);
        if g.0 >= self.max_total || per >= self.max_per_address {
            return None;
        }
        g.0 += 1;
        *g.1.entry(ip).or_insert(0) += 1;
        Some(Slot { gate: self.clone(), ip })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self.gate.counts.lock().unwrap_or_else(|p| p.into_inner());
        g.0 -= 1;
        if let Some(n) = g.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                g.1.remove(&self.ip);
            }
        }
    }
}

/// The next connection on `listener`. Errors (EMFILE and friends) are
/// logged and retried after a pause instead of spinning.
pub async fn accept(listener: &TcpListener, what: &str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(x) => return x,
            Err(e) => {
                tracing::warn!(error = %e, listener = what, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Accepts on `listener` until turnd stops.
pub fn spawn_accept(
    tasks: &Tasks,
    listener: TcpListener,
    kind: StreamKind,
    bridge: Arc<Bridge>,
    gate: Arc<Gate>,
    limits: Limits,
) {
    let spawner = tasks.clone();
    tasks.spawn(async move {
        loop {
            let (tcp, peer) = accept(&listener, "tcp").await;
            let Some(slot) = gate.admit(peer.ip()) else {
                tracing::debug!(%peer, "connection refused: limit reached");
                drop(tcp);
                continue;
            };
            let (kind, bridge) = (kind.clone(), bridge.clone());
            spawner.spawn(async move {
                if let Err(why) = connection(tcp, peer, kind, bridge, limits, slot).await {
                    tracing::debug!(%peer, why, "connection closed before TURN or HTTP");
                }
            });
        }
    });
}

/// The first message of a TURN connection is a STUN request, whose first
/// byte is below 0x40 (ChannelData needs an allocation first). HTTP starts
/// with an upper-case method name, TLS with 0x16 (a handshake record).
fn is_stun(first: u8) -> bool {
    first < 0x40
}

const TLS_HANDSHAKE: u8 = 0x16;

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    kind: StreamKind,
    bridge: Arc<Bridge>,
    limits: Limits,
    slot: Slot,
) -> Result<(), &'static str> {
    let _ = tcp.set_nodelay(true);
    let local = tcp.local_addr().map_err(|_| "no local address")?;
    let deadline = Instant::now() + limits.handshake_timeout;
    let accept = |tls: Arc<rustls::ServerConfig>, io| async move {
        match tokio::time::timeout_at(deadline, TlsAcceptor::from(tls).accept(io)).await {
            // A CA's TLS-ALPN-01 validation ends with the handshake.
            Ok(Ok(s)) if crate::tls::is_acme_validation(s.get_ref().1.alpn_protocol()) => Err("ACME validation done"),
            Ok(Ok(s)) => Ok(s),
            Ok(Err(_)) => Err("TLS handshake failed"),
            Err(_) => Err("TLS handshake timed out"),
        }
    };
    match kind {
        StreamKind::Tcp => {
            let client = ClientAddr::stream(false, peer, local);
            bridge.serve(tcp, client, Vec::new(), limits.timeouts()).await;
        }
        StreamKind::Tls(tls) => {
            let s = accept(tls, Rewound::new(Vec::new(), tcp)).await?;
            let client = ClientAddr::stream(true, peer, local);
            bridge.serve(s, client, Vec::new(), limits.timeouts()).await;
        }
        StreamKind::Auto { tls, http } => {
            let mut tcp = tcp;
            let head = first_bytes(&mut tcp, deadline).await?;
            if head[0] == TLS_HANDSHAKE {
                let mut s = accept(tls, Rewound::new(head, tcp)).await?;
                let inner = first_bytes(&mut s, Instant::now() + limits.idle_timeout).await?;
                if is_stun(inner[0]) {
                    let client = ClientAddr::stream(true, peer, local);
                    bridge.serve(s, client, inner, limits.timeouts()).await;
                } else {
                    hand_over(http, Box::new(Rewound::new(inner, s)), peer, local, true, slot).await?;
                }
            } else if is_stun(head[0]) {
                let client = ClientAddr::stream(false, peer, local);
                bridge.serve(tcp, client, head, limits.timeouts()).await;
            } else {
                hand_over(http, Box::new(Rewound::new(head, tcp)), peer, local, false, slot).await?;
            }
        }
    }
    Ok(())
}

/// At least one byte from `io`, before `deadline`.
async fn first_bytes<S: AsyncRead + Unpin>(io: &mut S, deadline: Instant) -> Result<Vec<u8>, &'static str> {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
        Ok(Ok(0)) => Err("closed before sending anything"),
        Ok(Ok(n)) => {
            buf.truncate(n);
            Ok(buf)
        }
        Ok(Err(_)) => Err("read failed"),
        Err(_) => Err("sent nothing in time"),
    }
}

async fn hand_over(
    http: Option<mpsc::Sender<HttpConn>>,
    io: Box<dyn Io>,
    remote: SocketAddr,
    local: SocketAddr,
    secure: bool,
    slot: Slot,
) -> Result<(), &'static str> {
    let http = http.ok_or("HTTP, but the page is off")?;
    let conn = HttpConn {
        io,
        remote,
        local,
        secure,
        slot,
    };
    http.send(conn).await.map_err(|_| "HTTP, but the page stopped")
}

/// A listening TCP socket at `addr` (IPv6 sockets stay IPv6-only), shared by
/// nothing else.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}
