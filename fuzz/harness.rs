//! The fuzz targets' bodies, shared by the AFL++ binaries (`fuzz/targets`),
//! the corpus replay in the normal test run (`tests/fuzz_corpus.rs`) and the
//! property tests (`tests/props.rs`). Each target panics on a broken
//! invariant, which AFL++ records as a crash.
//!
//! - [`stun_decode`]: the STUN decoder on any bytes, integrity and address
//!   attributes included; stream framing agrees with it.
//! - [`channel_data`]: ChannelData headers and stream framing of any byte
//!   stream cut at any points.
//! - [`core`]: a relay core driven by a sequence of steps decoded from the
//!   input ([`Step::parse`]): raw and signed client messages (captured ones
//!   re-signed), peer datagrams, closed connections, failing relay sockets
//!   and time steps. Nothing may reach a denied peer, and after the longest
//!   lifetime no allocation, port, held socket, reservation or timer is left.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use stun::attributes::*;
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{Message, MessageType, Setter, CLASS_INDICATION, CLASS_REQUEST};
use stun::message::{METHOD_ALLOCATE, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_REFRESH, METHOD_SEND};
use stun::textattrs::TextAttribute;
use turnd::auth::Credentials;
use turnd::net::sim::{Output, Sim};
use turnd::proto::wire::{self, Frame, CHANNEL_HEADER};
use turnd::proto::{ClientAddr, CoreConfig, OpenError, RelayId};

/// The STUN decoder on `data`: no panic; what decodes is framed as one
/// whole message by the stream framer, is a message the `stun` crate (an
/// independent decoder) reads with the same type and attributes, and its
/// typed request, address attributes and integrity check run.
pub fn stun_decode(data: &[u8]) {
    let framed = wire::stream_frame(data);
    if let Frame::Message { len, skip } = framed {
        assert!(len <= skip && skip <= data.len(), "frame past the buffer");
    }
    let Ok(d) = wire::Message::decode(data) else { return };
    assert!(
        matches!(framed, Frame::Message { len, .. } if len == data.len()),
        "decoded but framed as {framed:?}"
    );
    let mut other = Message::new();
    other
        .unmarshal_binary(data)
        .expect("the stun crate reads what turnd decodes");
    assert_eq!(other.typ.value(), u16::from_be_bytes([data[0], data[1]]));
    for a in &other.attributes.0 {
        if a.typ.0 == wire::attr::MESSAGE_INTEGRITY {
            break;
        }
        if a.typ.0 == wire::attr::FINGERPRINT {
            assert!(d.fingerprint, "a FINGERPRINT turnd did not see");
            continue;
        }
        assert!(
            d.attrs(a.typ.0).any(|v| v == &a.value[..]),
            "attribute {:?} read differently",
            a.typ
        );
    }
    for t in [ATTR_XOR_PEER_ADDRESS, ATTR_XORMAPPED_ADDRESS, ATTR_XOR_RELAYED_ADDRESS] {
        let _ = d.xor_address(t.0);
    }
    for t in [ATTR_USERNAME, ATTR_REALM, ATTR_NONCE, ATTR_SOFTWARE] {
        let _ = d.text(t.0);
    }
    let _ = d.unknown_required();
    let _ = d.request();
    let _ = d.send();
    let _ = d.credentials();
    let _ = d.check_integrity(&[7; 16]);
}

/// A message built with the `stun` crate (an encoder independent of
/// turnd's): header, `attrs`, then MESSAGE-INTEGRITY and FINGERPRINT.
pub fn build(
    typ: MessageType,
    txid: [u8; 12],
    attrs: &[&dyn Setter],
    key: Option<&[u8]>,
    fingerprint: bool,
) -> Vec<u8> {
    let mut m = Message::new();
    m.typ = typ;
    m.transaction_id.0 = txid;
    m.write_header();
    for a in attrs {
        let _ = a.add_to(&mut m);
    }
    if let Some(k) = key {
        let _ = MessageIntegrity(k.to_vec()).add_to(&mut m);
    }
    if fingerprint {
        let _ = FINGERPRINT.add_to(&mut m);
    }
    m.raw
}

/// ChannelData and stream framing on `data`: a parsed header never claims
/// more than the buffer, a header written back reads the same, and framing
/// the bytes as they arrive in chunks (cut where `data`'s first bytes say)
/// finds the same messages as framing them all at once.
pub fn channel_data(data: &[u8]) {
    let (cuts, stream) = match data.split_first() {
        Some((&n, rest)) => rest.split_at(usize::from(n % 8).min(rest.len())),
        None => return,
    };
    if let Some((channel, len)) = wire::channel_data(stream) {
        assert!(CHANNEL_HEADER + len <= stream.len(), "ChannelData past the buffer");
        let mut header = [0u8; CHANNEL_HEADER];
        wire::write_channel_header(&mut header, channel, len);
        assert_eq!(
            wire::channel_data(&[&header[..], &stream[CHANNEL_HEADER..]].concat()),
            Some((channel, len))
        );
    }
    let whole = frames(stream, &[]);
    let cut: Vec<usize> = cuts.iter().map(|&c| usize::from(c) + 1).collect();
    assert_eq!(frames(stream, &cut), whole, "framing depends on how the bytes arrived");
}

/// The messages (offset, length) a stream reader finds in `stream` when it
/// arrives in pieces of the sizes in `cuts` (repeated), up to garbage.
fn frames(stream: &[u8], cuts: &[usize]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let (mut start, mut have) = (0usize, 0usize);
    let mut sizes = cuts.iter().cycle();
    while have < stream.len() {
        have = (have + sizes.next().copied().unwrap_or(stream.len())).min(stream.len());
        loop {
            match wire::stream_frame(&stream[start..have]) {
                Frame::Partial => break,
                Frame::Garbage => return found,
                Frame::Message { len, skip } => {
                    assert!(len <= skip && start + skip <= have, "frame past what arrived");
                    found.push((start, len));
                    start += skip;
                }
            }
        }
    }
    found
}

/// Drives a core with the steps `data` decodes to; panics on a leak or on
/// data sent to a denied peer.
pub fn core(data: &[u8]) {
    if let Err(e) = drive(data) {
        panic!("{e}");
    }
}

/// [`core`]'s run: how many allocations were made, or what was left.
pub fn drive(data: &[u8]) -> Result<u64, String> {
    let mut d = Driver::new();
    let mut input = data;
    while let Some(step) = Step::parse(&mut input) {
        d.step(step);
    }
    d.finish()
}

/// One thing that happens to a core.
#[derive(Debug, Clone)]
pub enum Step {
    /// Client `n` sends bytes as they are.
    Raw(u8, Vec<u8>),
    /// Client `n` sends a signed Allocate; `flags`: 1 EVEN-PORT, 2 its R bit,
    /// 4 LIFETIME `secs`, 8 IPv6, 16 FINGERPRINT, 32 DONT-FRAGMENT, 64 the
    /// last RESERVATION-TOKEN handed out.
    Allocate {
        n: u8,
        flags: u8,
        secs: u16,
    },
    Permission {
        n: u8,
        peer: u8,
    },
    ChannelBind {
        n: u8,
        channel: u16,
        peer: u8,
    },
    Refresh {
        n: u8,
        secs: u16,
    },
    /// A Send indication from client `n` to `peer`.
    Send {
        n: u8,
        peer: u8,
        data: Vec<u8>,
    },
    /// ChannelData from client `n`.
    ChannelData {
        n: u8,
        channel: u16,
        data: Vec<u8>,
    },
    /// A datagram from `peer` to the open relay picked by `relay`.
    Peer {
        relay: u8,
        peer: u8,
        data: Vec<u8>,
    },
    /// A captured message, signed again with client `n`'s credentials.
    Resign(u8, Vec<u8>),
    /// Stream client `n`'s connection closes.
    Close(u8),
    /// The next relay socket fails to open (in use, or for another reason).
    FailOpen(bool),
    Wait(u16),
}

impl Step {
    /// The next step from the front of `input` (consumed), or None at its
    /// end. Every byte string decodes to some steps.
    pub fn parse(input: &mut &[u8]) -> Option<Step> {
        let op = take(input, 1)?[0];
        let b = |input: &mut &[u8]| take(input, 1).map_or(0, |v| v[0]);
        let w = |input: &mut &[u8]| take(input, 2).map_or(0, |v| u16::from_be_bytes([v[0], v[1]]));
        let bytes = |input: &mut &[u8], len: usize| {
            let n = len.min(input.len());
            take(input, n).unwrap_or_default().to_vec()
        };
        Some(match op % 13 {
            0 => {
                let n = b(input);
                let len = usize::from(w(input));
                Step::Raw(n, bytes(input, len))
            }
            1 => Step::Allocate {
                n: b(input),
                flags: b(input),
                secs: w(input),
            },
            2 => Step::Permission {
                n: b(input),
                peer: b(input),
            },
            3 => Step::ChannelBind {
                n: b(input),
                channel: w(input),
                peer: b(input),
            },
            4 => Step::Refresh {
                n: b(input),
                secs: w(input),
            },
            5 => {
                let (n, peer, len) = (b(input), b(input), usize::from(b(input)));
                Step::Send {
                    n,
                    peer,
                    data: bytes(input, len),
                }
            }
            6 => {
                let (n, channel, len) = (b(input), w(input), usize::from(b(input)));
                Step::ChannelData {
                    n,
                    channel,
                    data: bytes(input, len),
                }
            }
            7 => {
                let (relay, peer, len) = (b(input), b(input), usize::from(b(input)));
                Step::Peer {
                    relay,
                    peer,
                    data: bytes(input, len),
                }
            }
            8 => {
                let n = b(input);
                let len = usize::from(w(input));
                Step::Resign(n, bytes(input, len))
            }
            9 => Step::Close(b(input)),
            10 => Step::FailOpen(b(input) % 2 == 0),
            _ => Step::Wait(w(input)),
        })
    }
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if input.len() < n || (n == 0 && input.is_empty()) {
        return None;
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Some(head)
}

pub const REALM: &str = "fuzz";
const SECRET: &[u8] = b"fuzz";
/// Clients 0-3 are UDP, 4-5 TCP, 6-7 TLS.
const CLIENTS: u8 = 8;

/// Peer `p`: public addresses of both families in the allowed and in the
/// denied half of the operator's ranges, built-in denied ones in several
/// spellings, and ports of turnd's own address (its relays' range, live or
/// not, and its listener).
pub fn peer(p: u8) -> SocketAddr {
    if p % 8 == 7 && p >= 128 {
        let port = if p % 11 == 0 { 3478 } else { 50000 + u16::from(p % 10) };
        return SocketAddr::new(Ipv4Addr::new(192, 0, 2, 1).into(), port);
    }
    let port = 7000 + u16::from(p % 3);
    let ip: IpAddr = match p % 8 {
        0..=2 => Ipv4Addr::new(203, 0, 113, p).into(),
        3 | 4 => Ipv6Addr::new(0x2001, 0xdb8, 1 + u16::from(p & 1), 0, 0, 0, 0, u16::from(p)).into(),
        _ => [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "10.0.0.1",
            "::1",
            "2002:7f00:1::1",
            "::ffff:203.0.113.1",
            "0.0.0.0",
        ][usize::from(p / 8 % 8)]
        .parse()
        .expect("peer address"),
    };
    SocketAddr::new(ip, port)
}

/// Where data must never go, written independently of the policy code:
/// the ranges an attacker aims at (loopback, private, CGNAT, link-local and
/// cloud metadata, "this network", multicast, ULA) and the half of each
/// documentation range the operator did not allow, also when spelled as an
/// IPv4-mapped, IPv4-compatible, NAT64 or 6to4 IPv6 address.
fn forbidden(ip: IpAddr) -> bool {
    const V4: [&str; 11] = [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "203.0.113.128/25",
        "192.0.2.0/24",
    ];
    const V6: [&str; 6] = [
        "::1/128",
        "::/128",
        "fe80::/10",
        "fc00::/7",
        "ff00::/8",
        "2001:db8:2::/48",
    ];
    let in_any = |nets: &[&str], ip: IpAddr| {
        nets.iter()
            .any(|n| n.parse::<ipnet::IpNet>().expect("net").contains(&ip))
    };
    match ip {
        IpAddr::V4(_) => in_any(&V4, ip),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let o = v6.octets();
            let v4 = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            let embedded = match s {
                [0, 0, 0, 0, 0, 0xffff, ..] | [0, 0, 0, 0, 0, 0, ..] => Some(v4(&o[12..])),
                [0x64, 0xff9b, 0, 0, 0, 0, ..] => Some(v4(&o[12..])),
                [0x2002, ..] => Some(v4(&o[2..6])),
                _ => None,
            };
            in_any(&V6, ip) || embedded.is_some_and(|e| in_any(&V4, e))
        }
    }
}

/// A core with REST credentials, the built-in deny list with operator
/// ranges 203.0.113.0/25 and 2001:db8:1::/48 allowed (the list covers the
/// rest of both documentation ranges), a bandwidth limit, and a small port
/// range; the driver side kept in plain maps.
pub struct Driver {
    sim: Sim,
    nonces: HashMap<u8, String>,
    token: Option<Vec<u8>>,
    txid: u32,
}

impl Default for Driver {
    fn default() -> Self {
        Self::new()
    }
}

impl Driver {
    pub fn new() -> Self {
        let mut creds = Credentials::new(REALM);
        creds.secrets = vec![turnd::secret::Secret::from(std::str::from_utf8(SECRET).expect("utf8"))];
        let mut cfg = CoreConfig::new(creds);
        cfg.policy = turnd::proto::policy::PeerPolicy::new(
            vec![
                "203.0.113.0/25".parse().expect("net"),
                "2001:db8:1::/48".parse().expect("net"),
            ],
            vec![],
        );
        cfg.max_allocations_per_user = 4;
        cfg.max_allocations = 6;
        cfg.max_bps = 20_000;
        cfg.relay_ipv6 = Some(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1));
        cfg.own = turnd::proto::policy::OwnAddresses::new(
            [
                IpAddr::from([192, 0, 2, 1]),
                IpAddr::from(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1)),
            ],
            &[],
        );
        Self {
            sim: Sim::new(cfg, 50000, 50009),
            nonces: HashMap::new(),
            token: None,
            txid: 0,
        }
    }

    fn client(n: u8) -> ClientAddr {
        let n = n % CLIENTS;
        let remote = SocketAddr::new([198, 51, 100, 1].into(), 40000 + u16::from(n));
        match n {
            0..=3 => ClientAddr::udp(remote, "192.0.2.1:3478".parse().expect("addr")),
            4 | 5 => ClientAddr::stream(false, remote, "192.0.2.1:3478".parse().expect("addr")),
            _ => ClientAddr::stream(true, remote, "192.0.2.1:443".parse().expect("addr")),
        }
    }

    /// One step, then the core's table invariants checked.
    pub fn step(&mut self, step: Step) {
        self.apply(step);
        if let Err(e) = self.sim.core.check_invariants() {
            panic!("core invariant broken: {e}");
        }
        if let Err(e) = self.sim.check_routes() {
            panic!("events and core disagree: {e}");
        }
    }

    fn apply(&mut self, step: Step) {
        match step {
            Step::Raw(n, bytes) => self.input(n, &bytes),
            Step::Allocate { n, flags, secs } => {
                let t = turn::proto::reqtrans::RequestedTransport {
                    protocol: turn::proto::PROTO_UDP,
                };
                let mut attrs: Vec<Box<dyn Setter>> = vec![Box::new(t)];
                if flags & 1 != 0 {
                    attrs.push(Box::new(Raw(
                        ATTR_EVEN_PORT,
                        vec![if flags & 2 != 0 { 0x80 } else { 0 }],
                    )));
                }
                if flags & 4 != 0 {
                    attrs.push(Box::new(Raw(ATTR_LIFETIME, u32::from(secs).to_be_bytes().to_vec())));
                }
                if flags & 8 != 0 {
                    attrs.push(Box::new(Raw(ATTR_REQUESTED_ADDRESS_FAMILY, vec![2, 0, 0, 0])));
                }
                if flags & 32 != 0 {
                    attrs.push(Box::new(Raw(ATTR_DONT_FRAGMENT, vec![])));
                }
                if flags & 64 != 0 {
                    if let Some(t) = self.token.clone() {
                        attrs.push(Box::new(Raw(ATTR_RESERVATION_TOKEN, t)));
                    }
                }
                self.signed(
                    n,
                    MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST),
                    attrs,
                    flags & 16 != 0,
                );
            }
            Step::Permission { n, peer: p } => {
                let a = xor_peer(peer(p));
                self.signed(
                    n,
                    MessageType::new(METHOD_CREATE_PERMISSION, CLASS_REQUEST),
                    vec![a],
                    false,
                );
            }
            Step::ChannelBind { n, channel, peer: p } => {
                let attrs: Vec<Box<dyn Setter>> = vec![
                    Box::new(Raw(ATTR_CHANNEL_NUMBER, [channel.to_be_bytes(), [0, 0]].concat())),
                    xor_peer(peer(p)),
                ];
                self.signed(n, MessageType::new(METHOD_CHANNEL_BIND, CLASS_REQUEST), attrs, false);
            }
            Step::Refresh { n, secs } => {
                let l = Raw(ATTR_LIFETIME, u32::from(secs % 4000).to_be_bytes().to_vec());
                self.signed(
                    n,
                    MessageType::new(METHOD_REFRESH, CLASS_REQUEST),
                    vec![Box::new(l)],
                    false,
                );
            }
            Step::Send { n, peer: p, data } => {
                let d = turn::proto::data::Data(data);
                let a = xor_peer(peer(p));
                let txid = self.next_txid();
                let bytes = build(
                    MessageType::new(METHOD_SEND, CLASS_INDICATION),
                    txid,
                    &[&*a, &d],
                    None,
                    false,
                );
                self.input(n, &bytes);
            }
            Step::ChannelData { n, channel, data } => {
                let mut bytes = vec![0u8; CHANNEL_HEADER];
                let header: &mut [u8; CHANNEL_HEADER] = (&mut bytes[..]).try_into().expect("4 bytes");
                wire::write_channel_header(header, channel, data.len());
                bytes.extend_from_slice(&data);
                if Self::client(n).transport.is_stream() {
                    bytes.resize(bytes.len().next_multiple_of(4), 0);
                }
                self.input(n, &bytes);
            }
            Step::Peer { relay, peer: p, data } => {
                let mut open: Vec<RelayId> = self.sim.open.keys().copied().collect();
                if open.is_empty() {
                    return;
                }
                open.sort_unstable();
                let id = open[usize::from(relay) % open.len()];
                let out = self.sim.peer_sends(id, peer(p), &data);
                assert!(
                    out.to_peer.is_empty() && out.to_relay.is_empty(),
                    "peer input sent to a peer"
                );
                self.replies(out, None);
            }
            Step::Resign(n, bytes) => {
                if let Some((typ, attrs)) = strip_auth(&bytes) {
                    self.signed(n, typ, attrs, false);
                }
            }
            Step::Close(n) => {
                let out = self.sim.closed(Self::client(n));
                self.replies(out, None);
            }
            Step::FailOpen(in_use) => {
                let e = if in_use { OpenError::InUse } else { OpenError::Failed };
                self.sim.open_results.push_back(Err(e));
            }
            Step::Wait(ms) => {
                // Steps of up to ~18 minutes: past every lifetime in a few.
                let d = if ms & 0x8000 != 0 {
                    Duration::from_secs(u64::from(ms & 0x3ff))
                } else {
                    Duration::from_millis(u64::from(ms))
                };
                let out = self.sim.advance(d);
                self.replies(out, None);
            }
        }
    }

    fn next_txid(&mut self) -> [u8; 12] {
        self.txid += 1;
        let mut t = [0x5a; 12];
        t[8..].copy_from_slice(&self.txid.to_be_bytes());
        t
    }

    /// Client `n` sends `bytes`; what the core sends to a peer is checked
    /// against the policy, and what it hands to another allocation must be
    /// for an open relay, and is delivered there.
    fn input(&mut self, n: u8, bytes: &[u8]) {
        let out = self.sim.client_sends(Self::client(n), bytes);
        for (_, peer, _) in &out.to_peer {
            assert!(!forbidden(peer.ip()), "data sent to denied peer {peer}");
        }
        let mut out = out;
        for (to, from, payload) in std::mem::take(&mut out.to_relay) {
            assert!(
                self.sim.open.contains_key(&to.relay),
                "data handed to relay {to:?}, which is not open"
            );
            let back = self.sim.relayed_in(to, from, &payload);
            assert!(
                back.to_peer.is_empty() && back.to_relay.is_empty(),
                "relayed data went anywhere but to a client"
            );
            self.replies(back, None);
        }
        self.replies(out, Some(n % CLIENTS));
    }

    /// A request of `typ` from client `n` with `attrs`, signed with its REST
    /// credentials and the last nonce it was given (an unsigned Allocate
    /// first fetches one).
    fn signed(&mut self, n: u8, typ: MessageType, attrs: Vec<Box<dyn Setter>>, fingerprint: bool) {
        let n = n % CLIENTS;
        if !self.nonces.contains_key(&n) {
            let t = turn::proto::reqtrans::RequestedTransport {
                protocol: turn::proto::PROTO_UDP,
            };
            let txid = self.next_txid();
            let bytes = build(
                MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST),
                txid,
                &[&t],
                None,
                false,
            );
            self.input(n, &bytes);
        }
        let nonce = self.nonces.get(&n).cloned().unwrap_or_default();
        let (user, pass) =
            turnd::auth::rest_credentials(SECRET, Some("f"), Duration::from_secs(3600), self.sim.now.unix, ':');
        let key = turnd::auth::long_term_key(&user, REALM, &pass);
        let u = TextAttribute::new(ATTR_USERNAME, user);
        let r = TextAttribute::new(ATTR_REALM, REALM.into());
        let no = TextAttribute::new(ATTR_NONCE, nonce);
        let mut all: Vec<&dyn Setter> = attrs.iter().map(|a| &**a as &dyn Setter).collect();
        all.extend([&u as &dyn Setter, &r, &no]);
        let txid = self.next_txid();
        let bytes = build(typ, txid, &all, Some(&key[..]), fingerprint);
        self.input(n, &bytes);
    }

    /// Remembers the nonce and reservation token each client was given.
    fn replies(&mut self, out: Output, from: Option<u8>) {
        for (client, data) in out.replies {
            let Ok(d) = wire::Message::decode(&data) else { continue };
            let n = (0..CLIENTS).find(|&n| Self::client(n) == client);
            if let (Some(n), Some(nonce)) = (n.or(from), d.text(wire::attr::NONCE)) {
                self.nonces.insert(n, nonce.to_string());
            }
            if let Some(t) = d.attr(wire::attr::RESERVATION_TOKEN) {
                self.token = Some(t.to_vec());
            }
        }
    }

    /// Past every lifetime: nothing may be left. Returns how many
    /// allocations were made.
    pub fn finish(mut self) -> Result<u64, String> {
        self.sim.advance(Duration::from_secs(3600 + 600));
        let sim = &self.sim;
        let g = sim.shared.lock();
        let left = [
            ("relays open", sim.open.len()),
            ("held ports", sim.held().len()),
            ("allocations", sim.core.allocation_count()),
            ("counted allocations", g.total as usize),
            ("ports in use", g.ports.in_use()),
            ("reservations", g.reservations.len()),
            ("timers", sim.core.pending_timers()),
            ("allocations by events", sim.allocated.len()),
            ("channels by events", sim.routes.len()),
        ];
        match left.iter().find(|(_, n)| *n != 0) {
            Some((what, n)) => Err(format!("{n} {what} left after every lifetime")),
            None => Ok(sim.core.stats.allocations_created),
        }
    }
}

/// A STUN attribute as raw bytes.
struct Raw(AttrType, Vec<u8>);

impl Setter for Raw {
    fn add_to(&self, m: &mut Message) -> Result<(), stun::Error> {
        m.add(self.0, &self.1);
        Ok(())
    }
}

fn xor_peer(addr: SocketAddr) -> Box<dyn Setter> {
    Box::new(turn::proto::peeraddr::PeerAddress {
        ip: addr.ip(),
        port: addr.port(),
    })
}

/// A captured request's type and attributes without its credentials,
/// integrity and fingerprint, to be signed again.
fn strip_auth(bytes: &[u8]) -> Option<(MessageType, Vec<Box<dyn Setter>>)> {
    let mut m = Message::new();
    m.unmarshal_binary(bytes).ok()?;
    let drop = [
        ATTR_USERNAME,
        ATTR_REALM,
        ATTR_NONCE,
        ATTR_MESSAGE_INTEGRITY,
        ATTR_MESSAGE_INTEGRITY_SHA256,
        ATTR_FINGERPRINT,
        ATTR_USER_HASH,
        ATTR_PASSWORD_ALGORITHM,
    ];
    let attrs = m
        .attributes
        .0
        .iter()
        .filter(|a| !drop.contains(&a.typ))
        .map(|a| Box::new(Raw(a.typ, a.value.clone())) as Box<dyn Setter>)
        .collect();
    (m.typ.class == CLASS_REQUEST || m.typ.class == CLASS_INDICATION).then_some((m.typ, attrs))
}
