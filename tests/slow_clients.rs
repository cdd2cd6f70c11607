//! Slow and idle clients cannot exhaust turnd, while a legitimate client is
//! served throughout. TURN over TCP, TLS and `auto`: a connection that
//! trickles a message one byte at a time is cut when the message takes
//! longer than `tcp.frame-timeout`, and one that keeps itself alive with
//! Bindings but never allocates is cut after `tcp.unallocated-timeout`.
//! HTTP (page, HTTPS on `auto`, metrics): idle connections from one address
//! stop at `http.max-connections-per-address` and are closed after
//! `http.header-timeout`, so `/healthz` keeps answering everyone; a client
//! sending one header byte at a time is cut at the header timeout; a
//! WebSocket stays up past the idle timeout (pings).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::server::*;
use common::streamc::{self, Item};
use common::stunc::*;
use stun::message::*;

/// Whether the server closed `s` within `limit` (reads until EOF or error;
/// the client itself keeps quiet).
fn closed_within(s: &mut impl Read, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Sends one byte of a STUN Binding every `pause`, until the server closes
/// the connection or `limit` passes; the time it stayed open, if closed.
fn trickle(s: &mut TcpStream, pause: Duration, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    let m = build(req(METHOD_BINDING), vec![], None, true).raw;
    s.set_read_timeout(Some(pause)).expect("timeout");
    for b in m.iter().cycle() {
        if t.elapsed() > limit {
            return None;
        }
        if s.write_all(&[*b]).is_err() {
            return Some(t.elapsed());
        }
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(0) => return Some(t.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(t.elapsed()),
        }
    }
    None
}

/// A TCP client with an allocation and a channel to an echo peer, relaying
/// one message every 200 ms while the attacks run; all must come back.
struct Legit {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<usize>>,
}

impl Legit {
    fn start(addr: SocketAddr) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let (peer, _echo) = echo_peer();
            let mut c = streamc::tcp(addr);
            let (cred, _) = c.allocate("legit");
            c.bind(&cred, 0x4000, peer);
            let mut n = 0;
            while !s.load(std::sync::atomic::Ordering::Relaxed) && n < 200 {
                c.send(&channel_data(0x4000, &[n as u8; 64], true));
                assert_eq!(
                    c.recv(),
                    Some(Item::Channel(0x4000, vec![n as u8; 64])),
                    "echo {n} lost"
                );
                n += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            n
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle
            .take()
            .expect("running")
            .join()
            .expect("the legitimate client relayed everything")
    }
}

#[test]
fn trickling_and_binding_only_turn_connections_are_cut() {
    let srv = TestServer::start_streams(
        "[tcp]\nidle-timeout = \"2s\"\nframe-timeout = \"1s\"\nunallocated-timeout = \"3s\"\n",
    );
    let legit = Legit::start(srv.stream("tcp"));
    // One byte every 400 ms: never idle for 2 s, but a message never
    // completes within 1 s.
    for kind in ["tcp", "auto"] {
        let mut s = TcpStream::connect(srv.stream(kind)).expect("connect");
        let open = trickle(&mut s, Duration::from_millis(400), Duration::from_secs(8));
        let open = open.unwrap_or_else(|| panic!("{kind}: a trickling client stayed open 8 s"));
        assert!(open < Duration::from_secs(4), "{kind}: cut after {open:?}");
    }
    // The same inside TLS.
    let mut t = streamc::tls(srv.stream("tls"));
    let m = build(req(METHOD_BINDING), vec![], None, true).raw;
    let started = Instant::now();
    let mut cut = false;
    for b in m.iter().cycle().take(40) {
        if t.io.write_all(&[*b]).and_then(|_| t.io.flush()).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(400));
        if started.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    assert!(
        cut || closed_within(&mut t.io, Duration::from_secs(1)),
        "a trickling TLS client stayed open"
    );
    // A Binding every 1 s keeps a connection busy, never idle for 2 s, but
    // without an allocation it goes after 3 s in all.
    let mut b = streamc::tcp(srv.stream("tcp"));
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_secs(8) {
        b.send(&build(req(METHOD_BINDING), vec![], None, true).raw);
        match b.recv() {
            Some(_) => answered += 1,
            None => break,
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let lived = started.elapsed();
    assert!(
        lived >= Duration::from_millis(2500) && lived < Duration::from_secs(6),
        "a Binding-only connection lived {lived:?} ({answered} answers)"
    );
    // Meanwhile the client with an allocation went on, past every timeout.
    let relayed = legit.finish();
    assert!(relayed > 30, "the legitimate client relayed {relayed} messages");
}

/// One HTTP/1.1 GET on a fresh connection to `addr`; the status line.
fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.lines().next().map(str::to_string)
}

#[test]
fn idle_and_trickling_http_clients_do_not_starve_the_page() {
    let srv = TestServer::start(
        "[http]\nlisten = [\"127.0.0.1:0\"]\naccess = \"open\"\nmax-connections = 256\nmax-connections-per-address = 20\n\
         header-timeout = \"2s\"\nidle-timeout = \"4s\"\n",
    );
    let addr = srv.http_addr();
    // 300 idle connections from one address (more than max-connections).
    let idle: Vec<TcpStream> = (0..300).filter_map(|_| TcpStream::connect(addr).ok()).collect();
    std::thread::sleep(Duration::from_millis(200));
    // Another address is still served at once.
    let other = SocketAddr::new("127.0.0.5".parse().expect("ip"), 0);
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.bind(&other.into()).expect("bind 127.0.0.5");
    s.connect_timeout(&addr.into(), Duration::from_secs(2))
        .expect("connect");
    let mut s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    write!(s, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("answer");
    assert!(
        out.starts_with("HTTP/1.1 200"),
        "healthz from another address during the flood: {out}"
    );
    // The idle ones are closed by the header timeout (2 s), and this
    // address is served again.
    let t = Instant::now();
    let mut idle = idle;
    for s in idle.iter_mut().take(20) {
        s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        assert!(
            closed_within(s, Duration::from_secs(5)),
            "an idle connection stayed open"
        );
    }
    assert!(t.elapsed() < Duration::from_secs(5));
    drop(idle);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(addr, "/healthz").as_deref(), Some("HTTP/1.1 200 OK"));
    // One header byte every 500 ms: cut at the header timeout, not kept
    // alive by the trickle.
    let mut slow = TcpStream::connect(addr).expect("connect");
    slow.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: {}\r\n\r\n",
        "a".repeat(100)
    );
    let t = Instant::now();
    let mut cut = false;
    for b in request.bytes() {
        if slow.write_all(&[b]).is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 256];
        if matches!(slow.read(&mut buf), Ok(0)) {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(400));
        if t.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    assert!(cut, "a client trickling its headers stayed open {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(5), "cut after {:?}", t.elapsed());
}

#[test]
fn https_on_the_auto_listener_has_the_same_limits() {
    let srv = TestServer::start_streams(
        "[http]\nlisten = []\naccess = \"open\"\nmax-connections-per-address = 5\nheader-timeout = \"2s\"\n",
    );
    let auto = srv.stream("auto");
    // Five TLS connections that send nothing after the handshake: the
    // sixth is refused, and all five are closed by the header timeout.
    let mut idle: Vec<_> = (0..5).map(|_| streamc::tls(auto)).collect();
    // Inside TLS turnd waits for the first byte to tell HTTP from TURN;
    // send the first bytes of a request so they are HTTP.
    for c in &mut idle {
        c.io.write_all(b"GE").expect("write");
        c.io.flush().expect("flush");
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut sixth = streamc::tls(auto);
    sixth
        .io
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    sixth.io.flush().expect("flush");
    assert!(
        closed_within(&mut sixth.io, Duration::from_secs(2)),
        "a sixth HTTPS connection from one address was served"
    );
    for c in &mut idle {
        assert!(
            closed_within(&mut c.io, Duration::from_secs(5)),
            "an idle HTTPS connection stayed open"
        );
    }
    let mut ok = streamc::tls(auto);
    ok.io
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    ok.io.flush().expect("flush");
    let mut out = Vec::new();
    let _ = ok.io.read_to_end(&mut out);
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[test]
fn a_websocket_outlives_the_idle_timeout() {
    use futures_util::StreamExt;
    let srv = TestServer::start(
        "[http]\nlisten = [\"127.0.0.1:0\"]\naccess = \"open\"\nheader-timeout = \"1s\"\nidle-timeout = \"2s\"\n",
    );
    let url = format!("ws://{}/ws", srv.http_addr());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("websocket");
        // Silent for 5 s (the client answers pings by itself while read).
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(m) = tokio::time::timeout_at(until, ws.next()).await {
            assert!(m.is_some(), "the server closed the WebSocket");
        }
        use futures_util::SinkExt;
        ws.send(tokio_tungstenite::tungstenite::Message::Text(
            r#"{"type":"join","room":"w"}"#.into(),
        ))
        .await
        .expect("still open");
        let m = tokio::time::timeout(Duration::from_secs(2), ws.next())
            .await
            .expect("an answer");
        assert!(m.is_some_and(|m| m.is_ok()));
    });
}
