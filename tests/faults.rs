//! Quotas and faults over real sockets: the per-user quota holds when one
//! user's Allocates arrive at once from many source ports (spread over the
//! workers); an exhausted relay port range answers 508 and recovers when
//! ports come free; a peer that vanishes (ICMP port unreachable) does not
//! take the allocation down; one user's allocations share one bandwidth
//! budget whichever worker serves them; a port reserved with EVEN-PORT is bound by the
//! server, and a reserved port another program holds makes it pick another
//! pair.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::server::*;
use common::stunc::*;
use stun::message::*;

/// A UDP client with its own source port.
struct Client {
    sock: UdpSocket,
    server: SocketAddr,
}

impl Client {
    fn new(server: SocketAddr) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
        Self { sock, server }
    }

    fn send(&self, m: &Message) {
        self.sock.send_to(&m.raw, self.server).expect("send");
    }

    /// The answer to `m` (other datagrams skipped).
    fn answer(&self, m: &Message) -> Message {
        let mut buf = [0u8; 2048];
        loop {
            let (n, _) = self.sock.recv_from(&mut buf).expect("an answer");
            if buf[0] < 0x40 {
                let r = decode(&buf[..n]);
                if r.transaction_id == m.transaction_id {
                    return r;
                }
            }
        }
    }

    fn ask(&self, m: &Message) -> Message {
        self.send(m);
        self.answer(m)
    }

    /// The credentials after the 401 round.
    fn cred(&self, user: &str) -> Cred {
        let r = self.ask(&build(req(METHOD_ALLOCATE), vec![transport_udp()], None, true));
        assert_eq!(error_code(&r), Some(401));
        let (u, p) = rest_creds(user);
        Cred {
            user: u,
            realm: REALM.into(),
            pass: p,
            nonce: text(&r, stun::attributes::ATTR_NONCE).expect("nonce"),
        }
    }
}

fn allocate_msg(cred: &Cred) -> Message {
    build(req(METHOD_ALLOCATE), vec![transport_udp()], Some(cred), true)
}

#[test]
fn per_user_quota_holds_under_concurrent_allocates() {
    let srv = TestServer::start("[relay]\nmax-allocations-per-user = 10\n");
    let clients: Vec<Client> = (0..60).map(|_| Client::new(srv.addr)).collect();
    let creds: Vec<Cred> = clients.iter().map(|c| c.cred("crowd")).collect();
    // All 60 signed Allocates leave before any answer is read.
    let msgs: Vec<Message> = creds.iter().map(allocate_msg).collect();
    for (c, m) in clients.iter().zip(&msgs) {
        c.send(m);
    }
    let codes: Vec<Option<u16>> = clients
        .iter()
        .zip(&msgs)
        .map(|(c, m)| error_code(&c.answer(m)))
        .collect();
    assert_eq!(codes.iter().filter(|c| c.is_none()).count(), 10, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == Some(486)).count(), 50, "{codes:?}");
    assert_eq!(srv.allocations(), 10);
    // Freed places can be taken again.
    for (c, (cred, code)) in clients.iter().zip(creds.iter().zip(&codes)) {
        if code.is_none() {
            let r = c.ask(&build(req(METHOD_REFRESH), vec![lifetime_attr(0)], Some(cred), true));
            assert!(is_success(&r), "refresh 0: {r}");
        }
    }
    assert!(srv.wait_idle(Duration::from_secs(5)));
    let fresh = Client::new(srv.addr);
    let cred = fresh.cred("crowd");
    assert!(is_success(&fresh.ask(&allocate_msg(&cred))));
}

#[test]
fn exhausted_port_range_answers_508_and_recovers() {
    let srv = TestServer::start("[relay]\nmin-port = 61000\nmax-port = 61003\n");
    let clients: Vec<Client> = (0..5).map(|_| Client::new(srv.addr)).collect();
    let creds: Vec<Cred> = clients.iter().map(|c| c.cred("ports")).collect();
    for (c, cred) in clients.iter().zip(&creds).take(4) {
        assert!(is_success(&c.ask(&allocate_msg(cred))));
    }
    assert_eq!(error_code(&clients[4].ask(&allocate_msg(&creds[4]))), Some(508));
    // One allocation ends: its port is free for the fifth client.
    let r = clients[0].ask(&build(
        req(METHOD_REFRESH),
        vec![lifetime_attr(0)],
        Some(&creds[0]),
        true,
    ));
    assert!(is_success(&r));
    let cred = clients[4].cred("ports");
    assert!(
        is_success(&clients[4].ask(&allocate_msg(&cred))),
        "no recovery after a port came free"
    );
    assert_eq!(srv.ports_in_use(), 4);
}

#[test]
fn a_reserved_port_is_bound_and_a_taken_one_makes_a_new_pair() {
    let srv = TestServer::start("[relay]\nmin-port = 61010\nmax-port = 61013\n");
    // Another program holds the odd port of the first pair.
    let squatter = UdpSocket::bind("127.0.0.1:61011").expect("61011 is free");
    let a = Client::new(srv.addr);
    let cred = a.cred("pairs");
    let even_reserve = raw(0x0018, &[0x80]);
    let r = a.ask(&build(
        req(METHOD_ALLOCATE),
        vec![transport_udp(), even_reserve],
        Some(&cred),
        true,
    ));
    assert_eq!(relayed(&r).map(|x| x.port()), Some(61012), "{r}");
    let token = r
        .get(stun::attributes::ATTR_RESERVATION_TOKEN)
        .expect("RESERVATION-TOKEN");
    // The reserved port is bound by turnd: nothing else can take it.
    let err = UdpSocket::bind("127.0.0.1:61013").expect_err("61013 is held");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    drop(squatter);
    let b = Client::new(srv.addr);
    let cred = b.cred("pairs");
    let r = b.ask(&build(
        req(METHOD_ALLOCATE),
        vec![transport_udp(), raw(0x0022, &token)],
        Some(&cred),
        true,
    ));
    assert_eq!(relayed(&r).map(|x| x.port()), Some(61013), "{r}");
    // The held socket is the relay: data reaches the client through it.
    let p = UdpSocket::bind((PEER_IP, 0)).expect("bind");
    let to = p.local_addr().expect("addr");
    let r = b.ask(&build(req(METHOD_CREATE_PERMISSION), vec![peer(to)], Some(&cred), true));
    assert!(is_success(&r), "{r}");
    p.send_to(b"via-held", "127.0.0.1:61013").expect("send");
    let mut buf = [0u8; 2048];
    let n = b.sock.recv(&mut buf).expect("a Data indication");
    let (_, d) = data_indication(&decode(&buf[..n])).expect("Data indication");
    assert_eq!(d, b"via-held");
}

#[test]
fn max_bps_per_user_holds_over_many_allocations() {
    let srv = TestServer::start("[relay]\nmax-bps-per-user = 2000\n");
    let sink = UdpSocket::bind((PEER_IP, 0)).expect("bind sink");
    sink.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let to = sink.local_addr().expect("addr");
    // Four allocations of one user from four source ports (spread over the
    // workers), each sending 5 × 500 bytes: 10 000 bytes in all.
    let clients: Vec<Client> = (0..4).map(|_| Client::new(srv.addr)).collect();
    for c in &clients {
        let cred = c.cred("heavy");
        assert!(is_success(&c.ask(&allocate_msg(&cred))));
        let bind = build(
            req(METHOD_CHANNEL_BIND),
            vec![channel(0x4000), peer(to)],
            Some(&cred),
            true,
        );
        assert!(is_success(&c.ask(&bind)));
    }
    for _ in 0..5 {
        for c in &clients {
            c.sock
                .send_to(&channel_data(0x4000, &[7; 500], false), srv.addr)
                .expect("send");
        }
    }
    let mut got = 0;
    let mut buf = [0u8; 2048];
    while let Ok(n) = sink.recv(&mut buf) {
        got += n;
    }
    // One second's worth (plus what refilled while sending), not 10 000.
    assert!((2000..=2500).contains(&got), "the sink got {got} bytes");
    let dropped = srv.over_bandwidth(15);
    assert!(
        (15..=16).contains(&dropped),
        "{dropped} packets counted as over the limit"
    );
}

#[test]
fn a_vanished_peer_does_not_take_the_allocation_down() {
    let srv = TestServer::start("");
    let (peer, echo) = echo_peer();
    let c = Client::new(srv.addr);
    let cred = c.cred("vanish");
    assert!(is_success(&c.ask(&allocate_msg(&cred))));
    let bind = build(
        req(METHOD_CHANNEL_BIND),
        vec![channel(0x4000), common::stunc::peer(peer)],
        Some(&cred),
        true,
    );
    assert!(is_success(&c.ask(&bind)));
    c.sock
        .send_to(&channel_data(0x4000, b"hello", false), srv.addr)
        .expect("send");
    let mut buf = [0u8; 2048];
    let (n, _) = c.sock.recv_from(&mut buf).expect("echo");
    assert_eq!(&buf[4..n], b"hello");
    // The peer goes away: sends to it now draw ICMP port unreachable
    // (which the relay socket does not see: it is not connected).
    drop(echo);
    for _ in 0..20 {
        c.sock
            .send_to(&channel_data(0x4000, b"anyone?", false), srv.addr)
            .expect("send");
    }
    // All 21 went out to the vanished peer.
    let sent = srv.stats_when(|s| s.to_peer[0].packets >= 21).to_peer[0].packets;
    assert_eq!(sent, 21, "the server relayed the hello and the 20 to the vanished peer");
    // The allocation is still there and answers; a new peer works.
    let r = c.ask(&build(req(METHOD_REFRESH), vec![lifetime_attr(600)], Some(&cred), true));
    assert!(is_success(&r), "refresh after ICMP errors: {r}");
    assert_eq!(srv.allocations(), 1);
    let (peer2, _echo2) = echo_peer();
    let bind = build(
        req(METHOD_CHANNEL_BIND),
        vec![channel(0x4001), common::stunc::peer(peer2)],
        Some(&cred),
        true,
    );
    assert!(is_success(&c.ask(&bind)));
    c.sock
        .send_to(&channel_data(0x4001, b"again", false), srv.addr)
        .expect("send");
    let (n, _) = c.sock.recv_from(&mut buf).expect("echo from the new peer");
    assert_eq!(&buf[4..n], b"again");
}

/// Out of file descriptors (a 64-descriptor limit): Allocates that cannot
/// get a relay socket get 508, a TCP connection waits in the backlog
/// instead of spinning the accept loop, and both recover once allocations
/// end and descriptors come free.
#[test]
fn running_out_of_file_descriptors_answers_508_and_recovers() {
    use common::process::{free_tcp_port, free_udp_port, Proc};
    let (udp, tcp) = (free_udp_port(), free_tcp_port());
    let listeners = listener_toml("127.0.0.1", udp, "udp") + &listener_toml("127.0.0.1", tcp, "tcp");
    let config = format!(
        r#"realm = "{REALM}"
data-dir = "{{dir}}"
workers = 1
{listeners}[auth]
static-auth-secrets = ["{SECRET}"]
[http]
listen = []
"#
    );
    let d = Proc::spawn_limited(&config, 64);
    let tcp_addr = SocketAddr::from(([127, 0, 0, 1], tcp));
    d.wait_listening(tcp_addr);
    let server = SocketAddr::from(([127, 0, 0, 1], udp));
    let mut held = Vec::new();
    let mut refused = None;
    for i in 0..80 {
        let c = Client::new(server);
        let cred = c.cred("fds");
        let r = c.ask(&allocate_msg(&cred));
        if is_success(&r) {
            held.push((c, cred));
        } else {
            refused = Some((i, error_code(&r)));
            break;
        }
    }
    let (at, code) = refused.expect("the descriptor limit was never reached");
    assert_eq!(code, Some(508), "after {at} allocations");
    assert!(at > 10, "only {at} allocations under a 64-descriptor limit");
    // A TCP client now: accept fails (EMFILE) and is retried, not spun.
    let mut waiting = std::net::TcpStream::connect(tcp_addr).expect("the kernel accepts into the backlog");
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let log = d.wait_log("accept failed", Duration::from_secs(5));
    assert!(
        log.contains("accept failed"),
        "the EMFILE on accept is not logged:\n{log}"
    );
    // Free half the allocations.
    for (c, cred) in held.drain(..held.len() / 2) {
        let r = c.ask(&build(req(METHOD_REFRESH), vec![lifetime_attr(0)], Some(&cred), true));
        assert!(is_success(&r));
    }
    // The waiting TCP connection is served now.
    use std::io::{Read, Write};
    let b = build(req(METHOD_BINDING), vec![], None, true);
    waiting.write_all(&b.raw).expect("write");
    let mut buf = [0u8; 512];
    let n = waiting.read(&mut buf).expect("an answer once descriptors are free");
    assert!(n >= 20 && is_success(&decode(&buf[..n])));
    // And new allocations work again.
    let c = Client::new(server);
    let cred = c.cred("fds");
    assert!(
        is_success(&c.ask(&allocate_msg(&cred))),
        "no recovery after descriptors came free"
    );
}
