//! TURN over TCP, TLS and the `auto` listener, with a client whose framing
//! is not turnd's: messages split across TCP segments at every boundary and
//! several in one segment, ChannelData padding both ways, the allocation
//! dying with its connection, the connection limits and timeouts, and the
//! `auto` listener's HTTP side.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::server::*;
use common::streamc::{self, Item};
use common::stunc::*;
use stun::message::*;

/// Writes `bytes` in pieces cut at `cuts`, each pushed out on its own
/// (Nagle off, a pause between), so the server sees separate segments.
fn write_split(s: &mut TcpStream, bytes: &[u8], cuts: &[usize]) {
    let mut at = 0;
    for &c in cuts.iter().chain(std::iter::once(&bytes.len())) {
        s.write_all(&bytes[at..c]).expect("write");
        s.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(15));
        at = c;
    }
}

#[test]
fn split_and_coalesced_messages_and_padded_channel_data_over_tcp() {
    let srv = TestServer::start_streams("");
    let (peer, _echo) = echo_peer();
    let mut c = streamc::tcp(srv.stream("tcp"));

    // A 401 for an Allocate sent one byte per segment.
    let m = build(req(METHOD_ALLOCATE), vec![transport_udp()], None, true);
    let cuts: Vec<usize> = (1..m.raw.len()).collect();
    write_split(&mut c.io, &m.raw, &cuts);
    let r = c.recv_stun();
    assert_eq!((r.transaction_id, error_code(&r)), (m.transaction_id, Some(401)));

    let (cred, relayed) = c.allocate("split");
    assert_eq!(srv.allocations(), 1);

    // Three requests in one segment: three answers, in order.
    let a = build(
        req(METHOD_CREATE_PERMISSION),
        vec![common::stunc::peer(peer)],
        Some(&cred),
        true,
    );
    let b = build(
        req(METHOD_CHANNEL_BIND),
        vec![channel(0x4001), common::stunc::peer(peer)],
        Some(&cred),
        true,
    );
    let d = build(req(METHOD_BINDING), vec![], None, true);
    c.send(&[a.raw.clone(), b.raw.clone(), d.raw.clone()].concat());
    for want in [&a, &b, &d] {
        let r = c.recv_stun();
        assert_eq!(r.transaction_id, want.transaction_id);
        assert!(is_success(&r), "{r}");
    }

    // ChannelData with lengths 1..=9 (padding 3, 2, 1, 0 …): coalesced in
    // one segment, then each split inside its header, at the payload and
    // inside the padding. The echo comes back padded, with the payload.
    let payloads: Vec<Vec<u8>> = (1..=9u8).map(|n| vec![n; n as usize]).collect();
    let framed: Vec<Vec<u8>> = payloads.iter().map(|p| channel_data(0x4001, p, true)).collect();
    c.send(&framed.concat());
    for p in &payloads {
        assert_eq!(c.recv(), Some(Item::Channel(0x4001, p.clone())));
    }
    for (f, p) in framed.iter().zip(&payloads) {
        write_split(&mut c.io, f, &[1, 3, 4, f.len() - 1]);
        assert_eq!(c.recv(), Some(Item::Channel(0x4001, p.clone())));
    }
    // A Binding request glued to the tail of a ChannelData message.
    let d = build(req(METHOD_BINDING), vec![], None, true);
    let glued = [channel_data(0x4001, b"abcde", true), d.raw.clone()].concat();
    write_split(&mut c.io, &glued, &[6, 10]);
    // The answer comes straight back, the echo after a trip to the peer:
    // either order is right.
    let mut got = [c.recv(), c.recv()];
    got.sort_by_key(|i| matches!(i, Some(Item::Stun(_))));
    assert_eq!(got[0], Some(Item::Channel(0x4001, b"abcde".to_vec())));
    match &got[1] {
        Some(Item::Stun(b)) => assert_eq!(decode(b).transaction_id, d.transaction_id),
        other => panic!("no Binding answer: {other:?}"),
    }

    // A Send indication works too (a Data indication would come back if no
    // channel were bound; with one, ChannelData).
    let s = build(
        MessageType::new(METHOD_SEND, CLASS_INDICATION),
        vec![common::stunc::peer(peer), data(b"via send")],
        None,
        false,
    );
    c.send(&s.raw);
    assert_eq!(c.recv(), Some(Item::Channel(0x4001, b"via send".to_vec())));
    assert!(relayed.port() > 0);

    // The allocation belongs to the connection.
    drop(c);
    assert!(srv.wait_idle(Duration::from_secs(5)), "allocation left after close");
}

#[test]
fn tls_and_auto_carry_turn_and_the_allocation_dies_with_the_connection() {
    let srv = TestServer::start_streams("");
    let (peer, _echo) = echo_peer();
    let versions = [&rustls::version::TLS12, &rustls::version::TLS13];
    for (kind, version) in ["tls", "auto"].into_iter().flat_map(|k| versions.map(|v| (k, v))) {
        let name = format!("{:?}", version.version);
        let mut c = streamc::tls_with(srv.stream(kind), &[version]);
        assert_eq!(c.io.conn.protocol_version(), Some(version.version), "{kind} {name}");
        assert_eq!(streamc::presented(&c), srv.fingerprint());
        let (cred, _) = c.allocate(kind);
        c.bind(&cred, 0x4002, peer);
        c.send(&[channel_data(0x4002, b"one", true), channel_data(0x4002, b"three", true)].concat());
        assert_eq!(c.recv(), Some(Item::Channel(0x4002, b"one".to_vec())));
        assert_eq!(c.recv(), Some(Item::Channel(0x4002, b"three".to_vec())));
        assert_eq!(srv.allocations(), 1);
        drop(c);
        assert!(
            srv.wait_idle(Duration::from_secs(5)),
            "{kind} {name}: allocation left after close"
        );
    }
    // Plain TURN over TCP on the auto port.
    let mut c = streamc::tcp(srv.stream("auto"));
    let (cred, _) = c.allocate("auto-plain");
    c.bind(&cred, 0x4003, peer);
    c.send(&channel_data(0x4003, b"plain", true));
    assert_eq!(c.recv(), Some(Item::Channel(0x4003, b"plain".to_vec())));
}

#[test]
fn garbage_closes_the_connection_and_nothing_else() {
    let srv = TestServer::start_streams("");
    let mut good = streamc::tcp(srv.stream("tcp"));
    let (_cred, _) = good.allocate("bystander");
    // Leading bits 10, all ones, an unaligned STUN length, a wrong cookie.
    for junk in [
        &b"\x80\x00\x00\x00garbage"[..],
        &[0xffu8; 64][..],
        b"\x00\x01\xff\xfftoo long",
        b"\x00\x01\x00\x08\x21\x12\xa4\x43\x00\x00\x00\x00",
    ] {
        let mut c = streamc::tcp(srv.stream("tcp"));
        c.send(junk);
        assert_eq!(c.recv(), None, "{junk:?} not refused");
    }
    let r = good.request(&build(req(METHOD_BINDING), vec![], None, true));
    assert!(is_success(&r));
    assert_eq!(srv.allocations(), 1);
}

#[test]
fn limits_and_timeouts() {
    let srv = TestServer::start_streams(
        "[tcp]\nmax-connections-per-address = 3\nidle-timeout = \"1s\"\nhandshake-timeout = \"1s\"\n",
    );
    // Idle without an allocation: closed after about a second.
    let mut idle = streamc::tcp(srv.stream("tcp"));
    let t = Instant::now();
    assert_eq!(idle.recv(), None);
    assert!(t.elapsed() >= Duration::from_millis(900) && t.elapsed() < Duration::from_secs(4));
    // A silent TLS client: cut at the handshake deadline.
    let mut silent = TcpStream::connect(srv.stream("tls")).expect("connect");
    silent.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let t = Instant::now();
    assert!(matches!(silent.read(&mut [0u8; 16]), Ok(0) | Err(_)));
    assert!(t.elapsed() < Duration::from_secs(4));
    drop(silent);

    // With an allocation the connection outlives the idle timeout.
    let mut kept = streamc::tcp(srv.stream("tcp"));
    kept.allocate("kept");
    std::thread::sleep(Duration::from_millis(2500));
    let r = kept.request(&build(req(METHOD_BINDING), vec![], None, true));
    assert!(is_success(&r));

    // Three per address: `kept` and two more; the fourth is closed at once.
    let mut more: Vec<_> = (0..2).map(|_| streamc::tcp(srv.stream("tcp"))).collect();
    for m in &mut more {
        assert!(is_success(&m.request(&build(req(METHOD_BINDING), vec![], None, true))));
    }
    let mut refused = streamc::tcp(srv.stream("auto"));
    refused
        .io
        .write_all(&build(req(METHOD_BINDING), vec![], None, true).raw)
        .ok();
    assert_eq!(refused.recv(), None);
    // Their places come free once the server has seen them close.
    drop(more);
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = streamc::tcp(srv.stream("tcp"));
        again
            .io
            .write_all(&build(req(METHOD_BINDING), vec![], None, true).raw)
            .ok();
        if again.recv().is_some() {
            break;
        }
        assert!(Instant::now() < end, "no place freed after two connections closed");
    }
}

/// One HTTP/1.1 request over `io`; the whole answer.
fn http_get(io: &mut impl ReadWrite, path: &str) -> String {
    write!(
        io,
        "GET {path} HTTP/1.1\r\nHost: turn.example.org:8443\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    io.flush().expect("flush");
    let mut out = Vec::new();
    let _ = io.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[test]
fn auto_serves_the_page_over_tls_and_redirects_plain_http() {
    let srv = TestServer::start_streams("[http]\nlisten = []\naccess = \"open\"\n");
    let mut plain = TcpStream::connect(srv.stream("auto")).expect("connect");
    plain.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    // The redirect names turnd's public host and this listener's port,
    // never the Host header the client sent (turn.example.org:8443 here).
    let answer = http_get(&mut plain, "/room?x=1");
    assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");
    let port = srv.stream("auto").port();
    let location = format!("location: https://127.0.0.1:{port}/room?x=1");
    assert!(answer.to_ascii_lowercase().contains(&location), "{answer}");
    assert!(!answer.contains("turn.example.org"), "{answer}");

    let mut tls = streamc::tls(srv.stream("auto"));
    let answer = http_get(&mut tls.io, "/healthz");
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"),
        "{answer}"
    );
    let mut tls = streamc::tls(srv.stream("auto"));
    let answer = http_get(&mut tls.io, "/api/ice");
    let port = srv.stream("auto").port();
    assert!(
        answer.contains(&format!("turns:127.0.0.1:{port}?transport=tcp")),
        "{answer}"
    );
    let tcp = srv.stream("tcp").port();
    assert!(
        answer.contains(&format!("turn:127.0.0.1:{tcp}?transport=tcp")),
        "{answer}"
    );

    // HTTP on a `tls` listener is not TURN: the connection is closed.
    let mut not_turn = streamc::tls(srv.stream("tls"));
    let answer = http_get(&mut not_turn.io, "/healthz");
    assert!(!answer.contains("200"), "{answer}");
}
