//! A TURN client over a byte stream (TCP, or TLS through rustls) for tests:
//! its own framing (not turnd's), messages built with `stunc`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use stun::message::*;

use super::server::{rest_creds, REALM};
use super::stunc::*;

/// Messages on a stream: STUN (20-byte header + length) or ChannelData
/// (4-byte header + length, padded to 4 on streams).
pub struct Framed<S> {
    pub io: S,
    buf: Vec<u8>,
    /// Each read is one whole datagram (UDP: ChannelData unpadded).
    datagrams: bool,
}

/// One received item.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    Stun(Vec<u8>),
    /// Channel number and payload (padding removed).
    Channel(u16, Vec<u8>),
}

impl<S: Read + Write> Framed<S> {
    pub fn new(io: S) -> Self {
        Self {
            io,
            buf: Vec::new(),
            datagrams: false,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).expect("write");
        self.io.flush().expect("flush");
    }

    /// The next message; `None` when the server closed the connection.
    pub fn recv(&mut self) -> Option<Item> {
        loop {
            if self.buf.len() >= 4 {
                let len = u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize;
                let stun = self.buf[0] < 0x40;
                let whole = match (stun, self.datagrams) {
                    (true, _) => 20 + len,
                    (false, true) => self.buf.len(),
                    (false, false) => (4 + len + 3) & !3,
                };
                if self.buf.len() >= whole {
                    let m: Vec<u8> = self.buf.drain(..whole).collect();
                    return Some(if stun {
                        Item::Stun(m)
                    } else {
                        Item::Channel(u16::from_be_bytes([m[0], m[1]]), m[4..4 + len].to_vec())
                    });
                }
            }
            let mut chunk = [0u8; 4096];
            match self.io.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// The next STUN message, skipping ChannelData.
    pub fn recv_stun(&mut self) -> Message {
        loop {
            match self.recv().expect("connection open") {
                Item::Stun(b) => return decode(&b),
                Item::Channel(..) => continue,
            }
        }
    }

    /// Sends `m` and returns the answer to it.
    pub fn request(&mut self, m: &Message) -> Message {
        self.send(&m.raw);
        loop {
            let r = self.recv_stun();
            if r.transaction_id == m.transaction_id {
                return r;
            }
        }
    }

    /// Allocate with REST credentials for `user`: the 401 round, then the
    /// signed request. Returns the credentials and the relayed address.
    pub fn allocate(&mut self, user: &str) -> (Cred, SocketAddr) {
        let r = self.request(&build(req(METHOD_ALLOCATE), vec![transport_udp()], None, true));
        assert_eq!(error_code(&r), Some(401), "{r}");
        let (u, p) = rest_creds(user);
        let cred = Cred {
            user: u,
            realm: REALM.into(),
            pass: p,
            nonce: text(&r, stun::attributes::ATTR_NONCE).expect("nonce"),
        };
        let r = self.request(&build(req(METHOD_ALLOCATE), vec![transport_udp()], Some(&cred), true));
        assert!(is_success(&r), "allocate: {r}");
        (cred, relayed(&r).expect("relayed address"))
    }

    /// Permission and channel `n` to `peer`.
    pub fn bind(&mut self, cred: &Cred, n: u16, peer: SocketAddr) {
        let r = self.request(&build(
            req(METHOD_CHANNEL_BIND),
            vec![channel(n), super::stunc::peer(peer)],
            Some(cred),
            true,
        ));
        assert!(is_success(&r), "channel bind: {r}");
    }
}

/// A connected UDP socket as a byte stream of whole datagrams, so the
/// request and answer helpers work over UDP too.
pub struct Datagrams(pub UdpSocket);

impl Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.recv(buf)
    }
}

impl Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.send(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A UDP client of `server` (from the server's loopback address, any
/// port) with a read deadline.
pub fn udp(server: SocketAddr) -> Framed<Datagrams> {
    let s = UdpSocket::bind(SocketAddr::new(server.ip(), 0)).expect("bind");
    s.connect(server).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    Framed {
        datagrams: true,
        ..Framed::new(Datagrams(s))
    }
}

/// A client on `s` (already bound; connected here to `server`).
pub fn udp_on(s: UdpSocket, server: SocketAddr) -> Framed<Datagrams> {
    s.connect(server).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    Framed {
        datagrams: true,
        ..Framed::new(Datagrams(s))
    }
}

/// A plain TCP connection with a read deadline.
pub fn tcp(addr: SocketAddr) -> Framed<TcpStream> {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    Framed::new(s)
}

pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection that accepts any certificate (the test's own), with
/// the handshake done.
pub fn tls(addr: SocketAddr) -> Framed<Tls> {
    tls_with(addr, rustls::DEFAULT_VERSIONS)
}

/// A TLS connection to `addr` for `name`, the certificate verified against
/// `config`'s roots; the handshake's error otherwise.
pub fn tls_verified(
    addr: SocketAddr,
    name: &str,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> Result<Framed<Tls>, String> {
    let s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut t = rustls::StreamOwned::new(conn, s);
    while t.conn.is_handshaking() {
        t.conn.complete_io(&mut t.sock).map_err(|e| e.to_string())?;
    }
    Ok(Framed::new(t))
}

/// [`tls`] offering only the given TLS versions.
pub fn tls_with(addr: SocketAddr, versions: &[&'static rustls::SupportedProtocolVersion]) -> Framed<Tls> {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let config = turnd::tls::client_config_for(true, versions);
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(config, name).expect("client");
    let mut t = rustls::StreamOwned::new(conn, s);
    while t.conn.is_handshaking() {
        t.conn.complete_io(&mut t.sock).expect("TLS handshake");
    }
    Framed::new(t)
}

/// The SHA-256 fingerprint of the certificate the server presented.
pub fn presented(t: &Framed<Tls>) -> String {
    let certs = t.io.conn.peer_certificates().expect("a certificate");
    turnd::tls::fingerprint(&certs[0])
}
