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
use stun::message::{MessageType, Setter, CLASS_INDICATION, CLASS_REQUEST, METHOD_ALLOCATE, METHOD_SEND};
use stun::textattrs::TextAttribute;
use turn::proto::data::Data;
use turn::proto::lifetime::Lifetime;
use turn::proto::peeraddr::PeerAddress;
use turnd::proto::msg::{self, Frame, CHANNEL_HEADER};

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A message built with any peer address, payload, lifetime and text
    /// decodes to the same values, integrity and fingerprint included.
    #[test]
    fn stun_build_then_decode(
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
        let bytes = msg::build(MessageType::new(METHOD_SEND, CLASS_INDICATION), txid, &attrs, Some(&key), fingerprint);
        let mut d = msg::decode(&bytes).expect("what build makes, decode takes");
        prop_assert_eq!(d.txid(), txid);
        prop_assert_eq!(d.has_fingerprint, fingerprint);
        prop_assert_eq!(msg::xor_address(d.attr(ATTR_XOR_PEER_ADDRESS).expect("peer"), &txid), Some(SocketAddr::new(peer_ip, port)));
        prop_assert_eq!(d.attr(ATTR_DATA).expect("data"), &payload[..]);
        prop_assert_eq!(d.attr(ATTR_LIFETIME).expect("lifetime"), &lifetime.to_be_bytes()[..]);
        prop_assert_eq!(d.text(ATTR_SOFTWARE).expect("software"), software.as_str());
        prop_assert!(d.check_integrity(&key));
        let mut other = key;
        other[0] ^= 1;
        prop_assert!(!d.check_integrity(&other));
    }

    /// Any flipped byte of a valid message is rejected or decodes; never a
    /// panic.
    #[test]
    fn stun_mutations_never_panic(txid in any::<[u8; 12]>(), at in any::<prop::sample::Index>(), x in 1u8..=255) {
        let t = turn::proto::reqtrans::RequestedTransport { protocol: turn::proto::PROTO_UDP };
        let mut bytes = msg::build(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST), txid, &[&t], Some(&[7; 16]), true);
        let i = at.index(bytes.len());
        bytes[i] ^= x;
        let _ = msg::decode(&bytes);
    }

    #[test]
    fn channel_header_round_trip(channel in 0x4000u16..0x8000, len in 0usize..=65535) {
        let mut buf = vec![0u8; CHANNEL_HEADER + len];
        let header: &mut [u8; CHANNEL_HEADER] = (&mut buf[..CHANNEL_HEADER]).try_into().expect("4 bytes");
        msg::write_channel_header(header, channel, len);
        prop_assert_eq!(msg::channel_data(&buf), Some((channel, len)));
    }

    /// Stream framing on arbitrary bytes: never a panic, and a message never
    /// reaches past the buffer.
    #[test]
    fn stream_frame_is_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Frame::Message { len, skip } = msg::stream_frame(&bytes) {
            prop_assert!(len <= skip && skip <= bytes.len());
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
