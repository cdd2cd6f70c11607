//! A dual-stack allocation (RFC 8656 ADDITIONAL-ADDRESS-FAMILY) over real
//! sockets, with a raw client (neither the `turn` crate nor aioice can ask
//! for one): an IPv4 and an IPv6 relayed address from one Allocate, data to
//! and from a peer of each family through the socket of its family (Send
//! and Data indications, a channel), one allocation in the quota, both
//! ports back after a Refresh with LIFETIME 0. Root: turnd, the client and
//! the peers each in a network namespace (tests/common/netns.rs), turnd
//! listening on IPv4 and relaying on IPv4 and IPv6.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::netns::{self, Topo};
use common::server::*;
use common::stunc::*;
use stun::message::*;

const METRICS: u16 = 9478;

const ADDITIONAL_V6: [u8; 4] = [0x02, 0, 0, 0];

/// Sends `m` until the answer with its transaction id comes back.
fn ask(s: &UdpSocket, server: SocketAddr, m: &Message) -> Message {
    let mut buf = [0u8; 2048];
    for _ in 0..10 {
        s.send_to(&m.raw, server).expect("send");
        let end = Instant::now() + Duration::from_millis(500);
        while Instant::now() < end {
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                if buf[0] < 0x40 {
                    let r = decode(&buf[..n]);
                    if r.transaction_id == m.transaction_id {
                        return r;
                    }
                }
            }
        }
    }
    panic!("no answer to {:?}", m.typ);
}

/// The next datagram on `s` (a peer's or the client's), with its source.
fn next(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 2048];
    let (n, from) = s.recv_from(&mut buf).expect("a datagram within the timeout");
    (buf[..n].to_vec(), from)
}

/// Every XOR-RELAYED-ADDRESS of an answer, in order.
fn all_relayed(m: &Message) -> Vec<SocketAddr> {
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&m.transaction_id.0);
    m.attributes
        .0
        .iter()
        .filter(|a| a.typ == stun::attributes::ATTR_XOR_RELAYED_ADDRESS)
        .filter_map(|a| turnd::proto::wire::xor_address(&a.value, &txid))
        .collect()
}

#[test]
fn dual_stack_allocation_relays_to_peers_of_both_families() {
    if !netns::available() {
        return;
    }
    let t = Topo::new("ds120", 120);
    let (v4, v6) = (t.ip('t', 4), t.ip('t', 6));
    let _turnd = t.turnd(&format!(
        r#"realm = "{REALM}"
data-dir = "{{dir}}"
[[listener]]
address = "{v4}"
port = 3478
transport = "udp"
[auth]
static-auth-secrets = ["{SECRET}"]
[relay]
relay-ipv6 = "{v6}"
[peers]
allow = ["10.0.0.0/8", "fd00::/8"]
[metrics]
listen = ["127.0.0.1:{METRICS}"]
"#
    ));
    let server = SocketAddr::new(v4, 3478);
    // The path turnd → router → peer must work before the relay is judged
    // on it: in a fresh namespace topology the first IPv6 packets are lost
    // while the router's interfaces settle (seen in 3 runs of 5). Up to
    // 5 s, until a ping answers (ping -w stops at the first reply with -c 1).
    for peer in [t.ip('p', 4), t.ip('p', 6)] {
        let out = t.run('t', "ping", &["-c", "1", "-i", "0.2", "-w", "5", &peer.to_string()]);
        assert!(out.status.success(), "ping {peer} from turnd's namespace");
    }
    t.wait_metric(METRICS, "turnd_relay_ports", 1, Duration::from_secs(10));
    let (p4, p6) = (t.udp('p', 4), t.udp('p', 6));
    let (a4, a6) = (p4.local_addr().expect("addr"), p6.local_addr().expect("addr"));
    let s = t.udp('c', 4);
    s.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");

    // 401, then the signed Allocate asking for IPv6 as well.
    let allocate = |cred: Option<&Cred>| {
        build(
            req(METHOD_ALLOCATE),
            vec![transport_udp(), raw(0x8000, &ADDITIONAL_V6)],
            cred,
            false,
        )
    };
    let r = ask(&s, server, &allocate(None));
    assert_eq!(error_code(&r), Some(401));
    let (user, pass) = rest_creds("dual");
    let cred = Cred {
        user,
        realm: REALM.into(),
        pass,
        nonce: text(&r, stun::attributes::ATTR_NONCE).expect("nonce"),
    };
    let r = ask(&s, server, &allocate(Some(&cred)));
    assert!(is_success(&r), "dual allocate: {:?}", error_code(&r));
    let relayed = all_relayed(&r);
    assert_eq!(relayed.len(), 2, "{relayed:?}");
    let (r4, r6) = (relayed[0], relayed[1]);
    assert_eq!((r4.ip(), r6.ip()), (v4, v6));
    assert_eq!(t.metric(METRICS, "turnd_allocations"), 1, "one allocation in the quota");
    assert_eq!(t.metric(METRICS, "turnd_relay_ports_in_use"), 2, "two relay ports");

    let signed = |method, attrs| build(req(method), attrs, Some(&cred), false);
    let r = ask(&s, server, &signed(METHOD_CREATE_PERMISSION, vec![peer(a4), peer(a6)]));
    assert!(is_success(&r), "permissions for both families: {:?}", error_code(&r));

    // Send indications go out of the socket of the peer's family; what the
    // peers answer comes back as Data indications.
    s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    for (p, a, relay) in [(&p4, a4, r4), (&p6, a6, r6)] {
        let send = build(
            MessageType::new(METHOD_SEND, CLASS_INDICATION),
            vec![peer(a), data(b"out")],
            None,
            false,
        );
        s.send_to(&send.raw, server).expect("send");
        let (got, from) = next(p);
        assert_eq!((got.as_slice(), from), (&b"out"[..], relay), "to {a}");
        p.send_to(b"back", relay).expect("peer sends");
        let (got, _) = next(&s);
        assert_eq!(data_indication(&decode(&got)), Some((a, b"back".to_vec())), "from {a}");
    }

    // A channel to the IPv6 peer, both ways.
    let r = ask(
        &s,
        server,
        &signed(METHOD_CHANNEL_BIND, vec![channel(0x4000), peer(a6)]),
    );
    assert!(is_success(&r), "channel bind: {:?}", error_code(&r));
    s.send_to(&channel_data(0x4000, b"cd", false), server).expect("send");
    let (got, from) = next(&p6);
    assert_eq!((got.as_slice(), from), (&b"cd"[..], r6));
    p6.send_to(b"cd back", r6).expect("peer sends");
    let (got, _) = next(&s);
    assert_eq!(got, channel_data(0x4000, b"cd back", false));

    // LIFETIME 0: both relays go.
    s.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    let r = ask(&s, server, &signed(METHOD_REFRESH, vec![lifetime_attr(0)]));
    assert!(is_success(&r));
    let end = Instant::now() + Duration::from_secs(5);
    while t.metric(METRICS, "turnd_relay_ports_in_use") != 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(t.metric(METRICS, "turnd_relay_ports_in_use"), 0, "both ports back");
    assert_eq!(t.metric(METRICS, "turnd_allocations"), 0);
}
