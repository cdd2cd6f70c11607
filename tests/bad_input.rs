//! Malformed input of every shape, as a storm from several sockets, while a
//! real client keeps relaying: over UDP (the `turn` crate's client) and over
//! TCP (connections that send junk, stop mid-message, or stay silent, next
//! to a TCP client): no panic, the client loses nothing, the server keeps
//! answering, the storm's 401s are rate-limited, memory stays bounded and
//! nothing leaks.

mod common;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::server::*;
use common::streamc;
use common::stunc::*;
use rand::{Rng, SeedableRng};
use stun::message::*;
use webrtc_util::Conn;

/// One malformed datagram of kind `k`.
fn junk(rng: &mut impl Rng, k: u32, cred: &Cred) -> Vec<u8> {
    let valid = || build(req(METHOD_ALLOCATE), vec![transport_udp()], Some(cred), true).raw;
    match k % 10 {
        // Truncated header.
        0 => valid()[..rng.random_range(0..20)].to_vec(),
        // Wrong magic cookie.
        1 => {
            let mut m = valid();
            m[4] ^= 0xff;
            m
        }
        // Length past the datagram.
        2 => {
            let mut m = valid();
            let l = (m.len() - 20 + 4 * rng.random_range(1..100)) as u16;
            m[2..4].copy_from_slice(&l.to_be_bytes());
            m
        }
        // Attributes after MESSAGE-INTEGRITY.
        3 => {
            let mut m = build(req(METHOD_CREATE_PERMISSION), vec![], Some(cred), false).raw;
            m.extend_from_slice(&[0x00, 0x12, 0x00, 0x08, 0x00, 0x01, 0x00, 0x50, 0x7f, 0x00, 0x00, 0x01]);
            let l = (m.len() - 20) as u16;
            m[2..4].copy_from_slice(&l.to_be_bytes());
            m
        }
        // Oversized datagram (a few of them: they fill socket buffers fast).
        4 if rng.random_range(0..20) == 0 => {
            let mut m = vec![0u8; 65000];
            rng.fill(&mut m[..]);
            m[0] &= 0x3f;
            m
        }
        // Random bytes.
        5 | 4 => (0..rng.random_range(1..600)).map(|_| rng.random()).collect(),
        // ChannelData on unbound channels, with bad lengths.
        6 => {
            let mut m = channel_data(rng.random_range(0x4000..0x8000), &[7; 40], false);
            if rng.random() {
                m[2] = 0xff;
            }
            m
        }
        // Unauthenticated Allocate (answered with a small 401).
        7 => build(req(METHOD_ALLOCATE), vec![transport_udp()], None, false).raw,
        // Bit flips in a valid authenticated request.
        8 => {
            let mut m = valid();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..m.len());
                m[i] ^= 1 << rng.random_range(0..8);
            }
            m
        }
        // Unknown attributes and garbage attribute lengths.
        _ => {
            let mut m = build(req(METHOD_BINDING), vec![raw(0x7fff, &[1, 2, 3])], None, false).raw;
            if rng.random() {
                m[22] = 0xff;
            }
            m
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_of_malformed_datagrams_while_a_client_relays() {
    let srv = TestServer::start("");
    let server = srv.addr;
    let (peer, _echo) = echo_peer();
    let sent = Arc::new(AtomicU64::new(0));
    let cred = storm_cred();
    let counter = sent.clone();
    let rss_before = rss_kib();
    // ~8000 datagrams/s from 8 sockets of another address than the real
    // client's (10 % of them unauthenticated Allocates: 10× the client's
    // rate, and 8× the 401 limit), bounded to 20 s.
    let storm = Bg::spawn(Duration::from_secs(20), move |stop, end| {
        let socks: Vec<UdpSocket> = (0..8).map(|_| UdpSocket::bind("127.0.0.2:0").expect("bind")).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut k = 0u32;
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            for s in &socks {
                for _ in 0..10 {
                    let m = junk(&mut rng, k, &cred);
                    k += 1;
                    let _ = s.send_to(&m, server);
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });

    let (user, pass) = rest_creds("alice");
    let c = turn_client(server, &user, &pass).await;
    let relay = c.allocate().await.expect("allocate under storm");
    echo_through(&relay, peer, 300, Duration::from_millis(10)).await;
    relay.close().await.expect("close");
    c.close().await.expect("close client");
    drop(storm);
    assert!(sent.load(Ordering::Relaxed) > 10_000, "the storm ran");
    assert!(srv.challenges_limited() > 0, "the storm's 401s were rate-limited");
    // Memory stays bounded: the whole test process grew by little.
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(grown < 32 * 1024, "RSS grew by {grown} KiB during the storm");

    // Still answering.
    let probe = UdpSocket::bind("127.0.0.1:0").expect("bind");
    probe.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let m = build(req(METHOD_BINDING), vec![], None, false);
    probe.send_to(&m.raw, server).expect("send");
    let mut b = [0u8; 512];
    let (n, _) = probe.recv_from(&mut b).expect("Binding answered after the storm");
    assert_eq!(mapped(&decode(&b[..n])), Some(probe.local_addr().expect("addr")));
    // Nothing the storm sent created anything, and the client's allocation is gone.
    assert!(
        srv.wait_idle(Duration::from_secs(5)),
        "allocations {} ports {}",
        srv.allocations(),
        srv.ports_in_use()
    );
}

#[test]
fn storm_of_malformed_tcp_connections_while_a_tcp_client_relays() {
    let srv = TestServer::start_streams("");
    let server = srv.stream("tcp");
    let (peer, _echo) = echo_peer();
    let cred = storm_cred();
    let connections = Arc::new(AtomicU64::new(0));
    let counter = connections.clone();
    let rss_before = rss_kib();
    // Connections from another address: each sends a few malformed
    // messages (or half of one, or nothing) and goes; every tenth stays
    // open and silent. Bounded to 20 s and 200 silent ones.
    let storm = Bg::spawn(Duration::from_secs(20), move |stop, end| {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        let mut silent = Vec::new();
        let mut k = 0u32;
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            let local = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
            local
                .bind(&"127.0.0.2:0".parse::<std::net::SocketAddr>().expect("addr").into())
                .expect("bind");
            if local.connect(&server.into()).is_err() {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let mut s: std::net::TcpStream = local.into();
            counter.fetch_add(1, Ordering::Relaxed);
            k += 1;
            if k % 10 == 0 && silent.len() < 200 {
                silent.push(s);
                continue;
            }
            for _ in 0..rng.random_range(1..4) {
                let kind = rng.random();
                let mut m = junk(&mut rng, kind, &cred);
                if rng.random_range(0..4) == 0 {
                    m.truncate(rng.random_range(0..m.len().max(1)));
                }
                if std::io::Write::write_all(&mut s, &m).is_err() {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });

    let mut c = streamc::tcp(srv.stream("tcp"));
    let (cred, _) = c.allocate("alice");
    c.bind(&cred, 0x4000, peer);
    let mut echoed = 0;
    for i in 0..300u32 {
        c.send(&channel_data(0x4000, &i.to_be_bytes(), true));
        match c.recv() {
            Some(streamc::Item::Channel(0x4000, d)) if d == i.to_be_bytes() => echoed += 1,
            other => panic!("message {i}: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(echoed, 300);
    let made = connections.load(Ordering::Relaxed);
    drop(storm);
    assert!(made > 300, "the storm ran ({made} connections)");
    eprintln!("{made} storm connections during 300 echoed ChannelData");
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(grown < 32 * 1024, "RSS grew by {grown} KiB during the storm");
    // Still answering new connections, and the client's allocation ends
    // with its connection; nothing of the storm's is left.
    let mut probe = streamc::tcp(srv.stream("tcp"));
    let r = probe.request(&build(req(METHOD_BINDING), vec![], None, false));
    assert!(is_success(&r), "{r}");
    drop(c);
    assert!(
        srv.wait_idle(Duration::from_secs(5)),
        "allocations {} ports {}",
        srv.allocations(),
        srv.ports_in_use()
    );
}

/// The credentials the storm signs its junk with: a real user, a nonce
/// turnd never issued.
fn storm_cred() -> Cred {
    let (user, pass) = rest_creds("stormy");
    Cred {
        user,
        realm: REALM.into(),
        pass,
        nonce: "00000000000000000000000000000000".into(),
    }
}

/// This test process's RSS in KiB (the server runs in it).
fn rss_kib() -> u64 {
    common::soak::usage(std::process::id()).0
}
