//! The SSRF matrix: 60+ peer addresses in every denied range and every
//! spelling (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) are refused
//! with 403 on CreatePermission and on ChannelBind, over UDP and over TCP,
//! and Send indications to them are dropped: listeners bound on 127.0.0.x
//! and ::1 receive nothing. The same holds with an operator allow-list for
//! an unrelated range, and a positive workers (loopback allowed) shows the
//! listeners would have received the data.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::server::*;
use common::streamc::{self, Framed};
use common::stunc::*;
use stun::message::*;
use turn::proto::reqfamily::REQUESTED_FAMILY_IPV6;

const IPV4: &[&str] = &[
    "0.0.0.0",
    "0.0.0.1",
    "0.1.2.3",
    "127.0.0.1",
    "127.0.0.2",
    "127.1.1.1",
    "127.255.255.254",
    "10.0.0.1",
    "10.1.2.3",
    "10.255.255.255",
    "100.64.0.1",
    "100.100.100.200",
    "100.127.255.254",
    "169.254.169.254",
    "169.254.0.1",
    "172.16.0.1",
    "172.20.0.5",
    "172.31.255.254",
    "192.168.0.1",
    "192.168.1.1",
    "192.168.255.255",
    "192.0.0.8",
    "192.0.0.170",
    "192.0.2.1",
    "198.18.0.1",
    "198.19.255.254",
    "198.51.100.1",
    "203.0.113.1",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.254",
    "255.255.255.255",
];

const IPV6: &[&str] = &[
    "::",
    "::1",
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:192.168.1.1",
    "::ffff:0.0.0.0",
    "::127.0.0.1",
    "::10.0.0.1",
    "::169.254.169.254",
    "64:ff9b::7f00:1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b::a00:1",
    "64:ff9b:1::7f00:1",
    // Local-use NAT64 (RFC 8215) in the RFC 6052 /64 layout: 127.0.0.1,
    // 192.168.1.1 and 10.0.0.1 around the reserved octet.
    "64:ff9b:1:0:7f:0:100:0",
    "64:ff9b:1:0:c0:a801:100:0",
    "64:ff9b:1:0:a:0:100:0",
    "2002:7f00:1::1",
    "2002:a00:1::1",
    "2002:a9fe:a9fe::1",
    // Teredo: the client address is the last 32 bits inverted.
    "2001:0:4136:e378:8000:63bf:80ff:fffe",
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",
    "fe80::1",
    "fe80::abcd:1",
    "fc00::1",
    "fd12::1",
    "fd00:ec2::254",
    "fec0::1",
    "ff02::1",
    "ff05::1:3",
    "2001:db8::1",
    "2001:db8:ffff::1",
];

/// UDP sockets on loopback addresses counting every byte they receive.
struct Listeners {
    port: u16,
    bytes: Arc<AtomicU64>,
    _bg: Vec<Bg>,
}

fn listeners(ips: &[IpAddr]) -> Listeners {
    let first = UdpSocket::bind(SocketAddr::new(ips[0], 0)).expect("bind");
    let port = first.local_addr().expect("addr").port();
    let bytes = Arc::new(AtomicU64::new(0));
    let mut socks = vec![first];
    for ip in &ips[1..] {
        if let Ok(s) = UdpSocket::bind(SocketAddr::new(*ip, port)) {
            socks.push(s);
        }
    }
    let bg = socks
        .into_iter()
        .map(|s| {
            let bytes = bytes.clone();
            s.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
            Bg::spawn(Duration::from_secs(60), move |stop, _| {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = s.recv(&mut buf) {
                        bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    Listeners { port, bytes, _bg: bg }
}

/// Allocates (IPv6 relay when `v6`), then for every address: CreatePermission
/// and ChannelBind must answer `want`, and a Send indication goes out.
fn run_matrix<S: Read + Write>(c: &mut Framed<S>, v6: bool, addrs: &[&str], port: u16, want: Option<u16>) -> usize {
    let family: Attrs = if v6 {
        vec![Box::new(REQUESTED_FAMILY_IPV6)]
    } else {
        vec![]
    };
    let r = c.request(&build(req(METHOD_ALLOCATE), vec![transport_udp()], None, true));
    let nonce = text(&r, stun::attributes::ATTR_NONCE).expect("nonce");
    let (u, p) = rest_creds("ssrf");
    let cred = Cred {
        user: u,
        realm: REALM.into(),
        pass: p,
        nonce,
    };
    let mut attrs = vec![transport_udp()];
    attrs.extend(family);
    let r = c.request(&build(req(METHOD_ALLOCATE), attrs, Some(&cred), true));
    assert!(is_success(&r), "allocate (v6 {v6}): {r}");
    let mut checked = 0;
    for (i, a) in addrs.iter().enumerate() {
        let ip: IpAddr = a.parse().expect("address");
        let target = SocketAddr::new(ip, port);
        // An IPv4-mapped peer is an IPv4 peer in IPv6 spelling: a family
        // mismatch, refused before any policy reads it.
        let want = match ip {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() && want.is_some() => Some(443),
            _ => want,
        };
        let r = c.request(&build(
            req(METHOD_CREATE_PERMISSION),
            vec![peer(target)],
            Some(&cred),
            true,
        ));
        assert_eq!(error_code(&r), want, "CreatePermission to {a}");
        let r = c.request(&build(
            req(METHOD_CHANNEL_BIND),
            vec![channel(0x4000 + i as u16), peer(target)],
            Some(&cred),
            true,
        ));
        assert_eq!(error_code(&r), want, "ChannelBind to {a}");
        let send = build(
            MessageType::new(METHOD_SEND, CLASS_INDICATION),
            vec![peer(target), data(b"ssrf probe")],
            None,
            false,
        );
        c.send(&send.raw);
        checked += 1;
    }
    checked
}

/// Waits until `srv` has dropped at least `n` datagrams or messages (the
/// matrix's Send indications, counted as they are refused), so none is
/// still on its way to a listener when the bytes are counted.
fn settled(srv: &TestServer, n: usize) {
    let dropped = srv.stats_when(|s| s.dropped >= n as u64).dropped;
    assert!(dropped >= n as u64, "only {dropped} of {n} Send indications seen");
}

fn v6_available() -> bool {
    UdpSocket::bind("[::1]:0").is_ok()
}

fn matrix_refused(peers: &str) {
    let loopback4: Vec<IpAddr> = ["127.0.0.1", "127.0.0.2", "127.1.1.1", "127.255.255.254"]
        .iter()
        .map(|a| a.parse().expect("ip"))
        .collect();
    let l4 = listeners(&loopback4);
    let srv = TestServer::start_with("127.0.0.1", &["udp", "tcp"], peers);
    let mut n = run_matrix(&mut streamc::udp(srv.addr), false, IPV4, l4.port, Some(403));
    n += run_matrix(&mut streamc::tcp(srv.stream("tcp")), false, IPV4, l4.port, Some(403));
    let mut total = IPV4.len();
    if v6_available() {
        let l6 = listeners(&[IpAddr::V6(Ipv6Addr::LOCALHOST)]);
        let srv6 = TestServer::start_with("::1", &["udp", "tcp"], peers);
        n += run_matrix(&mut streamc::udp(srv6.addr), true, IPV6, l6.port, Some(403));
        n += run_matrix(&mut streamc::tcp(srv6.stream("tcp")), true, IPV6, l6.port, Some(403));
        total += IPV6.len();
        settled(&srv6, 2 * IPV6.len());
        assert_eq!(l6.bytes.load(Ordering::Relaxed), 0, "a denied IPv6 peer received data");
    } else {
        skip("no IPv6 loopback here: the IPv6 half of the matrix");
    }
    settled(&srv, 2 * IPV4.len());
    assert_eq!(l4.bytes.load(Ordering::Relaxed), 0, "a denied IPv4 peer received data");
    assert!(total >= 60, "the matrix has {total} addresses");
    assert_eq!(n, 2 * total);
}

#[test]
fn every_denied_peer_is_refused_with_the_default_policy() {
    matrix_refused("[peers]\n");
}

#[test]
fn an_unrelated_allow_list_changes_nothing() {
    matrix_refused("[peers]\nallow = [\"10.8.0.0/16\", \"2001:db8:1234::/48\"]\n");
}

/// The harness would see data: with loopback allowed, the same steps reach
/// the listeners.
#[test]
fn positive_control_allowed_loopback_receives_data() {
    let l4 = listeners(&[PEER_IP.parse().expect("ip")]);
    let srv = TestServer::start_with("127.0.0.1", &["udp"], "[peers]\nallow = [\"127.0.0.0/8\"]\n");
    run_matrix(&mut streamc::udp(srv.addr), false, &[PEER_IP], l4.port, None);
    let end = std::time::Instant::now() + Duration::from_secs(3);
    while l4.bytes.load(Ordering::Relaxed) == 0 && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        l4.bytes.load(Ordering::Relaxed),
        10,
        "the allowed peer got the Send indication's data"
    );
}

/// turnd's own address is never an ordinary peer, even with its range
/// allowed: not its UDP listener (a loop), not any other port of it (a
/// service of the host). The listeners see nothing.
#[test]
fn turnds_own_address_stays_refused_with_its_range_allowed() {
    let own = listeners(&["127.0.0.1".parse().expect("ip")]);
    let srv = TestServer::start_with("127.0.0.1", &["udp", "tcp"], "[peers]\nallow = [\"127.0.0.0/8\"]\n");
    let mut n = run_matrix(&mut streamc::udp(srv.addr), false, &["127.0.0.1"], own.port, Some(403));
    n += run_matrix(
        &mut streamc::udp(srv.addr),
        false,
        &["127.0.0.1"],
        srv.addr.port(),
        Some(403),
    );
    n += run_matrix(
        &mut streamc::tcp(srv.stream("tcp")),
        false,
        &["127.0.0.1"],
        own.port,
        Some(403),
    );
    assert_eq!(n, 3);
    settled(&srv, 3);
    assert_eq!(
        own.bytes.load(Ordering::Relaxed),
        0,
        "a port of turnd's own address received data"
    );
}

/// `[peers] allow` naming one port on turnd's own address (a media server
/// beside it): that port is reached by ChannelData and by Send indications
/// and answers back; the port next to it, the UDP listener's port and a
/// relay-range port stay 403, a Send indication to the port next to it
/// goes nowhere, and a datagram from it does not reach the client.
#[test]
fn a_port_entry_admits_a_service_on_turnds_own_address() {
    // Two adjacent ports below the relay range, both free.
    let (svc, next) = (20000..40000u16)
        .step_by(7)
        .find_map(|p| {
            let a = UdpSocket::bind(("127.0.0.1", p)).ok()?;
            let b = UdpSocket::bind(("127.0.0.1", p + 1)).ok()?;
            Some((a, b))
        })
        .expect("two free ports");
    let port = svc.local_addr().expect("addr").port();
    let srv = TestServer::start_with(
        "127.0.0.1",
        &["udp"],
        &format!("[relay]\nmin-port = 50000\nmax-port = 50100\n[peers]\nallow = [\"127.0.0.1:{port}\"]\n"),
    );
    let mut c = streamc::udp(srv.addr);
    let (cred, relayed) = c.allocate("sfu");
    let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let answer =
        |c: &mut Framed<_>, m: Method, attrs: Attrs| error_code(&c.request(&build(req(m), attrs, Some(&cred), true)));
    assert_eq!(answer(&mut c, METHOD_CREATE_PERMISSION, vec![peer(at(port))]), None);
    assert_eq!(
        answer(&mut c, METHOD_CHANNEL_BIND, vec![channel(0x4000), peer(at(port))]),
        None
    );
    for (i, refused) in [at(port + 1), srv.addr, at(50050)].into_iter().enumerate() {
        assert_eq!(
            answer(&mut c, METHOD_CREATE_PERMISSION, vec![peer(refused)]),
            Some(403),
            "{refused}"
        );
        assert_eq!(
            answer(
                &mut c,
                METHOD_CHANNEL_BIND,
                vec![channel(0x4001 + i as u16), peer(refused)]
            ),
            Some(403),
            "{refused}"
        );
    }
    // ChannelData and a Send indication reach the service, from the relay.
    let mut buf = [0u8; 2048];
    svc.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    c.send(&channel_data(0x4000, b"to the media server", false));
    let (n, from) = svc.recv_from(&mut buf).expect("the service gets ChannelData");
    assert_eq!((&buf[..n], from), (&b"to the media server"[..], relayed));
    let send = |to: SocketAddr, d: &[u8]| {
        build(
            MessageType::new(METHOD_SEND, CLASS_INDICATION),
            vec![peer(to), data(d)],
            None,
            false,
        )
        .raw
    };
    c.send(&send(at(port), b"indicated"));
    let (n, from) = svc.recv_from(&mut buf).expect("the service gets the Send indication");
    assert_eq!((&buf[..n], from), (&b"indicated"[..], relayed));
    // Its answer comes back on the channel.
    svc.send_to(b"from the media server", relayed).expect("send");
    let sock = c.io.0.try_clone().expect("clone");
    sock.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let n = sock.recv(&mut buf).expect("the client gets the answer");
    assert_eq!(&buf[..n], &channel_data(0x4000, b"from the media server", false)[..]);
    // The port next to it: a Send indication goes nowhere, and its
    // datagrams do not reach the client (the permission is for the IP).
    next.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    c.send(&send(at(port + 1), b"to the wrong port"));
    assert!(next.recv_from(&mut buf).is_err(), "the port next to it got data");
    next.send_to(b"from the wrong port", relayed).expect("send");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    assert!(
        sock.recv(&mut buf).is_err(),
        "the client got data from the port next to it"
    );
}
