//! Property tests (proptest), part of the normal test run: the codec's
//! round trips (STUN built then decoded, ChannelData headers, XOR
//! addresses), stream framing on arbitrary bytes, and the core fed
//! arbitrary sequences of client datagrams, peer datagrams and time steps
//! without panicking or leaking an allocation or a port.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use stun::attributes::*;
use stun::message::{MessageType, Setter, CLASS_INDICATION, CLASS_REQUEST, METHOD_ALLOCATE, METHOD_SEND};
use stun::textattrs::TextAttribute;
use turn::proto::data::Data;
use turn::proto::lifetime::Lifetime;
use turn::proto::peeraddr::PeerAddress;
use turnd::auth::Credentials;
use turnd::proto::msg::{self, Frame, CHANNEL_HEADER};
use turnd::proto::{ClientAddr, Command, CoreConfig, Now, RelayId, Server, Shared, Transmit};

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

/// One step of what reaches a core.
#[derive(Debug, Clone)]
enum Step {
    Client(u8, Vec<u8>),
    /// A signed Allocate from client `n` (so that allocations exist).
    Allocate(u8),
    Peer(u8, Vec<u8>),
    Wait(u16),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..4, proptest::collection::vec(any::<u8>(), 0..200)).prop_map(|(c, b)| Step::Client(c, b)),
        (0u8..4).prop_map(Step::Allocate),
        (0u8..8, proptest::collection::vec(any::<u8>(), 0..200)).prop_map(|(p, b)| Step::Peer(p, b)),
        any::<u16>().prop_map(Step::Wait),
    ]
}

const SECRET: &[u8] = b"prop";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The core driven by arbitrary client datagrams (random, or signed
    /// Allocates and their mutations), peer datagrams and time steps of up to
    /// a minute: no panic, and after the longest lifetime every allocation
    /// and relay port is gone.
    #[test]
    fn core_never_panics_nor_leaks(steps in proptest::collection::vec(step(), 1..60)) {
        drive(steps)?;
    }
}

/// The harness does make allocations (so the property above is about
/// something): a 438 for the empty nonce, then success.
#[test]
fn the_harness_allocates() {
    let created = drive(vec![Step::Allocate(0), Step::Allocate(1), Step::Allocate(0)]).expect("no failure");
    assert_eq!(created, 1);
}

/// Runs `steps` against a fresh core; fails if anything leaks. Returns how
/// many allocations were created.
fn drive(steps: Vec<Step>) -> Result<u64, TestCaseError> {
    let mut creds = Credentials::new("prop");
    creds.secrets = vec![SECRET.to_vec()];
    let mut cfg = CoreConfig::new(creds);
    cfg.policy = turnd::proto::policy::PeerPolicy::new(vec!["0.0.0.0/0".parse().expect("net")], vec![]);
    let shared = Arc::new(Shared::new(50000, 50015));
    let mut s = Server::new(Arc::new(cfg), shared.clone(), 1, [9; 32]);
    let mut now = Now {
        mono: std::time::Instant::now(),
        unix: 1_800_000_000,
    };
    let local: SocketAddr = "192.0.2.1:3478".parse().expect("addr");
    let client = |n: u8| ClientAddr::udp(SocketAddr::new([198, 51, 100, 1].into(), 40000 + u16::from(n)), local);
    let mut open: Vec<RelayId> = Vec::new();
    let mut nonces: std::collections::HashMap<u8, String> = Default::default();
    let drain = |s: &mut Server,
                 open: &mut Vec<RelayId>,
                 now: Now,
                 nonces: &mut std::collections::HashMap<u8, String>,
                 who: Option<u8>| {
        while let Some(c) = s.poll_command() {
            match c {
                Command::OpenRelay { relay, addr, .. } => {
                    open.push(relay);
                    s.handle_relay_opened(relay, Ok(addr), now);
                }
                Command::CloseRelay { relay } => open.retain(|r| *r != relay),
                Command::ReleaseHeld { .. } => {}
                Command::SendToClient { data, .. } => {
                    if let (Some(n), Ok(d)) = (who, msg::decode(&data)) {
                        if let Some(nonce) = d.text(ATTR_NONCE) {
                            nonces.insert(n, nonce.to_string());
                        }
                    }
                }
            }
        }
    };
    for st in steps {
        match st {
            Step::Client(n, bytes) => {
                let _ = s.handle_client_input(client(n), &bytes, now);
                drain(&mut s, &mut open, now, &mut nonces, Some(n));
            }
            Step::Allocate(n) => {
                let t = turn::proto::reqtrans::RequestedTransport {
                    protocol: turn::proto::PROTO_UDP,
                };
                let (user, pass) =
                    turnd::auth::rest_credentials(SECRET, Some("p"), Duration::from_secs(3600), now.unix, ':');
                let nonce = nonces.get(&n).cloned().unwrap_or_default();
                let key = turnd::auth::long_term_key(&user, "prop", &pass);
                let u = TextAttribute::new(ATTR_USERNAME, user);
                let r = TextAttribute::new(ATTR_REALM, "prop".into());
                let no = TextAttribute::new(ATTR_NONCE, nonce);
                let attrs: [&dyn Setter; 4] = [&t, &u, &r, &no];
                let bytes = msg::build(
                    MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST),
                    [n; 12],
                    &attrs,
                    Some(&key),
                    false,
                );
                let _ = s.handle_client_input(client(n), &bytes, now);
                drain(&mut s, &mut open, now, &mut nonces, Some(n));
            }
            Step::Peer(p, bytes) => {
                if let Some(relay) = open.get(usize::from(p) % open.len().max(1)).copied() {
                    let mut buf = vec![0u8; CHANNEL_HEADER];
                    buf.extend_from_slice(&bytes);
                    let peer = SocketAddr::new([203, 0, 113, p].into(), 7000);
                    if let Some(Transmit::ToPeer { .. }) = s.handle_peer_input(relay, peer, &mut buf, now) {
                        prop_assert!(false, "peer input sent to a peer");
                    }
                    drain(&mut s, &mut open, now, &mut nonces, None);
                }
            }
            Step::Wait(ms) => {
                now = now.after(Duration::from_millis(u64::from(ms)));
                s.handle_timeout(now);
                drain(&mut s, &mut open, now, &mut nonces, None);
            }
        }
    }
    // Past every lifetime: nothing may be left.
    now = now.after(Duration::from_secs(3600 + 600));
    s.handle_timeout(now);
    drain(&mut s, &mut open, now, &mut nonces, None);
    prop_assert!(open.is_empty(), "relays left open: {:?}", open);
    let g = shared.lock();
    prop_assert_eq!(g.total, 0);
    prop_assert_eq!(g.ports.in_use(), 0);
    Ok(s.stats.allocations_created)
}
