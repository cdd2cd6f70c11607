//! The protocol core driven with injected time: every method and error code
//! of RFC 8489/8656 that turnd implements, without sockets or sleeping.
//! (Addresses here never leave the process: the core sends nothing.)

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::stunc::*;
use stun::attributes::*;
use stun::message::*;
use turn::proto::reqfamily::{RequestedAddressFamily, REQUESTED_FAMILY_IPV4, REQUESTED_FAMILY_IPV6};
use turn::proto::rsrvtoken::ReservationToken;
use turnd::auth::{self, Credentials, StaticSecret};
use turnd::net::sim::{Output, Sim};
use turnd::proto::policy::OwnAddresses;
use turnd::proto::policy::PeerPolicy;
use turnd::proto::{ClientAddr, CoreConfig, Event, OpenError, RelayHandle, RelayId};

const REALM: &str = "example.org";
const SECRET: &[u8] = b"north";
const LOCAL: &str = "203.0.113.1:3478";

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn client(port: u16) -> ClientAddr {
    ClientAddr::udp(SocketAddr::new("198.51.100.7".parse().expect("ip"), port), sa(LOCAL))
}

fn base_config() -> CoreConfig {
    let mut c = Credentials::new(REALM);
    c.secrets = vec!["old-secret".into(), "north".into()];
    c.users
        .insert("alice".into(), StaticSecret::Password("wonderland".into()));
    c.users.insert(
        "bob".into(),
        StaticSecret::parse(&format!("0x{}", hex(&auth::long_term_key("bob", REALM, "builder")[..])).into()),
    );
    let mut cfg = CoreConfig::new(c);
    cfg.max_allocations_per_user = 3;
    cfg.max_allocations = 5;
    cfg
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What a test client saw for one input.
#[derive(Default, Debug)]
struct Out {
    replies: Vec<Vec<u8>>,
    to_peer: Vec<(RelayId, SocketAddr, Vec<u8>)>,
    to_client: Vec<Vec<u8>>,
    /// Handed to another allocation of this turnd: to, from, payload.
    to_relay: Vec<(RelayHandle, SocketAddr, Vec<u8>)>,
}

/// The simulated driver plus a client's credentials bookkeeping.
struct H {
    sim: Sim,
    nonces: HashMap<ClientAddr, String>,
    /// The REST username and password each client keeps using, as real
    /// clients do for the life of an allocation.
    rest_creds: HashMap<ClientAddr, (String, String)>,
    /// Every event the core emitted, in order.
    events: Vec<Event>,
}

impl std::ops::Deref for H {
    type Target = Sim;
    fn deref(&self) -> &Sim {
        &self.sim
    }
}

impl std::ops::DerefMut for H {
    fn deref_mut(&mut self) -> &mut Sim {
        &mut self.sim
    }
}

impl From<Output> for Out {
    fn from(o: Output) -> Self {
        Out {
            replies: o.replies.into_iter().map(|(_, d)| d).collect(),
            to_peer: o.to_peer,
            to_client: o.to_client.into_iter().map(|(_, d)| d).collect(),
            to_relay: o.to_relay,
        }
    }
}

impl H {
    fn new(cfg: CoreConfig) -> Self {
        Self::with_ports(cfg, 50000, 50099)
    }

    fn with_ports(cfg: CoreConfig, min: u16, max: u16) -> Self {
        Self::around(Sim::new(cfg, min, max))
    }

    fn around(sim: Sim) -> Self {
        Self {
            sim,
            nonces: HashMap::new(),
            rest_creds: HashMap::new(),
            events: Vec::new(),
        }
    }

    /// A second core on this one's shared state and clock: worker 1.
    fn beside(&self, cfg: CoreConfig) -> Self {
        Self::around(self.sim.beside(cfg, 1))
    }

    /// Keeps the events, returns the rest.
    fn seen(&mut self, mut o: Output) -> Out {
        self.events.append(&mut o.events);
        o.into()
    }

    fn send(&mut self, c: ClientAddr, bytes: &[u8]) -> Out {
        let o = self.sim.client_sends(c, bytes);
        self.seen(o)
    }

    /// What another allocation of this turnd handed to `to` (a
    /// [`Transmit::ToRelay`]), as the driver delivers it; replies count as
    /// what the client gets.
    fn relayed_in(&mut self, to: RelayHandle, from: SocketAddr, payload: &[u8]) -> Out {
        let o = self.sim.relayed_in(to, from, payload);
        let mut out = self.seen(o);
        assert!(
            out.to_peer.is_empty() && out.to_relay.is_empty(),
            "relayed data goes to the client"
        );
        out.to_client.append(&mut out.replies);
        out
    }

    fn peer_sends(&mut self, relay: RelayId, peer: SocketAddr, payload: &[u8]) -> Out {
        let o = self.sim.peer_sends(relay, peer, payload);
        let mut out = self.seen(o);
        assert!(
            out.to_peer.is_empty() && out.to_relay.is_empty(),
            "peer data goes to the client"
        );
        out.to_client.append(&mut out.replies);
        out
    }

    /// One message in, exactly one reply out.
    fn ask(&mut self, c: ClientAddr, m: &Message) -> Message {
        let out = self.send(c, &m.raw);
        assert_eq!(out.replies.len(), 1, "expected one reply, got {out:?}");
        let r = decode(&out.replies[0]);
        assert_eq!(r.transaction_id, m.transaction_id);
        r
    }

    fn cred(&mut self, c: ClientAddr, user: &str, pass: &str) -> Cred {
        let nonce = match self.nonces.get(&c) {
            Some(n) => n.clone(),
            None => {
                let r = self.ask(c, &build(req(METHOD_ALLOCATE), vec![transport_udp()], None, false));
                assert_eq!(error_code(&r), Some(401));
                assert_eq!(text(&r, ATTR_REALM).as_deref(), Some(REALM));
                let n = text(&r, ATTR_NONCE).expect("401 has a nonce");
                self.nonces.insert(c, n.clone());
                n
            }
        };
        Cred {
            user: user.into(),
            realm: REALM.into(),
            pass: pass.into(),
            nonce,
        }
    }

    fn rest(&mut self, c: ClientAddr, user: &str) -> Cred {
        let now = self.now.unix;
        let (u, p) = self
            .rest_creds
            .entry(c)
            .or_insert_with(|| auth::rest_credentials(SECRET, Some(user), Duration::from_secs(7200), now, ':'))
            .clone();
        self.cred(c, &u, &p)
    }

    /// An authenticated request as user "carol" (REST), following a 438
    /// with the new nonce like a real client.
    fn authed(&mut self, c: ClientAddr, method: Method, attrs: Attrs) -> Message {
        let cred = self.rest(c, "carol");
        let m = build(req(method), attrs, Some(&cred), false);
        let r = self.ask(c, &m);
        if error_code(&r) != Some(438) {
            return r;
        }
        let nonce = text(&r, ATTR_NONCE).expect("438 has a nonce");
        self.nonces.insert(c, nonce.clone());
        let cred = Cred { nonce, ..cred };
        // Same attributes, new nonce: rebuild from the raw attributes.
        let attrs: Attrs = m
            .attributes
            .0
            .iter()
            .filter(|a| ![ATTR_USERNAME, ATTR_REALM, ATTR_NONCE, ATTR_MESSAGE_INTEGRITY].contains(&a.typ))
            .map(|a| Box::new(a.clone()) as Box<dyn Setter>)
            .collect();
        let again = build(m.typ, attrs, Some(&cred), false);
        self.ask(c, &again)
    }

    /// A plain UDP Allocate signed with `cred`.
    fn allocate_with(&mut self, c: ClientAddr, cred: &Cred) -> Message {
        self.ask(
            c,
            &build(req(METHOD_ALLOCATE), vec![transport_udp()], Some(cred), false),
        )
    }

    fn allocate(&mut self, c: ClientAddr) -> (SocketAddr, RelayId) {
        let r = self.authed(c, METHOD_ALLOCATE, vec![transport_udp()]);
        assert!(is_success(&r), "allocate failed: {:?}", error_code(&r));
        let relayed = relayed(&r).expect("XOR-RELAYED-ADDRESS");
        let id = *self
            .open
            .iter()
            .find(|(_, a)| a.port() == relayed.port())
            .expect("relay opened")
            .0;
        (relayed, id)
    }

    fn advance(&mut self, secs: u64) {
        self.advance_by(Duration::from_secs(secs));
    }

    fn advance_ms(&mut self, ms: u64) {
        self.advance_by(Duration::from_millis(ms));
    }

    /// Moves both clocks and runs what fell due.
    fn advance_by(&mut self, d: Duration) {
        let o = self.sim.advance(d);
        self.seen(o);
    }
}

const PEER: &str = "1.2.3.4:7000";

// ---------------------------------------------------------------- Binding

#[test]
fn binding_answers_with_xor_mapped_address_and_echoes_fingerprint() {
    let mut h = H::new(base_config());
    let c = client(5000);
    let r = h.ask(c, &build(req(METHOD_BINDING), vec![], None, false));
    assert!(is_success(&r));
    assert_eq!(mapped(&r), Some(c.remote));
    assert!(r.get(ATTR_FINGERPRINT).is_err(), "no FINGERPRINT unless asked");
    let r = h.ask(c, &build(req(METHOD_BINDING), vec![], None, true));
    assert!(r.get(ATTR_FINGERPRINT).is_ok());
    stun::fingerprint::FINGERPRINT.check(&r).expect("valid fingerprint");
}

#[test]
fn unknown_comprehension_required_attributes_get_420() {
    let mut h = H::new(base_config());
    let c = client(5000);
    let r = h.ask(
        c,
        &build(
            req(METHOD_BINDING),
            vec![raw(0x0003, &[0, 0, 0, 4]), raw(0x7777, b"xx")],
            None,
            false,
        ),
    );
    assert_eq!(error_code(&r), Some(420));
    let mut u = stun::uattrs::UnknownAttributes(vec![]);
    stun::message::Getter::get_from(&mut u, &r).expect("UNKNOWN-ATTRIBUTES");
    assert_eq!(u.0, vec![AttrType(0x0003), AttrType(0x7777)]);
    // Unsigned: no reason phrase, like the 401 (anyone can provoke it from
    // a spoofed address, so it stays as small as the code allows).
    let mut e = stun::error_code::ErrorCodeAttribute::default();
    stun::message::Getter::get_from(&mut e, &r).expect("ERROR-CODE");
    assert!(e.reason.is_empty(), "unsigned 420 with a reason phrase: {:?}", e.reason);
    assert!(r.get(ATTR_MESSAGE_INTEGRITY).is_err());
    // Comprehension-optional ones are ignored.
    let r = h.ask(c, &build(req(METHOD_BINDING), vec![raw(0x8077, b"ok")], None, false));
    assert!(is_success(&r));
    // Authenticated requests: 420 after authentication.
    let r = h.authed(c, METHOD_ALLOCATE, vec![transport_udp(), raw(0x0031, b"zz")]);
    assert_eq!(error_code(&r), Some(420));
    assert!(r.get(ATTR_MESSAGE_INTEGRITY).is_ok());
    let mut e = stun::error_code::ErrorCodeAttribute::default();
    stun::message::Getter::get_from(&mut e, &r).expect("ERROR-CODE");
    assert_eq!(e.reason, b"Unknown Attribute", "a signed 420 says why");
}

#[test]
fn unsigned_420s_share_the_challenge_rate_limit() {
    let mut cfg = base_config();
    cfg.challenges_per_second = 10;
    let mut h = H::new(cfg);
    let unknown = || build(req(METHOD_BINDING), vec![raw(0x0003, &[0, 0, 0, 4])], None, false);
    let unsigned = || build(req(METHOD_ALLOCATE), vec![transport_udp()], None, false);
    // Ten 420s and ten 401s use up the burst of twenty; the rest get nothing.
    let mut answered = 0;
    for i in 0..20 {
        answered += h.send(client(6000 + i), &unknown().raw).replies.len();
        answered += h.send(client(6000 + i), &unsigned().raw).replies.len();
    }
    assert_eq!(answered, 20);
    assert_eq!(h.core.stats.challenges_limited, 20);
    // Plain Bindings are not challenges: still answered.
    assert!(is_success(
        &h.ask(client(7000), &build(req(METHOD_BINDING), vec![], None, false))
    ));
}

#[test]
fn non_stun_and_non_requests_are_dropped_silently() {
    let mut h = H::new(base_config());
    let c = client(5000);
    for junk in [&b""[..], b"\x80\x00\x00\x00", b"hello world, not stun", &[0xff; 64]] {
        let out = h.send(c, junk);
        assert!(out.replies.is_empty() && out.to_peer.is_empty());
    }
    let ind = build(MessageType::new(METHOD_BINDING, CLASS_INDICATION), vec![], None, false);
    assert!(h.send(c, &ind.raw).replies.is_empty());
    let resp = build(
        MessageType::new(METHOD_BINDING, CLASS_SUCCESS_RESPONSE),
        vec![],
        None,
        false,
    );
    assert!(h.send(c, &resp.raw).replies.is_empty());
    // Bad fingerprint: not STUN.
    let mut m = build(req(METHOD_BINDING), vec![], None, true);
    let n = m.raw.len();
    m.raw[n - 1] ^= 1;
    assert!(h.send(c, &m.raw).replies.is_empty());
}

#[test]
fn unknown_request_method_gets_400() {
    let mut h = H::new(base_config());
    let r = h.ask(client(1), &build(req(METHOD_CONNECT), vec![], None, false));
    assert_eq!(error_code(&r), Some(400));
}

// ---------------------------------------------------------------- Authentication

#[test]
fn long_term_auth_401_400_438_and_success() {
    let mut h = H::new(base_config());
    let c = client(5000);
    // No MESSAGE-INTEGRITY: 401 with REALM and NONCE and no integrity.
    let r = h.ask(c, &build(req(METHOD_ALLOCATE), vec![transport_udp()], None, false));
    assert_eq!(error_code(&r), Some(401));
    assert!(text(&r, ATTR_NONCE).is_some() && r.get(ATTR_MESSAGE_INTEGRITY).is_err());
    // MESSAGE-INTEGRITY without USERNAME: 400.
    let mut m = build(req(METHOD_ALLOCATE), vec![transport_udp()], None, false);
    stun::message::Setter::add_to(&stun::integrity::MessageIntegrity(vec![1; 16]), &mut m).expect("mi");
    assert_eq!(error_code(&h.ask(c, &m)), Some(400));
    // Wrong password: 401.
    let mut cred = h.rest(c, "carol");
    cred.pass = "wrong".into();
    let r = h.allocate_with(c, &cred);
    assert_eq!(error_code(&r), Some(401));
    // Stale nonce after its lifetime: 438 with a fresh nonce.
    let cred = h.rest(c, "carol");
    h.advance(600);
    let r = h.allocate_with(c, &cred);
    assert_eq!(error_code(&r), Some(438));
    let fresh = text(&r, ATTR_NONCE).expect("438 carries a nonce");
    assert_ne!(fresh, cred.nonce);
    // Garbage nonce: 438 too.
    let mut bad = cred.clone();
    bad.nonce = "nonsense".into();
    assert_eq!(error_code(&h.allocate_with(c, &bad)), Some(438));
    // With the fresh nonce (and a fresh credential): success, integrity on the answer.
    let (u, p) = auth::rest_credentials(SECRET, Some("carol"), Duration::from_secs(60), h.now.unix, ':');
    let ok = Cred {
        user: u.clone(),
        realm: REALM.into(),
        pass: p.clone(),
        nonce: fresh,
    };
    let r = h.allocate_with(c, &ok);
    assert!(is_success(&r));
    stun::integrity::MessageIntegrity::new_long_term_integrity(u, REALM.into(), p)
        .check(&mut r.clone())
        .expect("response integrity");
}

#[test]
fn nonce_is_bound_to_the_client_address() {
    let mut h = H::new(base_config());
    let a = client(5000);
    let mut cred = h.rest(a, "carol");
    let other = ClientAddr::udp(sa("198.51.100.8:5000"), sa(LOCAL));
    cred.nonce = h.nonces[&a].clone();
    let r = h.allocate_with(other, &cred);
    assert_eq!(error_code(&r), Some(438));
}

#[test]
fn rest_credentials_expire_and_rotate() {
    let mut h = H::new(base_config());
    let c = client(5000);
    // Minted with the older of two configured secrets: accepted.
    let (u, p) = auth::rest_credentials(b"old-secret", Some("dave"), Duration::from_secs(10), h.now.unix, ':');
    let cred = h.cred(c, &u, &p);
    let r = h.allocate_with(c, &cred);
    assert!(is_success(&r));
    // Expired username: 401 (a new 5-tuple, so no allocation applies).
    let c2 = client(5001);
    let (u, p) = auth::rest_credentials(SECRET, Some("dave"), Duration::from_secs(10), h.now.unix - 20, ':');
    let cred = h.cred(c2, &u, &p);
    let r = h.allocate_with(c2, &cred);
    assert_eq!(error_code(&r), Some(401));
    // A secret nobody configured: 401.
    let (u, p) = auth::rest_credentials(b"other", Some("dave"), Duration::from_secs(10), h.now.unix, ':');
    let cred = h.cred(c2, &u, &p);
    assert_eq!(error_code(&h.allocate_with(c2, &cred)), Some(401));
}

#[test]
fn an_allocation_outlives_its_rest_username() {
    let mut h = H::new(base_config());
    let c = client(5000);
    let (u, p) = auth::rest_credentials(SECRET, Some("erin"), Duration::from_secs(30), h.now.unix, ':');
    let cred = h.cred(c, &u, &p);
    assert!(is_success(&h.allocate_with(c, &cred)));
    h.advance(300);
    let cred = h.cred(c, &u, &p); // same nonce still valid (600 s)
    let r = h.ask(
        c,
        &build(req(METHOD_REFRESH), vec![lifetime_attr(600)], Some(&cred), false),
    );
    assert!(is_success(&r), "refresh of a live allocation after username expiry");
}

#[test]
fn static_users_with_password_and_coturn_key() {
    let mut h = H::new(base_config());
    for (port, user, pass) in [(1, "alice", "wonderland"), (2, "bob", "builder")] {
        let c = client(port);
        let cred = h.cred(c, user, pass);
        let r = h.allocate_with(c, &cred);
        assert!(is_success(&r), "{user}");
    }
    let c = client(3);
    let cred = h.cred(c, "mallory", "x");
    assert_eq!(error_code(&h.allocate_with(c, &cred)), Some(401));
}

#[test]
fn requests_with_another_username_on_an_allocation_get_441() {
    let mut h = H::new(base_config());
    let c = client(5000);
    h.allocate(c);
    let cred = h.cred(c, "alice", "wonderland");
    let r = h.ask(c, &build(req(METHOD_REFRESH), vec![], Some(&cred), false));
    assert_eq!(error_code(&r), Some(441));
}

// ---------------------------------------------------------------- Allocate

#[test]
fn allocate_success_has_relayed_mapped_lifetime() {
    let mut h = H::new(base_config());
    let c = client(5000);
    let r = h.authed(
        c,
        METHOD_ALLOCATE,
        vec![transport_udp(), Box::new(turn::proto::dontfrag::DontFragmentAttr)],
    );
    assert!(is_success(&r));
    let relayed = relayed(&r).expect("relayed");
    assert_eq!(
        relayed.ip(),
        sa(LOCAL).ip(),
        "relay bound on the address the client reached"
    );
    assert!((50000..=50099).contains(&relayed.port()));
    assert_eq!(mapped(&r), Some(c.remote));
    assert_eq!(lifetime(&r), Some(Duration::from_secs(600)));
    assert_eq!(h.core.allocation_count(), 1);
}

#[test]
fn allocate_lifetime_is_clamped() {
    let mut h = H::new(base_config());
    let r = h.authed(client(1), METHOD_ALLOCATE, vec![transport_udp(), lifetime_attr(7200)]);
    assert_eq!(lifetime(&r), Some(Duration::from_secs(3600)));
    let r = h.authed(client(2), METHOD_ALLOCATE, vec![transport_udp(), lifetime_attr(30)]);
    assert_eq!(lifetime(&r), Some(Duration::from_secs(600)), "never below the default");
    let mut cfg = base_config();
    cfg.default_lifetime = Duration::from_secs(120);
    cfg.max_lifetime = Duration::from_secs(900);
    let mut h = H::new(cfg);
    assert_eq!(
        lifetime(&h.authed(client(1), METHOD_ALLOCATE, vec![transport_udp()])),
        Some(Duration::from_secs(120))
    );
    let r = h.authed(client(2), METHOD_ALLOCATE, vec![transport_udp(), lifetime_attr(1000)]);
    assert_eq!(lifetime(&r), Some(Duration::from_secs(900)));
}

#[test]
fn allocate_transport_errors() {
    let mut h = H::new(base_config());
    assert_eq!(error_code(&h.authed(client(1), METHOD_ALLOCATE, vec![])), Some(400));
    let tcp = Box::new(turn::proto::reqtrans::RequestedTransport {
        protocol: turn::proto::PROTO_TCP,
    });
    assert_eq!(error_code(&h.authed(client(1), METHOD_ALLOCATE, vec![tcp])), Some(442));
    assert_eq!(h.core.allocation_count(), 0);
    assert_eq!(h.ports_in_use(), 0);
}

#[test]
fn second_allocate_is_437_and_retransmission_gets_the_same_answer() {
    let mut h = H::new(base_config());
    let c = client(5000);
    let cred = h.rest(c, "carol");
    let m = build(req(METHOD_ALLOCATE), vec![transport_udp()], Some(&cred), false);
    let first = h.send(c, &m.raw).replies;
    assert_eq!(first.len(), 1);
    let again = h.send(c, &m.raw).replies;
    assert_eq!(again, first, "retransmission answered byte for byte like the first");
    assert_eq!(h.core.allocation_count(), 1);
    let r = h.authed(c, METHOD_ALLOCATE, vec![transport_udp()]);
    assert_eq!(error_code(&r), Some(437));
    assert!(r.get(ATTR_MESSAGE_INTEGRITY).is_ok());
}

#[test]
fn requested_address_family() {
    let mut h = H::new(base_config());
    let v6 = Box::new(REQUESTED_FAMILY_IPV6);
    assert_eq!(
        error_code(&h.authed(client(1), METHOD_ALLOCATE, vec![transport_udp(), v6])),
        Some(440)
    );
    let bad = Box::new(RequestedAddressFamily(0x03));
    assert_eq!(
        error_code(&h.authed(client(2), METHOD_ALLOCATE, vec![transport_udp(), bad])),
        Some(440)
    );
    let v4 = Box::new(REQUESTED_FAMILY_IPV4);
    assert!(is_success(&h.authed(
        client(3),
        METHOD_ALLOCATE,
        vec![transport_udp(), v4]
    )));
    let mut cfg = base_config();
    cfg.relay_ipv6 = Some("2001:db8::10".parse().expect("ip"));
    let mut h = H::new(cfg);
    let r = h.authed(
        client(1),
        METHOD_ALLOCATE,
        vec![transport_udp(), Box::new(REQUESTED_FAMILY_IPV6)],
    );
    assert_eq!(
        relayed(&r).map(|a| a.ip()),
        Some("2001:db8::10".parse::<IpAddr>().expect("ip"))
    );
    // IPv6 client without the attribute: IPv4 relay (RFC 8656 §7.2) — none here.
    let c6 = ClientAddr::udp(sa("[2001:db8::7]:5000"), sa("[2001:db8::1]:3478"));
    assert_eq!(
        error_code(&h.authed(c6, METHOD_ALLOCATE, vec![transport_udp()])),
        Some(440)
    );
}

#[test]
fn external_ip_is_advertised() {
    let mut cfg = base_config();
    cfg.external_ipv4 = Some("192.0.2.99".parse().expect("ip"));
    let mut h = H::new(cfg);
    let (relayed, id) = h.allocate(client(1));
    assert_eq!(relayed.ip(), "192.0.2.99".parse::<IpAddr>().expect("ip"));
    assert_eq!(h.open[&id].ip(), sa(LOCAL).ip(), "bound locally");
    // IPv6: bound on relay-ipv6, advertised as external IPv6.
    let mut cfg = base_config();
    cfg.relay_ipv6 = Some("2001:db8::10".parse().expect("ip"));
    cfg.external_ipv6 = Some("2001:db8:ffff::1".parse().expect("ip"));
    let mut h = H::new(cfg);
    let r = h.authed(
        client(1),
        METHOD_ALLOCATE,
        vec![transport_udp(), Box::new(REQUESTED_FAMILY_IPV6)],
    );
    let advertised = common::stunc::relayed(&r).expect("relayed");
    assert_eq!(advertised.ip(), "2001:db8:ffff::1".parse::<IpAddr>().expect("ip"));
    let bound = h.open.values().next().expect("open");
    assert_eq!(bound.ip(), "2001:db8::10".parse::<IpAddr>().expect("ip"));
    assert_eq!(bound.port(), advertised.port());
}

#[test]
fn even_port_and_reservation_token() {
    let mut cfg = base_config();
    cfg.max_allocations_per_user = 10;
    cfg.max_allocations = 10;
    let mut h = H::new(cfg);
    let r = h.authed(client(1), METHOD_ALLOCATE, vec![transport_udp(), raw(0x0018, &[0x00])]);
    assert_eq!(relayed(&r).map(|a| a.port() % 2), Some(0));
    let r = h.authed(client(2), METHOD_ALLOCATE, vec![transport_udp(), raw(0x0018, &[0x80])]);
    let port = relayed(&r).expect("relayed").port();
    assert_eq!(port % 2, 0);
    let mut tok = ReservationToken::default();
    stun::message::Getter::get_from(&mut tok, &r).expect("RESERVATION-TOKEN");
    assert_eq!(tok.0.len(), 8);
    assert_eq!(h.ports_in_use(), 3, "the reserved port is held");
    let next = SocketAddr::new(relayed(&r).expect("relayed").ip(), port + 1);
    assert_eq!(
        h.held(),
        HashSet::from([next]),
        "the driver was told to bind and keep it"
    );
    // Token with EVEN-PORT: 400.
    let both: Attrs = vec![
        transport_udp(),
        Box::new(ReservationToken(tok.0.clone())),
        raw(0x0018, &[0x00]),
    ];
    assert_eq!(error_code(&h.authed(client(3), METHOD_ALLOCATE, both)), Some(400));
    // Redeem: port + 1.
    let r = h.authed(
        client(3),
        METHOD_ALLOCATE,
        vec![transport_udp(), Box::new(ReservationToken(tok.0.clone()))],
    );
    assert_eq!(relayed(&r).map(|a| a.port()), Some(port + 1));
    assert!(h.held().is_empty(), "the held socket became the relay");
    // Used up: 508.
    let r = h.authed(client(4), METHOD_ALLOCATE, vec![transport_udp(), Box::new(tok)]);
    assert_eq!(error_code(&r), Some(508));
    let bogus = Box::new(ReservationToken(vec![9; 8]));
    assert_eq!(
        error_code(&h.authed(client(4), METHOD_ALLOCATE, vec![transport_udp(), bogus])),
        Some(508)
    );
}

/// The pair is bound together: when the reserved port is taken by another
/// program, the core picks a new pair instead of handing out a token the
/// driver cannot honour.
#[test]
fn a_taken_reserved_port_makes_a_new_pair() {
    let mut h = H::new(base_config());
    h.open_results = [Err(OpenError::InUse), Err(OpenError::InUse)].into();
    let r = h.authed(client(2), METHOD_ALLOCATE, vec![transport_udp(), raw(0x0018, &[0x80])]);
    let port = relayed(&r).expect("allocated on the third pair").port();
    assert_eq!(port % 2, 0);
    assert_eq!(h.ports_in_use(), 2, "the failed pairs were given back");
    let next = SocketAddr::new(relayed(&r).expect("relayed").ip(), port + 1);
    assert_eq!(h.held(), HashSet::from([next]));
    let mut tok = ReservationToken::default();
    stun::message::Getter::get_from(&mut tok, &r).expect("token");
    let r = h.authed(client(3), METHOD_ALLOCATE, vec![transport_udp(), Box::new(tok)]);
    assert_eq!(relayed(&r).map(|a| a.port()), Some(port + 1));
    assert!(h.held().is_empty());
}

#[test]
fn unredeemed_reservation_expires_after_30s() {
    let mut h = H::new(base_config());
    let r = h.authed(client(2), METHOD_ALLOCATE, vec![transport_udp(), raw(0x0018, &[0x80])]);
    let mut tok = ReservationToken::default();
    stun::message::Getter::get_from(&mut tok, &r).expect("token");
    assert_eq!(h.ports_in_use(), 2);
    assert_eq!(h.held().len(), 1);
    h.advance(31);
    assert_eq!(h.ports_in_use(), 1);
    assert!(h.held().is_empty(), "the held socket was closed");
    let r = h.authed(client(3), METHOD_ALLOCATE, vec![transport_udp(), Box::new(tok)]);
    assert_eq!(error_code(&r), Some(508));
}

#[test]
fn quotas_486_and_508_and_release() {
    let mut h = H::new(base_config()); // 3 per user, 5 in total
    for p in 1..=3 {
        h.allocate(client(p));
    }
    assert_eq!(
        error_code(&h.authed(client(4), METHOD_ALLOCATE, vec![transport_udp()])),
        Some(486)
    );
    for (p, user) in [(5, "alice"), (6, "bob")] {
        let pass = if user == "alice" { "wonderland" } else { "builder" };
        let cred = h.cred(client(p), user, pass);
        assert!(is_success(&h.allocate_with(client(p), &cred)));
    }
    let cred = h.cred(client(7), "alice", "wonderland");
    let r = h.allocate_with(client(7), &cred);
    assert_eq!(error_code(&r), Some(508));
    // Deleting one frees a place.
    assert!(is_success(&h.authed(client(1), METHOD_REFRESH, vec![lifetime_attr(0)])));
    let r = h.allocate_with(client(7), &cred);
    assert!(is_success(&r));
}

/// A client that went away (a phone that changed networks) leaves its
/// allocation behind: once silent for `replace_idle_after`, a new
/// allocation of the same user replaces it instead of getting 486. One
/// whose client still speaks (requests, or data relayed in the kernel) is
/// never replaced.
#[test]
fn a_full_quota_replaces_an_allocation_whose_client_went_silent() {
    let mut cfg = base_config(); // 3 per user
    cfg.replace_idle_after = Duration::from_secs(10);
    let mut h = H::new(cfg);
    // 1 speaks through the kernel, 2 with requests, 3 not at all (listed
    // first if 1's kernel traffic went unseen).
    let (_, kernel) = h.allocate(client(1));
    h.allocate(client(2));
    h.allocate(client(3));
    let speak = |h: &mut H| {
        assert!(is_success(&h.authed(
            client(2),
            METHOD_REFRESH,
            vec![lifetime_attr(600)]
        )));
        let now = h.sim.now.mono;
        let sent = turnd::proto::Relayed {
            to_peer_packets: 1,
            to_peer_bytes: 100,
            ..Default::default()
        };
        assert!(h.sim.core.credit_offloaded(kernel, &sent, now));
    };
    h.advance(5);
    speak(&mut h);
    assert_eq!(
        error_code(&h.authed(client(4), METHOD_ALLOCATE, vec![transport_udp()])),
        Some(486),
        "nobody silent for 10 s yet"
    );
    h.advance(6);
    speak(&mut h);
    h.advance(1);
    h.allocate(client(4));
    // Client 3's allocation is gone; 1 and 2 are not.
    assert_eq!(error_code(&h.authed(client(3), METHOD_REFRESH, vec![])), Some(437));
    assert!(is_success(&h.authed(client(1), METHOD_REFRESH, vec![])));
    assert!(is_success(&h.authed(client(2), METHOD_REFRESH, vec![])));
    assert_eq!(h.sim.core.allocation_count(), 3);
    // Nothing idle left: the quota holds.
    assert_eq!(
        error_code(&h.authed(client(5), METHOD_ALLOCATE, vec![transport_udp()])),
        Some(486)
    );
    // Replacing off: silent allocations count for their whole lifetime.
    let mut cfg = base_config();
    cfg.replace_idle_after = Duration::ZERO;
    let mut h = H::new(cfg);
    for p in 1..=3 {
        h.allocate(client(p));
    }
    h.advance(60);
    assert_eq!(
        error_code(&h.authed(client(4), METHOD_ALLOCATE, vec![transport_udp()])),
        Some(486)
    );
}

#[test]
fn relay_port_range_exhaustion_is_508() {
    let mut cfg = base_config();
    cfg.max_allocations_per_user = 100;
    cfg.max_allocations = 100;
    let mut h = H::with_ports(cfg, 40000, 40001);
    h.allocate(client(1));
    h.allocate(client(2));
    assert_eq!(
        error_code(&h.authed(client(3), METHOD_ALLOCATE, vec![transport_udp()])),
        Some(508)
    );
    h.advance(601);
    assert_eq!(h.ports_in_use(), 0);
    h.allocate(client(3));
}

#[test]
fn busy_ports_are_retried_and_failures_leak_nothing() {
    let mut h = H::new(base_config());
    h.open_results = [Err(OpenError::InUse), Err(OpenError::InUse)].into();
    let (_, _) = h.allocate(client(1));
    assert_eq!(h.ports_in_use(), 1);
    h.open_results = [Err(OpenError::Failed)].into();
    let r = h.authed(client(2), METHOD_ALLOCATE, vec![transport_udp()]);
    assert_eq!(error_code(&r), Some(508));
    assert_eq!(h.ports_in_use(), 1);
    assert_eq!(h.core.allocation_count(), 1);
    h.open_results = [Err(OpenError::InUse); 8].into();
    assert_eq!(
        error_code(&h.authed(client(3), METHOD_ALLOCATE, vec![transport_udp()])),
        Some(508)
    );
    assert_eq!(h.ports_in_use(), 1);
    h.allocate(client(4));
    assert_eq!(h.ports_in_use(), 2);
    assert_eq!(h.shared.lock().total, 2, "quota released after failures");
}

// ---------------------------------------------------------------- Refresh and expiry

#[test]
fn refresh_extends_and_zero_deletes() {
    let mut h = H::new(base_config());
    let c = client(5000);
    let (_, id) = h.allocate(c);
    h.advance(500);
    let r = h.authed(c, METHOD_REFRESH, vec![lifetime_attr(7200)]);
    assert_eq!(lifetime(&r), Some(Duration::from_secs(3600)));
    h.advance(3599);
    assert!(h.open.contains_key(&id));
    let r = h.authed(c, METHOD_REFRESH, vec![]);
    assert_eq!(
        lifetime(&r),
        Some(Duration::from_secs(600)),
        "no LIFETIME means the default"
    );
    let r = h.authed(c, METHOD_REFRESH, vec![lifetime_attr(30)]);
    assert_eq!(lifetime(&r), Some(Duration::from_secs(30)), "refresh may shorten");
    h.advance(29);
    assert!(h.open.contains_key(&id));
    h.advance(1);
    assert!(!h.open.contains_key(&id), "expired after exactly 30 s");
    assert_eq!(h.ports_in_use(), 0);
    let r = h.authed(c, METHOD_REFRESH, vec![]);
    assert_eq!(error_code(&r), Some(437));
    // Delete with lifetime 0.
    let (_, id) = h.allocate(c);
    let r = h.authed(c, METHOD_REFRESH, vec![lifetime_attr(0)]);
    assert_eq!(lifetime(&r), Some(Duration::ZERO));
    assert!(!h.open.contains_key(&id));
    assert_eq!(h.core.allocation_count(), 0);
}

#[test]
fn allocation_expires_exactly_at_its_lifetime() {
    let mut h = H::new(base_config());
    let (_, id) = h.allocate(client(1));
    h.advance(599);
    h.advance_ms(999);
    assert!(h.open.contains_key(&id));
    h.advance_ms(1);
    assert!(!h.open.contains_key(&id));
    assert_eq!(h.core.stats.allocations_expired, 1);
    assert_eq!(h.shared.lock().total, 0);
}

#[test]
fn no_timer_outlives_the_last_allocation() {
    // Two allocations half a second apart, then one jump of the clock past
    // both lifetimes (a driver that slept): the idle sweep, due long before
    // and re-armed from the time it ran while the second allocation was
    // still there, must go with the last allocation.
    let mut h = H::new(base_config());
    h.allocate(client(1));
    h.advance_ms(500);
    h.allocate(client(2));
    h.advance(601);
    assert_eq!(h.core.allocation_count(), 0);
    assert_eq!(h.core.pending_timers(), 0, "timers left after the last allocation");
}

#[test]
fn refresh_family_mismatch_is_443() {
    let mut h = H::new(base_config());
    let c = client(1);
    h.allocate(c);
    let r = h.authed(c, METHOD_REFRESH, vec![Box::new(REQUESTED_FAMILY_IPV6)]);
    assert_eq!(error_code(&r), Some(443));
}

// ---------------------------------------------------------------- Permissions

#[test]
fn create_permission_several_peers_denied_and_mismatched() {
    let mut h = H::new(base_config());
    let c = client(1);
    let (_, id) = h.allocate(c);
    let p1 = sa("1.2.3.4:1000");
    let p2 = sa("5.6.7.8:2000");
    assert!(is_success(&h.authed(
        c,
        METHOD_CREATE_PERMISSION,
        vec![peer(p1), peer(p2)]
    )));
    assert_eq!(
        h.peer_sends(id, sa("1.2.3.4:9999"), b"x").to_client.len(),
        1,
        "permission is per IP"
    );
    assert_eq!(h.peer_sends(id, p2, b"x").to_client.len(), 1);
    assert_eq!(error_code(&h.authed(c, METHOD_CREATE_PERMISSION, vec![])), Some(400));
    let denied = sa("10.0.0.1:80");
    let p3 = sa("9.9.9.9:1");
    let r = h.authed(c, METHOD_CREATE_PERMISSION, vec![peer(p3), peer(denied)]);
    assert_eq!(error_code(&r), Some(403));
    assert!(h.peer_sends(id, p3, b"x").to_client.is_empty(), "all or nothing");
    let r = h.authed(c, METHOD_CREATE_PERMISSION, vec![peer(sa("[2606:4700::1]:80"))]);
    assert_eq!(error_code(&r), Some(443));
    let r = h.authed(client(99), METHOD_CREATE_PERMISSION, vec![peer(p1)]);
    assert_eq!(error_code(&r), Some(437));
}

#[test]
fn permissions_expire_after_300s_and_refresh() {
    let mut h = H::new(base_config());
    let c = client(1);
    let (_, id) = h.allocate(c);
    let p = sa(PEER);
    h.authed(c, METHOD_CREATE_PERMISSION, vec![peer(p)]);
    h.advance(299);
    assert_eq!(h.peer_sends(id, p, b"a").to_client.len(), 1);
    h.authed(c, METHOD_CREATE_PERMISSION, vec![peer(p)]);
    h.advance(299);
    assert_eq!(h.peer_sends(id, p, b"b").to_client.len(), 1, "refreshed at 299 s");
    h.advance(1);
    assert!(
        h.peer_sends(id, p, b"c").to_client.is_empty(),
        "expired 300 s after the refresh"
    );
    let send = build(
        MessageType::new(METHOD_SEND, CLASS_INDICATION),
        vec![peer(p), data(b"d")],
        None,
        false,
    );
    assert!(h.send(c, &send.raw).to_peer.is_empty());
}

#[test]
fn policy_from_config_allows_ranges() {
    let mut cfg = base_config();
    cfg.policy = PeerPolicy::new(
        vec!["10.1.0.0/16".parse().expect("net")],
        vec!["1.2.3.0/24".parse().expect("net")],
    );
    let mut h = H::new(cfg);
    let c = client(1);
    h.allocate(c);
    assert!(is_success(&h.authed(
        c,
        METHOD_CREATE_PERMISSION,
        vec![peer(sa("10.1.2.3:4"))]
    )));
    assert_eq!(
        error_code(&h.authed(c, METHOD_CREATE_PERMISSION, vec![peer(sa("10.2.0.1:4"))])),
        Some(403)
    );
    assert_eq!(
        error_code(&h.authed(c, METHOD_CREATE_PERMISSION, vec![peer(sa(PEER))])),
        Some(403)
    );
}

// ---------------------------------------------------------------- one turnd, two allocations

/// A core whose own address is [`LOCAL`] (its listener and relays), in a
/// documentation range the default policy denies.
fn own_config() -> CoreConfig {
    let mut cfg = base_config();
    cfg.own = OwnAddresses::new([sa(LOCAL).ip()], &[]);
    cfg
}

fn send_ind(to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    build(
        MessageType::new(METHOD_SEND, CLASS_INDICATION),
        vec![peer(to), data(payload)],
        None,
        false,
    )
    .raw
}

#[test]
fn two_allocations_of_one_turnd_relay_to_each_other_inside_the_process() {
    let mut h = H::new(own_config());
    let (a, b) = (client(1), client(2));
    let (ra, _) = h.allocate(a);
    let (rb, _) = h.allocate(b);
    assert!(
        !h.core.config().policy.permits(rb.ip()),
        "the relayed address is in a denied range"
    );
    // Each may install a permission for the other's relayed address.
    for (c, other) in [(a, rb), (b, ra)] {
        let r = h.authed(c, METHOD_CREATE_PERMISSION, vec![peer(other)]);
        assert!(
            is_success(&r),
            "CreatePermission to a live relay of this turnd: {:?}",
            error_code(&r)
        );
    }
    // A Send indication is handed to B's allocation, from A's relayed
    // address, never to a socket; B's client gets a Data indication.
    let out = h.send(a, &send_ind(rb, b"over the loop"));
    assert!(out.to_peer.is_empty(), "no trip through the kernel");
    let (to, from, payload) = out.to_relay.into_iter().next().expect("handed over");
    assert_eq!((from, payload.as_slice()), (ra, &b"over the loop"[..]));
    let got = h.relayed_in(to, from, &payload);
    let m = decode(&got.to_client[0]);
    assert_eq!(data_indication(&m), Some((ra, b"over the loop".to_vec())));
    // Channels both ways: ChannelData in, ChannelData on the other's channel out.
    assert!(is_success(&h.authed(
        a,
        METHOD_CHANNEL_BIND,
        vec![channel(0x4000), peer(rb)]
    )));
    assert!(is_success(&h.authed(
        b,
        METHOD_CHANNEL_BIND,
        vec![channel(0x4321), peer(ra)]
    )));
    let out = h.send(a, &channel_data(0x4000, b"ping", false));
    let (to, from, payload) = out.to_relay.into_iter().next().expect("handed over");
    assert_eq!(
        h.relayed_in(to, from, &payload).to_client,
        vec![channel_data(0x4321, b"ping", false)]
    );
    let out = h.send(b, &channel_data(0x4321, b"pong", true));
    let (to, from, payload) = out.to_relay.into_iter().next().expect("handed over");
    assert_eq!((from, payload.as_slice()), (rb, &b"pong"[..]));
    assert_eq!(
        h.relayed_in(to, from, &payload).to_client,
        vec![channel_data(0x4000, b"pong", false)]
    );
    // Counted like any relayed data, and as internal.
    assert_eq!(h.core.stats.internal.packets, 3);
    // The same address through the kernel is not A's relay (spoofed, or
    // another program of this host): dropped.
    let (_, id_b) = (rb, *h.open.iter().find(|(_, x)| **x == rb).expect("open").0);
    assert!(h.peer_sends(id_b, ra, b"spoofed").to_client.is_empty());
}

#[test]
fn only_live_relays_of_turnds_own_addresses_are_peers() {
    // Even with turnd's whole range allowed, its listener and any port of
    // its address that is not a live relay stay refused.
    let mut cfg = own_config();
    cfg.policy = PeerPolicy::new(vec!["203.0.113.0/24".parse().expect("net")], vec![]);
    let mut h = H::new(cfg);
    let (a, b) = (client(1), client(2));
    let (ra, _) = h.allocate(a);
    let (rb, _) = h.allocate(b);
    let listener = sa(LOCAL);
    let idle_port = SocketAddr::new(listener.ip(), if rb.port() == 50099 { 50098 } else { 50099 });
    for target in [listener, idle_port] {
        assert_eq!(
            error_code(&h.authed(a, METHOD_CREATE_PERMISSION, vec![peer(target)])),
            Some(403),
            "{target}"
        );
        assert_eq!(
            error_code(&h.authed(a, METHOD_CHANNEL_BIND, vec![channel(0x4001), peer(target)])),
            Some(403),
            "{target}"
        );
    }
    // Another address in the allowed range is an ordinary peer.
    assert!(is_success(&h.authed(
        a,
        METHOD_CREATE_PERMISSION,
        vec![peer(sa("203.0.113.77:9"))]
    )));
    // A permission for B's relay covers its IP, not the listener on it: a
    // Send indication to the listener goes nowhere.
    assert!(is_success(&h.authed(a, METHOD_CREATE_PERMISSION, vec![peer(rb)])));
    let out = h.send(a, &send_ind(listener, b"loop"));
    assert!(out.to_peer.is_empty() && out.to_relay.is_empty(), "{out:?}");
    assert_eq!(h.send(a, &send_ind(rb, b"ok")).to_relay.len(), 1);
    // B's allocation deleted: its address stops being a peer at once.
    assert!(is_success(&h.authed(
        a,
        METHOD_CHANNEL_BIND,
        vec![channel(0x4000), peer(rb)]
    )));
    let r = h.authed(b, METHOD_REFRESH, vec![lifetime_attr(0)]);
    assert!(is_success(&r));
    let out = h.send(a, &channel_data(0x4000, b"late", false));
    assert!(out.to_peer.is_empty() && out.to_relay.is_empty(), "{out:?}");
    assert!(h.send(a, &send_ind(rb, b"late")).to_relay.is_empty());
    assert_eq!(
        error_code(&h.authed(a, METHOD_CREATE_PERMISSION, vec![peer(rb)])),
        Some(403)
    );
    let _ = ra;
}

#[test]
fn handoffs_cross_workers_and_stale_handles_are_dropped() {
    let mut w0 = H::new(own_config());
    let mut w1 = w0.beside(own_config());
    let (a, b) = (client(1), client(2));
    let (ra, _) = w0.allocate(a);
    let (rb, _) = w1.allocate(b);
    assert!(is_success(&w0.authed(
        a,
        METHOD_CHANNEL_BIND,
        vec![channel(0x4000), peer(rb)]
    )));
    assert!(is_success(&w1.authed(b, METHOD_CREATE_PERMISSION, vec![peer(ra)])));
    let out = w0.send(a, &channel_data(0x4000, b"to the other worker", false));
    let (to, from, payload) = out.to_relay.into_iter().next().expect("handed over");
    assert_eq!(to.worker, 1);
    // The wrong worker's core drops it; the right one delivers it.
    assert!(w0.relayed_in(to, from, &payload).to_client.is_empty());
    let m = decode(&w1.relayed_in(to, from, &payload).to_client[0]);
    assert_eq!(data_indication(&m), Some((ra, b"to the other worker".to_vec())));
    // B gone and its relay id reused by a new allocation: the old handle
    // finds nothing.
    assert!(is_success(&w1.authed(b, METHOD_REFRESH, vec![lifetime_attr(0)])));
    let c = client(3);
    w1.allocate(c);
    assert!(w1.relayed_in(to, from, &payload).to_client.is_empty());
}

#[test]
fn handoffs_count_against_bandwidth_limits_both_ways() {
    let mut cfg = own_config();
    cfg.max_bps = 1000;
    let mut h = H::new(cfg);
    let (a, b) = (client(1), client(2));
    let (ra, _) = h.allocate(a);
    let (rb, _) = h.allocate(b);
    assert!(is_success(&h.authed(
        a,
        METHOD_CHANNEL_BIND,
        vec![channel(0x4000), peer(rb)]
    )));
    assert!(is_success(&h.authed(
        b,
        METHOD_CHANNEL_BIND,
        vec![channel(0x4000), peer(ra)]
    )));
    let sent = (0..20)
        .filter_map(|_| h.send(a, &channel_data(0x4000, &[7; 100], false)).to_relay.pop())
        .collect::<Vec<_>>();
    assert_eq!(sent.len(), 10, "A's budget: one second of 1000 B");
    assert_eq!(h.core.stats.over_bandwidth, 10);
}

#[test]
fn a_reload_keeps_permissions_and_channels_to_live_relays() {
    let mut h = H::new(own_config());
    let (a, b) = (client(1), client(2));
    let (_, _) = h.allocate(a);
    let (rb, _) = h.allocate(b);
    assert!(is_success(&h.authed(
        a,
        METHOD_CHANNEL_BIND,
        vec![channel(0x4000), peer(rb)]
    )));
    let mut cfg = own_config();
    cfg.policy = PeerPolicy::new(vec![], vec!["0.0.0.0/0".parse().expect("net")]);
    h.core.set_config(Arc::new(cfg));
    assert_eq!(h.send(a, &channel_data(0x4000, b"still", false)).to_relay.len(), 1);
}

// ---------------------------------------------------------------- Send / Data indications

#[test]
fn send_and_data_indications() {
    let mut h = H::new(base_config());
    let c = client(1);
    let (_, id) = h.allocate(c);
    let p = sa(PEER);
    let send = build(
        MessageType::new(METHOD_SEND, CLASS_INDICATION),
        vec![peer(p), data(b"hello")],
        None,
        false,
    );
    assert!(h.send(c, &send.raw).to_peer.is_empty(), "no permission yet");
    assert!(h.peer_sends(id, p, b"early").to_client.is_empty());
    h.authed(c, METHOD_CREATE_PERMISSION, vec![peer(p)]);
    let out = h.send(c, &send.raw);
    assert_eq!(out.to_peer, vec![(id, p, b"hello".to_vec())]);
    // DONT-FRAGMENT in a Send indication is accepted.
    let send_df = build(
        MessageType::new(METHOD_SEND, CLASS_INDICATION),
        vec![peer(p), data(b"df"), Box::new(turn::proto::dontfrag::DontFragmentAttr)],
        None,
        false,
    );
    assert_eq!(h.send(c, &send_df.raw).to_peer.len(), 1);
    let back = h.peer_sends(id, p, b"world");
    assert_eq!(back.to_client.len(), 1);
    assert_eq!(
        data_indication(&decode(&back.to_client[0])),
        Some((p, b"world".to_vec()))
    );
    // From another allocation's client: nothing.
    assert!(h.send(client(2), &send.raw).to_peer.is_empty());
}

// ---------------------------------------------------------------- Channels

#[test]
fn channel_bind_ranges_and_data_both_ways() {
    let mut h = H::new(base_config());
    let c = client(1);
    let (_, id) = h.allocate(c);
    let p = sa(PEER);
    assert_eq!(
        error_code(&h.authed(c, METHOD_CHANNEL_BIND, vec![channel(0x3FFF), peer(p)])),
        Some(400)
    );
    // RFC 8656 §12: 0x4000–0x4FFF; 0x5000–0xFFFF are reserved.
    for n in [0x5000, 0x7FFF, 0x8000, 0xFFFF] {
        assert_eq!(
            error_code(&h.authed(c, METHOD_CHANNEL_BIND, vec![channel(n), peer(p)])),
            Some(400),
            "channel {n:#x}"
        );
    }
    assert_eq!(
        error_code(&h.authed(c, METHOD_CHANNEL_BIND, vec![channel(0x4000)])),
        Some(400)
    );
    assert_eq!(error_code(&h.authed(c, METHOD_CHANNEL_BIND, vec![peer(p)])), Some(400));
    assert_eq!(
        error_code(&h.authed(c, METHOD_CHANNEL_BIND, vec![channel(0x4000), peer(sa("127.0.0.1:1"))])),
        Some(403)
    );
    assert!(is_success(&h.authed(
        c,
        METHOD_CHANNEL_BIND,
        vec![channel(0x4000), peer(p)]
    )));
    assert!(is_success(&h.authed(
        c,
        METHOD_CHANNEL_BIND,
        vec![channel(0x4FFF), peer(sa("1.2.3.4:7001"))]
    )));
    // Client to peer, with and without padding.
    for pad in [false, true] {
        let out = h.send(c, &channel_data(0x4000, b"abc", pad));
        assert_eq!(out.to_peer, vec![(id, p, b"abc".to_vec())]);
    }
    // Declared length past the datagram: dropped.
    let mut bad = channel_data(0x4000, b"abcd", false);
    bad.truncate(6);
    assert!(h.send(c, &bad).to_peer.is_empty());
    // Unbound channel: dropped.
    assert!(h.send(c, &channel_data(0x4001, b"x", false)).to_peer.is_empty());
    // Peer to client: ChannelData built in place.
    let out = h.peer_sends(id, p, b"pong");
    assert_eq!(out.to_client, vec![channel_data(0x4000, b"pong", false)]);
    // The channel implies the permission for the IP: other ports get Data indications.
    let out = h.peer_sends(id, sa("1.2.3.4:9"), b"di");
    assert!(data_indication(&decode(&out.to_client[0])).is_some());
}

#[test]
fn channel_rebinding_rules() {
    let mut h = H::new(base_config());
    let c = client(1);
    h.allocate(c);
    let p = sa(PEER);
    let q = sa("1.2.3.4:7001");
    assert!(is_success(&h.authed(
        c,
        METHOD_CHANNEL_BIND,
        vec![channel(0x4000), peer(p)]
    )));
    // Same number, other peer: 400. Same peer, other number: 400.
    assert_eq!(
        error_code(&h.authed(c, METHOD_CHANNEL_BIND, vec![channel(0x4000), peer(q)])),
        Some(400)
    );
    assert_eq!(
        error_code(&h.authed(c, METHOD_CHANNEL_BIND, vec![channel(0x4001), peer(p)])),
        Some(400)
    );
    // Same pair: a refresh.
    assert!(is_success(&h.authed(
        c,
        METHOD_CHANNEL_BIND,
        vec![channel(0x4000), peer(p)]
    )));
}

#[test]
fn channels_expire_at_600s_and_cool_down_for_300s() {
    let mut h = H::new(base_config());
    let c = client(1);
    let (_, id) = h.allocate(c);
    h.authed(c, METHOD_REFRESH, vec![lifetime_attr(3600)]);
    let p = sa(PEER);
    let q = sa("1.2.3.4:7001");
    h.authed(c, METHOD_CHANNEL_BIND, vec![channel(0x4000), peer(p)]);
    h.advance(299);
    // Keep the permission alive without touching the channel.
    h.authed(c, METHOD_CREATE_PERMISSION, vec![peer(p)]);
    h.advance(299);
    h.authed(c, METHOD_CREATE_PERMISSION, vec![peer(p)]);
    h.advance(1); // 599 s
    assert_eq!(h.send(c, &channel_data(0x4000, b"x", false)).to_peer.len(), 1);
    assert_eq!(
        h.peer_sends(id, p, b"y").to_client,
        vec![channel_data(0x4000, b"y", false)]
    );
    h.advance(1); // 600 s: the binding has expired
    assert!(h.send(c, &channel_data(0x4000, b"x", false)).to_peer.is_empty());
    let out = h.peer_sends(id, p, b"y");
    assert!(
        data_indication(&decode(&out.to_client[0])).is_some(),
        "permission still there: Data indication"
    );
    // During the cool-down the number and the peer stay reserved.
    h.advance(100);
    assert_eq!(
        error_code(&h.authed(c, METHOD_CHANNEL_BIND, vec![channel(0x4000), peer(q)])),
        Some(400)
    );
    assert_eq!(
        error_code(&h.authed(c, METHOD_CHANNEL_BIND, vec![channel(0x4002), peer(p)])),
        Some(400)
    );
    h.advance(200); // 900 s
    assert!(is_success(&h.authed(
        c,
        METHOD_CHANNEL_BIND,
        vec![channel(0x4000), peer(q)]
    )));
    // Rebinding the same pair right after expiry revives it.
    h.authed(c, METHOD_CHANNEL_BIND, vec![channel(0x4003), peer(p)]);
    assert_eq!(h.send(c, &channel_data(0x4003, b"z", false)).to_peer.len(), 1);
}

#[test]
fn channel_data_stops_when_the_permission_lapses() {
    let mut h = H::new(base_config());
    let c = client(1);
    let (_, id) = h.allocate(c);
    let p = sa(PEER);
    h.authed(c, METHOD_CHANNEL_BIND, vec![channel(0x4000), peer(p)]);
    h.advance(300);
    assert!(h.send(c, &channel_data(0x4000, b"x", false)).to_peer.is_empty());
    assert!(h.peer_sends(id, p, b"y").to_client.is_empty());
    h.authed(c, METHOD_CREATE_PERMISSION, vec![peer(p)]);
    assert_eq!(h.send(c, &channel_data(0x4000, b"x", false)).to_peer.len(), 1);
    assert_eq!(h.peer_sends(id, p, b"y").to_client.len(), 1);
}

#[test]
fn events_tell_a_driver_what_routes_and_until_when() {
    let mut h = H::new(base_config());
    let c = client(1);
    let t0 = h.now.mono;
    let (relayed, id) = h.allocate(c);
    assert!(
        matches!(h.events[..], [Event::AllocationCreated { client, relay, relayed: r }]
            if client == c && relay == id && r == relayed),
        "{:?}",
        h.events
    );
    h.events.clear();
    h.authed(c, METHOD_REFRESH, vec![lifetime_attr(3600)]);
    let p = sa(PEER);
    h.authed(c, METHOD_CHANNEL_BIND, vec![channel(0x4000), peer(p)]);
    // Bound until the permission's 300 s (earlier than the channel's 600 s).
    let bound = |h: &H| -> Vec<Duration> {
        h.events
            .iter()
            .filter_map(|e| match *e {
                Event::ChannelBound {
                    relay,
                    channel: 0x4000,
                    peer,
                    until,
                    ..
                } if relay == id && peer == p => Some(until - t0),
                _ => None,
            })
            .collect()
    };
    assert_eq!(bound(&h), [Duration::from_secs(300)], "{:?}", h.events);
    h.events.clear();
    h.advance(200);
    h.authed(c, METHOD_CREATE_PERMISSION, vec![peer(p)]);
    // The permission now lasts to 500 s, still before the channel's 600 s.
    assert_eq!(bound(&h), [Duration::from_secs(500)], "{:?}", h.events);
    h.events.clear();
    h.advance(200);
    h.authed(c, METHOD_CREATE_PERMISSION, vec![peer(p)]);
    assert_eq!(bound(&h), [Duration::from_secs(600)], "the channel's own expiry");
    h.events.clear();
    h.advance(199);
    assert!(h.events.is_empty(), "nothing ends early: {:?}", h.events);
    h.advance(1);
    assert!(
        matches!(h.events[..], [Event::ChannelEnded { relay, channel: 0x4000, peer }] if relay == id && peer == p),
        "{:?}",
        h.events
    );
    h.events.clear();
    // A second channel, then the allocation deleted: both end.
    h.authed(c, METHOD_CHANNEL_BIND, vec![channel(0x4001), peer(sa("1.2.3.4:7001"))]);
    h.events.clear();
    h.authed(c, METHOD_REFRESH, vec![lifetime_attr(0)]);
    assert!(
        matches!(h.events[..], [Event::ChannelEnded { channel: 0x4001, .. }, Event::AllocationDeleted { client, relay, .. }]
            if client == c && relay == id),
        "{:?}",
        h.events
    );
}

// ---------------------------------------------------------------- Robustness

#[test]
fn random_and_mutated_input_never_panics_or_leaks() {
    use rand::{Rng, SeedableRng};
    let mut h = H::new(base_config());
    let c = client(1);
    let (_, id) = h.allocate(c);
    let p = sa(PEER);
    h.authed(c, METHOD_CHANNEL_BIND, vec![channel(0x4000), peer(p)]);
    let cred = h.rest(c, "carol");
    let seeds: Vec<Vec<u8>> = vec![
        build(req(METHOD_ALLOCATE), vec![transport_udp()], Some(&cred), true).raw,
        build(
            req(METHOD_CHANNEL_BIND),
            vec![channel(0x4001), peer(p)],
            Some(&cred),
            false,
        )
        .raw,
        build(
            req(METHOD_CREATE_PERMISSION),
            vec![peer(p), peer(sa("1.1.1.1:1"))],
            Some(&cred),
            true,
        )
        .raw,
        build(req(METHOD_REFRESH), vec![lifetime_attr(600)], Some(&cred), false).raw,
        build(
            MessageType::new(METHOD_SEND, CLASS_INDICATION),
            vec![peer(p), data(b"z")],
            None,
            false,
        )
        .raw,
        build(req(METHOD_BINDING), vec![], None, true).raw,
        channel_data(0x4000, b"payload", true),
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    for i in 0..60_000 {
        let mut m = seeds[i % seeds.len()].clone();
        match rng.random_range(0..5) {
            0 => {
                let k = rng.random_range(0..m.len());
                m[k] = rng.random();
            }
            1 => m.truncate(rng.random_range(0..m.len())),
            2 => {
                let extra = rng.random_range(1..40);
                m.extend((0..extra).map(|_| rng.random::<u8>()));
            }
            3 => m = (0..rng.random_range(0..200)).map(|_| rng.random()).collect(),
            _ => {
                for _ in 0..rng.random_range(1..6) {
                    let k = rng.random_range(0..m.len());
                    m[k] ^= 1 << rng.random_range(0..8);
                }
            }
        }
        let from = if i % 3 == 0 { client(1000 + (i % 50) as u16) } else { c };
        let _ = h.send(from, &m);
        if i % 7 == 0 {
            let _ = h.peer_sends(id, p, &m);
        }
    }
    // The real client still works.
    assert_eq!(h.send(c, &channel_data(0x4000, b"still", false)).to_peer.len(), 1);
    // Everything created expires and gives back its ports and quota.
    h.advance(3601);
    assert_eq!(h.core.allocation_count(), 0);
    assert_eq!(h.ports_in_use(), 0);
    assert_eq!(h.shared.lock().total, 0);
    assert!(h.open.is_empty());
}

// ---------------------------------------------------------------- Draining

#[test]
fn draining_refuses_new_allocations_and_keeps_existing_ones() {
    let mut h = H::new(base_config());
    let (a, b) = (client(5100), client(5101));
    h.allocate(a);
    h.shared.start_draining();
    let r = h.authed(b, METHOD_ALLOCATE, vec![transport_udp()]);
    assert_eq!(error_code(&r), Some(508));
    let mut e = stun::error_code::ErrorCodeAttribute::default();
    e.get_from(&r).expect("error code");
    assert_eq!(e.reason, b"Server Shutting Down");
    assert!(r.contains(ATTR_MESSAGE_INTEGRITY), "authenticated answer");
    // The existing allocation goes on: refresh, permission.
    let r = h.authed(a, METHOD_REFRESH, vec![lifetime_attr(600)]);
    assert!(is_success(&r));
    let r = h.authed(a, METHOD_CREATE_PERMISSION, vec![peer(sa(PEER))]);
    assert!(is_success(&r));
    assert_eq!(h.shared.lock().total, 1);
}

#[test]
fn draining_with_an_alternate_server_answers_300() {
    let mut cfg = base_config();
    cfg.alternate_server = Some(sa("203.0.113.9:3478"));
    let mut h = H::new(cfg);
    h.shared.start_draining();
    let c = client(5102);
    // Unauthenticated: the usual 401 first, never a redirect.
    let r = h.ask(c, &build(req(METHOD_ALLOCATE), vec![transport_udp()], None, false));
    assert_eq!(error_code(&r), Some(401));
    let r = h.authed(c, METHOD_ALLOCATE, vec![transport_udp()]);
    assert_eq!(error_code(&r), Some(300));
    let mut alt = stun::addr::MappedAddress::default();
    alt.get_from_as(&r, ATTR_ALTERNATE_SERVER).expect("ALTERNATE-SERVER");
    assert_eq!(SocketAddr::new(alt.ip, alt.port), sa("203.0.113.9:3478"));
    assert_eq!(h.shared.lock().total, 0);
}

// ---------------------------------------------------------------- Reload

#[test]
fn a_reloaded_peer_policy_applies_to_existing_permissions_and_channels() {
    let mut h = H::new(base_config());
    let c = client(5200);
    let (_, relay) = h.allocate(c);
    let r = h.authed(c, METHOD_CHANNEL_BIND, vec![channel(0x4000), peer(sa(PEER))]);
    assert!(is_success(&r));
    assert_eq!(h.send(c, &channel_data(0x4000, b"x", false)).to_peer.len(), 1);
    // The operator denies the peer's range and reloads.
    let mut cfg = base_config();
    cfg.policy = PeerPolicy::new(vec![], vec!["1.2.3.0/24".parse().expect("net")]);
    h.core.set_config(Arc::new(cfg));
    assert!(
        h.send(c, &channel_data(0x4000, b"x", false)).to_peer.is_empty(),
        "client data still relayed"
    );
    assert!(
        h.peer_sends(relay, sa(PEER), b"y").to_client.is_empty(),
        "peer data still relayed"
    );
    let r = h.authed(c, METHOD_CREATE_PERMISSION, vec![peer(sa(PEER))]);
    assert_eq!(error_code(&r), Some(403));
    // Other peers are unaffected.
    let r = h.authed(c, METHOD_CREATE_PERMISSION, vec![peer(sa("5.6.7.8:9"))]);
    assert!(is_success(&r));
}

// ---------------------------------------------------------------- Abuse

#[test]
fn challenges_are_rate_limited_per_source_address() {
    let mut cfg = base_config();
    cfg.challenges_per_second = 10;
    let mut h = H::new(cfg);
    let unsigned = || build(req(METHOD_ALLOCATE), vec![transport_udp()], None, false);
    // A burst of twice the rate from one address (any port), then silence.
    let answered = (0..30)
        .filter(|i| !h.send(client(6000 + i), &unsigned().raw).replies.is_empty())
        .count();
    assert_eq!(answered, 20);
    assert_eq!(h.core.stats.challenges_limited, 10);
    // Another address is not affected.
    let other = ClientAddr::udp(sa("198.51.100.99:6000"), sa(LOCAL));
    assert_eq!(h.send(other, &unsigned().raw).replies.len(), 1);
    // Tokens come back at the rate.
    h.advance_ms(500);
    let answered = (0..10)
        .filter(|i| !h.send(client(6100 + i), &unsigned().raw).replies.is_empty())
        .count();
    assert_eq!(answered, 5);
}

#[test]
fn requests_without_an_allocation_get_a_small_unsigned_437() {
    let mut h = H::new(base_config());
    let c = client(6200);
    for m in [
        build(req(METHOD_REFRESH), vec![], None, false),
        build(req(METHOD_CREATE_PERMISSION), vec![peer(sa(PEER))], None, false),
        build(
            req(METHOD_CHANNEL_BIND),
            vec![channel(0x4000), peer(sa(PEER))],
            None,
            false,
        ),
    ] {
        let out = h.send(c, &m.raw);
        assert_eq!(out.replies.len(), 1);
        let r = decode(&out.replies[0]);
        assert_eq!(error_code(&r), Some(437));
        assert!(!r.contains(ATTR_NONCE) && !r.contains(ATTR_MESSAGE_INTEGRITY));
        assert!(
            out.replies[0].len() <= 2 * m.raw.len(),
            "{} bytes for {}",
            out.replies[0].len(),
            m.raw.len()
        );
    }
}

#[test]
fn max_bps_limits_each_direction_of_an_allocation() {
    let mut cfg = base_config();
    cfg.max_bps = 1000;
    let mut h = H::new(cfg);
    let c = client(6300);
    let (_, relay) = h.allocate(c);
    let r = h.authed(c, METHOD_CHANNEL_BIND, vec![channel(0x4000), peer(sa(PEER))]);
    assert!(is_success(&r));
    // A second's worth passes, then packets are dropped and counted.
    let sent = (0..5)
        .filter(|_| !h.send(c, &channel_data(0x4000, &[1; 400], false)).to_peer.is_empty())
        .count();
    assert_eq!(sent, 2);
    // The other direction has its own budget.
    let back = (0..5)
        .filter(|_| !h.peer_sends(relay, sa(PEER), &[2; 400]).to_client.is_empty())
        .count();
    assert_eq!(back, 2);
    assert_eq!(h.core.stats.over_bandwidth, 6);
    // Half a second later, 500 more bytes may pass.
    h.advance_ms(500);
    let sent = (0..5)
        .filter(|_| !h.send(c, &channel_data(0x4000, &[1; 400], false)).to_peer.is_empty())
        .count();
    assert_eq!(sent, 1);
}

/// One user's allocations on two workers share one budget per direction;
/// another user has its own.
#[test]
fn max_bps_per_user_is_shared_across_workers() {
    let mut cfg = base_config();
    cfg.max_bps_per_user = 1000;
    let mut a = H::new(cfg.clone());
    let mut b = a.beside(cfg);
    let (ca, cb) = (client(6400), client(6401));
    let (_, relay_b) = b.allocate(cb);
    a.allocate(ca);
    for (h, c) in [(&mut a, ca), (&mut b, cb)] {
        assert!(is_success(&h.authed(
            c,
            METHOD_CHANNEL_BIND,
            vec![channel(0x4000), peer(sa(PEER))]
        )));
    }
    let sent = |h: &mut H, c| {
        (0..3)
            .filter(|_| !h.send(c, &channel_data(0x4000, &[1; 400], false)).to_peer.is_empty())
            .count()
    };
    assert_eq!(sent(&mut a, ca), 2, "a second's worth on the first worker");
    assert_eq!(sent(&mut b, cb), 0, "the same user on the second worker: spent");
    // The other direction has its own budget.
    let back = (0..3)
        .filter(|_| !b.peer_sends(relay_b, sa(PEER), &[2; 400]).to_client.is_empty())
        .count();
    assert_eq!(back, 2);
    assert_eq!(a.core.stats.over_bandwidth + b.core.stats.over_bandwidth, 5);
    // Another user on the second worker is not held back.
    let cc = client(6402);
    let cred = b.cred(cc, "alice", "wonderland");
    assert!(is_success(&b.allocate_with(cc, &cred)));
    let r = b.ask(
        cc,
        &build(
            req(METHOD_CHANNEL_BIND),
            vec![channel(0x4001), peer(sa(PEER))],
            Some(&cred),
            false,
        ),
    );
    assert!(is_success(&r));
    let passed = (0..2)
        .filter(|_| !b.send(cc, &channel_data(0x4001, &[1; 400], false)).to_peer.is_empty())
        .count();
    assert_eq!(passed, 2);
    // A second later the first user may send again, from either worker.
    a.advance_ms(1000);
    b.advance_ms(1000);
    assert_eq!(sent(&mut b, cb), 2);
}

// ---------------------------------------------------------------- dual stack

const V6_RELAY: &str = "2001:db8::10";
const V6_PEER: &str = "[2606:4700::1]:8000";

fn dual_config() -> CoreConfig {
    let mut cfg = base_config();
    cfg.relay_ipv6 = Some(V6_RELAY.parse().expect("ip"));
    cfg
}

/// ADDITIONAL-ADDRESS-FAMILY asking for IPv6 (RFC 8656 §18.12).
fn additional_v6() -> Box<dyn Setter> {
    raw(0x8000, &[0x02, 0, 0, 0])
}

/// Every XOR-RELAYED-ADDRESS of an answer, in order.
fn all_relayed(m: &Message) -> Vec<SocketAddr> {
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&m.transaction_id.0);
    m.attributes
        .0
        .iter()
        .filter(|a| a.typ == ATTR_XOR_RELAYED_ADDRESS)
        .filter_map(|a| turnd::proto::wire::xor_address(&a.value, &txid))
        .collect()
}

/// ADDRESS-ERROR-CODE: (family, code).
fn address_error(m: &Message) -> Option<(u8, u16)> {
    let a = m.attributes.0.iter().find(|a| a.typ.value() == 0x8001)?;
    Some((a.value[0], u16::from(a.value[2] & 7) * 100 + u16::from(a.value[3])))
}

#[test]
fn dual_stack_allocation_relays_both_families() {
    let mut h = H::new(dual_config());
    let c = client(1);
    let r = h.authed(c, METHOD_ALLOCATE, vec![transport_udp(), additional_v6()]);
    assert!(is_success(&r), "dual allocate: {:?}", error_code(&r));
    let relayed = all_relayed(&r);
    assert_eq!(relayed.len(), 2, "an IPv4 and an IPv6 relayed address: {relayed:?}");
    assert!(relayed[0].is_ipv4() && relayed[1].ip() == V6_RELAY.parse::<IpAddr>().expect("ip"));
    assert_eq!(address_error(&r), None);
    assert_eq!(h.ports_in_use(), 2, "two relay ports");
    assert_eq!(h.open.len(), 2, "two sockets");
    let second = *h.open.iter().find(|(_, a)| a.is_ipv6()).expect("the IPv6 socket").0;
    let first = *h.open.iter().find(|(_, a)| a.is_ipv4()).expect("the IPv4 socket").0;
    assert!(second.is_second() && second.first() == first);

    // Permissions for both families; data each way through the socket of
    // the peer's family.
    let (p4, p6) = (sa(PEER), sa(V6_PEER));
    assert!(is_success(&h.authed(
        c,
        METHOD_CREATE_PERMISSION,
        vec![peer(p4), peer(p6)]
    )));
    let out = h.send(c, &send_ind(p6, b"to six"));
    assert_eq!(out.to_peer, vec![(second, p6, b"to six".to_vec())]);
    let out = h.send(c, &send_ind(p4, b"to four"));
    assert_eq!(out.to_peer, vec![(first, p4, b"to four".to_vec())]);
    let back = h.peer_sends(second, p6, b"from six");
    assert_eq!(back.to_client.len(), 1, "a Data indication from the IPv6 peer");
    assert_eq!(
        data_indication(&decode(&back.to_client[0])),
        Some((p6, b"from six".to_vec()))
    );
    // A channel to the IPv6 peer: ChannelData out of the IPv6 socket.
    assert!(is_success(&h.authed(
        c,
        METHOD_CHANNEL_BIND,
        vec![channel(0x4001), peer(p6)]
    )));
    let out = h.send(c, &channel_data(0x4001, b"cd", false));
    assert_eq!(out.to_peer, vec![(second, p6, b"cd".to_vec())]);
    let back = h.peer_sends(second, p6, b"cd back");
    assert_eq!(back.to_client, vec![channel_data(0x4001, b"cd back", false)]);

    // A Refresh naming either family refreshes the allocation; lifetime 0
    // deletes both relays.
    let six = raw(0x0017, &[0x02, 0, 0, 0]);
    assert!(is_success(&h.authed(c, METHOD_REFRESH, vec![six, lifetime_attr(600)])));
    assert!(is_success(&h.authed(c, METHOD_REFRESH, vec![lifetime_attr(0)])));
    assert!(h.open.is_empty(), "both sockets closed: {:?}", h.open);
    assert_eq!(h.ports_in_use(), 0, "both ports back");
}

#[test]
fn dual_stack_counts_as_one_allocation() {
    let mut h = H::new(dual_config());
    for i in 1..=3 {
        let r = h.authed(client(i), METHOD_ALLOCATE, vec![transport_udp(), additional_v6()]);
        assert_eq!(all_relayed(&r).len(), 2, "allocation {i}");
    }
    // max-allocations-per-user is 3: the fourth is over quota whatever its
    // families.
    let r = h.authed(client(4), METHOD_ALLOCATE, vec![transport_udp(), additional_v6()]);
    assert_eq!(error_code(&r), Some(486));
    assert_eq!(h.ports_in_use(), 6);
}

#[test]
fn dual_stack_errors() {
    let mut h = H::new(dual_config());
    // With REQUESTED-ADDRESS-FAMILY, or asking for IPv4 as the additional
    // family: 400.
    let four = raw(0x0017, &[0x01, 0, 0, 0]);
    for (i, extra) in [four, raw(0x8000, &[0x01, 0, 0, 0])].into_iter().enumerate() {
        let mut attrs = vec![transport_udp(), extra];
        if i != 1 {
            attrs.push(additional_v6());
        }
        let r = h.authed(client(10 + i as u16), METHOD_ALLOCATE, attrs);
        assert_eq!(error_code(&r), Some(400), "case {i}");
    }
    assert_eq!(h.ports_in_use(), 0);
    // With EVEN-PORT (as coturn's client sends it) and with the draft's
    // codepoint (0x8032, coturn 4.6): the IPv4 relay's port is even.
    let r = h.authed(
        client(20),
        METHOD_ALLOCATE,
        vec![transport_udp(), raw(0x0018, &[0x00]), additional_v6()],
    );
    let relayed = all_relayed(&r);
    assert_eq!(relayed.len(), 2);
    assert_eq!(relayed[0].port() % 2, 0);
    let r = h.authed(
        client(21),
        METHOD_ALLOCATE,
        vec![transport_udp(), raw(0x8032, &[0x02, 0, 0, 0])],
    );
    assert_eq!(all_relayed(&r).len(), 2);
    // No IPv6 relay address on this host: the IPv4 relay alone, and
    // ADDRESS-ERROR-CODE 440 for IPv6.
    let mut h = H::new(base_config());
    let r = h.authed(client(1), METHOD_ALLOCATE, vec![transport_udp(), additional_v6()]);
    assert!(is_success(&r));
    assert_eq!(all_relayed(&r).len(), 1);
    assert_eq!(address_error(&r), Some((0x02, 440)));
    // A peer of the family it has no relay for: 443.
    let r = h.authed(client(1), METHOD_CREATE_PERMISSION, vec![peer(sa(V6_PEER))]);
    assert_eq!(error_code(&r), Some(443));
}

#[test]
fn dual_stack_ipv6_socket_failing_leaves_ipv4_with_508() {
    let mut h = H::new(dual_config());
    // The IPv4 socket opens, the IPv6 one does not.
    h.open_results.push_back(Ok(()));
    h.open_results.push_back(Err(OpenError::Failed));
    let r = h.authed(client(1), METHOD_ALLOCATE, vec![transport_udp(), additional_v6()]);
    assert!(is_success(&r));
    assert_eq!(all_relayed(&r).len(), 1);
    assert_eq!(address_error(&r), Some((0x02, 508)));
    assert_eq!(h.ports_in_use(), 1, "the IPv6 port is back");
    // The IPv4 socket failing for good: 508, and the IPv6 socket that did
    // open is closed again.
    h.open_results.push_back(Err(OpenError::Failed));
    h.open_results.push_back(Ok(()));
    let r = h.authed(client(2), METHOD_ALLOCATE, vec![transport_udp(), additional_v6()]);
    assert_eq!(error_code(&r), Some(508));
    assert_eq!(h.open.len(), 1, "only the first allocation's socket: {:?}", h.open);
    assert_eq!(h.ports_in_use(), 1);
}

/// An IPv4-mapped IPv6 peer (`::ffff:1.2.3.4`) is an IPv4 peer in IPv6
/// spelling: 443 for CreatePermission and ChannelBind on a dual-stack
/// allocation as on an IPv6 one (it used to be judged, and permitted, as
/// its IPv4 address, and a channel to it bound on the IPv6 relay); the
/// IPv4 spelling is permitted.
#[test]
fn ipv4_mapped_peers_are_a_family_mismatch() {
    let mut h = H::new(dual_config());
    let c = client(1);
    let r = h.authed(c, METHOD_ALLOCATE, vec![transport_udp(), additional_v6()]);
    assert_eq!(all_relayed(&r).len(), 2);
    let mapped = sa("[::ffff:1.2.3.4]:1000");
    let r = h.authed(c, METHOD_CREATE_PERMISSION, vec![peer(mapped)]);
    assert_eq!(error_code(&r), Some(443));
    let r = h.authed(c, METHOD_CHANNEL_BIND, vec![channel(0x4000), peer(mapped)]);
    assert_eq!(error_code(&r), Some(443));
    let r = h.authed(c, METHOD_CHANNEL_BIND, vec![channel(0x4000), peer(sa("1.2.3.4:1000"))]);
    assert!(is_success(&r), "{r}");
}
