//! Property tests (proptest), part of the normal test run: the codec's
//! round trips (STUN built then decoded, ChannelData headers, XOR
//! addresses), stream framing on arbitrary bytes, and the core fed
//! arbitrary sequences of client datagrams, peer datagrams and time steps
//! without panicking or leaking an allocation or a port.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;

#[path = "../fuzz/harness.rs"]
mod harness;
use harness::{Driver, Step};
use stun::attributes::*;
use stun::message::{Getter, MessageType, Setter, CLASS_INDICATION, CLASS_REQUEST, METHOD_ALLOCATE, METHOD_SEND};
use stun::textattrs::TextAttribute;
use turn::proto::data::Data;
use turn::proto::lifetime::Lifetime;
use turn::proto::peeraddr::PeerAddress;
use turnd::proto::wire::{self, attr, method, Class, Encoder, Frame, Message, CHANNEL_HEADER};

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A message built by the `stun` crate (an independent encoder) with any
    /// peer address, payload, lifetime and text decodes to the same values
    /// with turnd's decoder, integrity and fingerprint included.
    #[test]
    fn stun_crate_message_decodes(
        txid in any::<[u8; 12]>(),
        peer_ip in ip(),
        port in any::<u16>(),
        payload in proptest::collection::vec(any::<u8>(), 0..1200),
        lifetime in 0u32..100_000,
        software in "[a-zA-Z0-9 ./-]{0,60}",
        key in any::<[u8; 16]>(),
        fingerprint in any::<bool>(),
    ) {
        let peer = PeerAddress { ip: peer_ip, port };
        let data = Data(payload.clone());
        let life = Lifetime(Duration::from_secs(u64::from(lifetime)));
        let soft = TextAttribute::new(ATTR_SOFTWARE, software.clone());
        let attrs: [&dyn Setter; 4] = [&peer, &data, &life, &soft];
        let bytes = harness::build(MessageType::new(METHOD_SEND, CLASS_INDICATION), txid, &attrs, Some(&key), fingerprint);
        let d = Message::decode(&bytes).expect("what the stun crate makes, turnd decodes");
        prop_assert_eq!((d.method, d.class, d.txid), (method::SEND, Class::Indication, txid));
        prop_assert_eq!(d.fingerprint, fingerprint);
        prop_assert_eq!(d.send().map(|(p, r)| (p, bytes[r].to_vec())), Some((SocketAddr::new(peer_ip, port), payload.clone())));
        prop_assert_eq!(d.attr(attr::LIFETIME).expect("lifetime"), &lifetime.to_be_bytes()[..]);
        prop_assert_eq!(d.text(attr::SOFTWARE).expect("software"), software.as_str());
        prop_assert!(d.check_integrity(&key));
        let mut other = key;
        other[0] ^= 1;
        prop_assert!(!d.check_integrity(&other));
    }

    /// What turnd's encoder writes, the `stun` crate reads with the same
    /// attribute values, a valid FINGERPRINT and MESSAGE-INTEGRITY; and
    /// turnd's decoder reads it back.
    #[test]
    fn encoder_output_is_valid_stun(
        txid in any::<[u8; 12]>(),
        peer_ip in ip(),
        port in any::<u16>(),
        payload in proptest::collection::vec(any::<u8>(), 0..1200),
        lifetime in any::<u32>(),
        realm in "[a-zA-Z0-9 ./-]{0,60}",
        key in any::<[u8; 16]>(),
        fingerprint in any::<bool>(),
    ) {
        let peer = SocketAddr::new(peer_ip, port);
        let mut bytes = Vec::new();
        let mut e = Encoder::new(&mut bytes, method::DATA, Class::Indication, txid);
        e.xor_address(attr::XOR_PEER_ADDRESS, peer)
            .attr(attr::DATA, &payload)
            .u32(attr::LIFETIME, lifetime)
            .attr(attr::REALM, realm.as_bytes());
        e.finish(Some(&key), fingerprint);
        let mut m = stun::message::Message::new();
        m.unmarshal_binary(&bytes).expect("the stun crate reads it");
        prop_assert_eq!(m.transaction_id.0, txid);
        let mut pa = PeerAddress::default();
        pa.get_from(&m).expect("XOR-PEER-ADDRESS");
        prop_assert_eq!(SocketAddr::new(pa.ip, pa.port), peer);
        prop_assert_eq!(m.get(ATTR_DATA).expect("DATA"), payload.clone());
        prop_assert_eq!(m.get(ATTR_REALM).expect("REALM"), realm.as_bytes().to_vec());
        if fingerprint {
            prop_assert!(stun::fingerprint::FINGERPRINT.check(&m).is_ok());
        }
        prop_assert!(stun::integrity::MessageIntegrity(key.to_vec()).check(&mut m).is_ok());
        let d = Message::decode(&bytes).expect("turnd reads its own output");
        prop_assert_eq!(d.xor_address(attr::XOR_PEER_ADDRESS), Some(peer));
        prop_assert!(d.check_integrity(&key));
    }

    /// Any flipped byte of a valid message is rejected or decodes; never a
    /// panic.
    #[test]
    fn stun_mutations_never_panic(txid in any::<[u8; 12]>(), at in any::<prop::sample::Index>(), x in 1u8..=255) {
        let t = turn::proto::reqtrans::RequestedTransport { protocol: turn::proto::PROTO_UDP };
        let mut bytes = harness::build(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST), txid, &[&t], Some(&[7; 16]), true);
        let i = at.index(bytes.len());
        bytes[i] ^= x;
        if let Ok(d) = Message::decode(&bytes) {
            let _ = (d.request(), d.credentials(), d.check_integrity(&[7; 16]), d.unknown_required());
        }
    }

    #[test]
    fn channel_header_round_trip(channel in 0x4000u16..0x8000, len in 0usize..=65535) {
        let mut buf = vec![0u8; CHANNEL_HEADER + len];
        let header: &mut [u8; CHANNEL_HEADER] = (&mut buf[..CHANNEL_HEADER]).try_into().expect("4 bytes");
        wire::write_channel_header(header, channel, len);
        prop_assert_eq!(wire::channel_data(&buf), Some((channel, len)));
    }

    /// Stream framing on arbitrary bytes: never a panic, and a message never
    /// reaches past the buffer.
    #[test]
    fn stream_frame_is_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Frame::Message { len, skip } = wire::stream_frame(&bytes) {
            prop_assert!(len <= skip && skip <= bytes.len());
        }
    }
}

/// One operation on a [`ChannelTable`]: allocation `a` (of 3), peer `p`
/// (of 4, two IPs), channel `n` (of 3), time steps in seconds.
#[derive(Debug, Clone)]
enum TableOp {
    Open(u8),
    Close(u8),
    Permit(u8, u8, bool),
    Bind(u8, u16, u8, bool),
    Sweep(u8),
    Reload(u8),
    Wait(u16),
}

fn table_op() -> impl Strategy<Value = TableOp> {
    prop_oneof![
        any::<u8>().prop_map(TableOp::Open),
        any::<u8>().prop_map(TableOp::Close),
        (any::<u8>(), any::<u8>(), any::<bool>()).prop_map(|(a, p, o)| TableOp::Permit(a, p, o)),
        (any::<u8>(), 0u16..3, any::<u8>(), any::<bool>()).prop_map(|(a, n, p, o)| TableOp::Bind(a, n, p, o)),
        any::<u8>().prop_map(TableOp::Sweep),
        any::<u8>().prop_map(TableOp::Reload),
        (0u16..700).prop_map(TableOp::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The channel table under any sequence of opens, closes, permissions,
    /// bindings, sweeps, policy reloads and time steps keeps its invariants
    /// (every route agrees with the binding and permission it comes from),
    /// and its routes answer exactly as the bindings and permissions say.
    #[test]
    fn channel_table_keeps_its_invariants(ops in proptest::collection::vec(table_op(), 1..80)) {
        use turnd::proto::channels::ChannelTable;
        use turnd::proto::{ClientAddr, RelayId};
        let mut t = ChannelTable::default();
        let start = std::time::Instant::now();
        let mut now = start;
        let client = |a: u8| ClientAddr::udp(SocketAddr::from(([198, 51, 100, 1], 4000 + u16::from(a % 3))), SocketAddr::from(([192, 0, 2, 1], 3478)));
        let peer = |p: u8| SocketAddr::from(([203, 0, 113, 1 + (p % 4) / 2], 7000 + u16::from(p % 2)));
        let mut open = [false; 3];
        let reach = |ordinary: bool| turnd::proto::channels::Reach { ordinary, ports: false };
        for op in ops {
            match op {
                TableOp::Open(a) => { let a = a % 3; if !open[a as usize] { t.open(RelayId(u32::from(a)), client(a)); open[a as usize] = true; } }
                TableOp::Close(a) => { let a = a % 3; t.close(RelayId(u32::from(a))); open[a as usize] = false; }
                TableOp::Permit(a, p, o) => t.permit(RelayId(u32::from(a % 3)), peer(p).ip(), now + Duration::from_secs(300), reach(o)),
                TableOp::Bind(a, n, p, o) => {
                    let r = t.bind(RelayId(u32::from(a % 3)), 0x4000 + n, peer(p), reach(o), o, now);
                    if !open[(a % 3) as usize] {
                        prop_assert!(matches!(r, Err(turnd::proto::channels::BindError::NoAllocation)), "a binding on no allocation: {:?}", r);
                    }
                }
                TableOp::Sweep(a) => { let _ = t.sweep(RelayId(u32::from(a % 3)), now); }
                TableOp::Reload(k) => t.reload(|ip| ip != peer(k).ip(), |p| p != peer(k), |ip| reach(ip == peer(k ^ 2).ip()), |p| p.ip() == peer(k ^ 2).ip()),
                TableOp::Wait(s) => now += Duration::from_secs(u64::from(s)),
            }
            if let Err(e) = t.check() {
                prop_assert!(false, "{}", e);
            }
            // A route is usable only while its permission is.
            for a in 0..3u8 {
                for n in 0..3u16 {
                    if let Some(r) = t.client_route(client(a), 0x4000 + n, now) {
                        prop_assert!(t.permission(r.relay, r.peer.ip(), now).is_some(), "a route outlives its permission");
                        prop_assert_eq!(t.peer_route(r.relay, r.peer, now).map(|p| p.channel), Some(0x4000 + n));
                    }
                }
            }
        }
    }
}

fn step() -> impl Strategy<Value = Step> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..200);
    prop_oneof![
        (any::<u8>(), bytes()).prop_map(|(n, b)| Step::Raw(n, b)),
        (any::<u8>(), any::<u8>(), any::<u16>()).prop_map(|(n, flags, secs)| Step::Allocate { n, flags, secs }),
        (any::<u8>(), any::<u8>()).prop_map(|(n, peer)| Step::Permission { n, peer }),
        (any::<u8>(), 0x3ff0u16..0x4010, any::<u8>()).prop_map(|(n, channel, peer)| Step::ChannelBind {
            n,
            channel,
            peer
        }),
        (any::<u8>(), any::<u16>()).prop_map(|(n, secs)| Step::Refresh { n, secs }),
        (any::<u8>(), any::<u8>(), bytes()).prop_map(|(n, peer, data)| Step::Send { n, peer, data }),
        (any::<u8>(), 0x3ff0u16..0x4010, bytes()).prop_map(|(n, channel, data)| Step::ChannelData { n, channel, data }),
        (any::<u8>(), any::<u8>(), bytes()).prop_map(|(relay, peer, data)| Step::Peer { relay, peer, data }),
        any::<u8>().prop_map(Step::Close),
        any::<bool>().prop_map(Step::FailOpen),
        any::<u16>().prop_map(Step::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The fuzzing harness's core target as a property: arbitrary client
    /// messages (random, or signed requests of every kind), peer datagrams,
    /// closed connections, failing sockets and time steps: no panic, nothing
    /// sent to a denied peer, and after the longest lifetime every
    /// allocation, port, reservation and timer is gone.
    #[test]
    fn core_never_panics_nor_leaks(steps in proptest::collection::vec(step(), 1..60)) {
        let mut d = Driver::new();
        for st in steps {
            d.step(st);
        }
        if let Err(e) = d.finish() {
            prop_assert!(false, "{}", e);
        }
    }
}

/// The harness does make allocations (so the property above is about
/// something): the first signed Allocate fetches a nonce, the second client
/// and a reservation pair work too.
#[test]
fn the_harness_allocates() {
    let mut d = Driver::new();
    for st in [
        Step::Allocate {
            n: 0,
            flags: 0,
            secs: 0,
        },
        Step::Allocate {
            n: 1,
            flags: 3,
            secs: 0,
        },
        Step::Allocate {
            n: 4,
            flags: 64,
            secs: 0,
        },
        Step::Permission { n: 0, peer: 1 },
    ] {
        d.step(st);
    }
    assert_eq!(d.finish(), Ok(3));
}
