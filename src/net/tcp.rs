//! TCP and TLS listeners for TURN: accept loops on a small tokio runtime,
//! with a limit on connections in total and per source address, TLS
//! handshakes in their own tasks under a deadline, and each connection then
//! served by [`Bridge::serve`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::stream::Bridge;
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
}

/// Counts connections; a [`Slot`] is held for each one.
pub struct Gate {
    limits: Limits,
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping it frees its place.
pub struct Slot {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Gate {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            counts: Mutex::new((0, HashMap::new())),
        })
    }

    /// A place for a connection from `ip`, unless a limit is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut g = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let per = g.1.get(&ip).copied().unwrap_or(0);
        if g.0 >= self.limits.max_connections || per >= self.limits.max_per_address {
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

/// Accepts on `listener` until the runtime stops; TLS when `tls` is set.
pub fn spawn_accept(listener: TcpListener, tls: Option<TlsAcceptor>, bridge: Arc<Bridge>, gate: Arc<Gate>) {
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(slot) = gate.admit(peer.ip()) else {
                tracing::debug!(%peer, "connection refused: limit reached");
                drop(tcp);
                continue;
            };
            tokio::spawn(connection(tcp, peer, tls.clone(), bridge.clone(), gate.limits, slot));
        }
    });
}

async fn connection(tcp: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>, bridge: Arc<Bridge>, limits: Limits, _slot: Slot) {
    let _ = tcp.set_nodelay(true);
    let Ok(local) = tcp.local_addr() else {
        return;
    };
    match tls {
        None => {
            let client = ClientAddr::stream(false, peer, local);
            bridge.serve(tcp, client, Vec::new(), limits.idle_timeout).await;
        }
        Some(acceptor) => match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => {
                let client = ClientAddr::stream(true, peer, local);
                bridge.serve(s, client, Vec::new(), limits.idle_timeout).await;
            }
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        },
    }
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
