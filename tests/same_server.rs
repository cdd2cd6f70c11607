//! Two people on the same turnd relay to each other whatever its address:
//! with the default peer policy (relays on 127.0.0.1, a denied range) each
//! client may install a permission and a channel for the other's relayed
//! address, and data goes from one allocation to the other inside the
//! process, over UDP, TCP and TLS clients, as Send/Data indications and as
//! ChannelData. The advertised relay address (`external-ip`) is a loopback
//! address nothing listens on, so data that took a trip through the kernel
//! (or needed NAT hairpinning) would be lost: only the in-process handoff
//! delivers it. A relay freed by a deleted allocation stops being a peer.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;

use common::server::*;
use common::streamc::{self, Framed, Item};
use common::stunc::*;
use stun::message::*;

/// Where the relays are advertised: a loopback address nothing listens on.
const UNREACHABLE: &str = "127.0.0.9";

fn server() -> TestServer {
    TestServer::start_streams(&format!("[peers]\n[relay]\nexternal-ip = [\"{UNREACHABLE}\"]\n"))
}

fn permit<S: Read + Write>(c: &mut Framed<S>, cred: &Cred, to: SocketAddr) -> Message {
    c.request(&build(req(METHOD_CREATE_PERMISSION), vec![peer(to)], Some(cred), true))
}

fn send_indication<S: Read + Write>(c: &mut Framed<S>, to: SocketAddr, payload: &[u8]) {
    let m = build(
        MessageType::new(METHOD_SEND, CLASS_INDICATION),
        vec![peer(to), data(payload)],
        None,
        false,
    );
    c.send(&m.raw);
}

/// The whole exchange between `a` and `b`.
fn exchange<A: Read + Write, B: Read + Write>(what: &str, a: &mut Framed<A>, b: &mut Framed<B>) {
    let (ca, ra) = a.allocate("alice");
    let (cb, rb) = b.allocate("bob");
    assert_eq!(ra.ip().to_string(), UNREACHABLE, "{what}: advertised relay");
    assert!(
        is_success(&permit(a, &ca, rb)),
        "{what}: permission to the other's relay"
    );
    assert!(is_success(&permit(b, &cb, ra)), "{what}");
    send_indication(a, rb, b"send to data");
    let m = b.recv_stun();
    assert_eq!(data_indication(&m), Some((ra, b"send to data".to_vec())), "{what}");
    a.bind(&ca, 0x4000, rb);
    b.bind(&cb, 0x4abc, ra);
    for i in 0..20u8 {
        a.send(&channel_data(0x4000, &[i; 100], true));
        assert_eq!(
            b.recv(),
            Some(Item::Channel(0x4abc, vec![i; 100])),
            "{what}: A to B #{i}"
        );
        b.send(&channel_data(0x4abc, &[i; 33], true));
        assert_eq!(
            a.recv(),
            Some(Item::Channel(0x4000, vec![i; 33])),
            "{what}: B to A #{i}"
        );
    }
    // B deletes its allocation: its address is no peer any more.
    let r = b.request(&build(req(METHOD_REFRESH), vec![lifetime_attr(0)], Some(&cb), true));
    assert!(is_success(&r), "{what}");
    let r = permit(a, &ca, rb);
    assert_eq!(error_code(&r), Some(403), "{what}: a freed relay address");
    let r = a.request(&build(req(METHOD_REFRESH), vec![lifetime_attr(0)], Some(&ca), true));
    assert!(is_success(&r), "{what}");
}

#[test]
fn udp_to_tcp() {
    let srv = server();
    exchange(
        "udp-tcp",
        &mut streamc::udp(srv.addr),
        &mut streamc::tcp(srv.stream("tcp")),
    );
    assert!(srv.wait_idle(std::time::Duration::from_secs(5)));
}

#[test]
fn tls_to_udp() {
    let srv = server();
    exchange(
        "tls-udp",
        &mut streamc::tls(srv.stream("tls")),
        &mut streamc::udp(srv.addr),
    );
    assert!(srv.wait_idle(std::time::Duration::from_secs(5)));
}

#[test]
fn tcp_to_tls_on_the_auto_listener() {
    let srv = server();
    exchange(
        "tcp-tls",
        &mut streamc::tcp(srv.stream("auto")),
        &mut streamc::tls(srv.stream("auto")),
    );
    assert!(srv.wait_idle(std::time::Duration::from_secs(5)));
}

#[test]
fn udp_to_udp_many_clients_across_workers() {
    // Ten pairs from ten source ports: the kernel spreads them over both
    // workers, so most handoffs cross from one worker to the other.
    let srv = server();
    for i in 0..10 {
        exchange(
            &format!("udp pair {i}"),
            &mut streamc::udp(srv.addr),
            &mut streamc::udp(srv.addr),
        );
    }
    assert!(srv.wait_idle(std::time::Duration::from_secs(5)));
}
