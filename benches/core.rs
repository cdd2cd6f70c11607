//! Micro-benchmarks of the sans-IO core's routing, no sockets: ChannelData
//! client→peer and peer→client (the hot path), a Send indication, a Binding
//! request. `cargo bench --bench core`.

#[path = "../tests/common/stunc.rs"]
mod stunc;

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use stun::attributes::*;
use stun::message::*;
use stunc::*;
use turnd::auth::{self, Credentials};
use turnd::proto::{ClientAddr, Command, CoreConfig, Now, RelayId, Server, Shared, Transmit};

const REALM: &str = "bench";
const SECRET: &[u8] = b"north";

/// A core with one allocation, a permission and channel 0x4000 to `peer`.
struct Bound {
    s: Server,
    now: Now,
    client: ClientAddr,
    relay: RelayId,
    peer: SocketAddr,
}

fn replies(s: &mut Server, now: Now, relay_addr: SocketAddr) -> (Vec<Vec<u8>>, Option<RelayId>) {
    let mut out = Vec::new();
    let mut opened = None;
    while let Some(c) = s.poll_command() {
        match c {
            Command::SendToClient { data, .. } => out.push(data),
            Command::OpenRelay { relay, .. } => {
                s.handle_relay_opened(relay, Ok(relay_addr), now);
                opened = Some(relay);
            }
            Command::CloseRelay { .. } | Command::ReleaseHeld { .. } => {}
        }
    }
    (out, opened)
}

fn setup() -> Bound {
    let mut cfg = CoreConfig::new({
        let mut c = Credentials::new(REALM);
        c.secrets = vec![turnd::secret::Secret::from(std::str::from_utf8(SECRET).expect("utf8"))];
        c
    });
    cfg.policy = turnd::proto::policy::PeerPolicy::new(vec!["127.0.0.0/8".parse().expect("net")], vec![]);
    let mut s = Server::new(Arc::new(cfg), Arc::new(Shared::new(50000, 50099)), 1, [7; 32]);
    let now = Now {
        mono: Instant::now(),
        unix: 1_800_000_000,
    };
    let client = ClientAddr::udp(
        "127.0.0.2:40000".parse().expect("addr"),
        "127.0.0.1:3478".parse().expect("addr"),
    );
    let relay_addr: SocketAddr = "127.0.0.1:50000".parse().expect("addr");
    let peer: SocketAddr = "127.0.0.3:9".parse().expect("addr");
    let ask = |s: &mut Server, m: &Message| {
        assert!(s.handle_client_input(client, &m.raw, now).is_none());
        let (r, opened) = replies(s, now, relay_addr);
        (decode(&r[0]), opened)
    };
    let (r, _) = ask(&mut s, &build(req(METHOD_ALLOCATE), vec![transport_udp()], None, false));
    let nonce = text(&r, ATTR_NONCE).expect("401 nonce");
    let (user, pass) = auth::rest_credentials(SECRET, Some("bench"), Duration::from_secs(3600), now.unix, ':');
    let cred = Cred {
        user,
        realm: REALM.into(),
        pass,
        nonce,
    };
    let (r, opened) = ask(
        &mut s,
        &build(req(METHOD_ALLOCATE), vec![transport_udp()], Some(&cred), false),
    );
    assert!(is_success(&r), "allocate: {:?}", error_code(&r));
    let relay = opened.expect("relay opened");
    let (r, _) = ask(
        &mut s,
        &build(
            req(METHOD_CHANNEL_BIND),
            vec![channel(0x4000), stunc::peer(peer)],
            Some(&cred),
            false,
        ),
    );
    assert!(is_success(&r), "channel bind: {:?}", error_code(&r));
    Bound {
        s,
        now,
        client,
        relay,
        peer,
    }
}

fn routing(c: &mut Criterion) {
    let payload = vec![0x5au8; 172];
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(1));

    let mut b = setup();
    let cd = channel_data(0x4000, &payload, false);
    g.bench_function("channeldata client->peer 172B", |bench| {
        bench.iter(|| {
            let t = b.s.handle_client_input(b.client, black_box(&cd), b.now);
            assert!(matches!(t, Some(Transmit::ToPeer { .. })));
        })
    });

    let mut buf = vec![0u8; 4 + payload.len()];
    g.bench_function("peer->client channeldata 172B", |bench| {
        bench.iter(|| {
            buf[4..].copy_from_slice(&payload);
            let t = b.s.handle_peer_input(b.relay, b.peer, black_box(&mut buf), b.now);
            assert!(matches!(t, Some(Transmit::ToClient { .. })));
        })
    });

    let ind = build(
        MessageType::new(METHOD_SEND, CLASS_INDICATION),
        vec![stunc::peer(b.peer), data(&payload)],
        None,
        false,
    );
    g.bench_function("send indication client->peer 172B", |bench| {
        bench.iter(|| {
            let t = b.s.handle_client_input(b.client, black_box(&ind.raw), b.now);
            assert!(matches!(t, Some(Transmit::ToPeer { .. })));
        })
    });

    let binding = build(req(METHOD_BINDING), vec![], None, true);
    g.bench_function("binding request", |bench| {
        bench.iter(|| {
            let t = b.s.handle_client_input(b.client, black_box(&binding.raw), b.now);
            let reply = b.s.poll_command();
            assert!(t.is_none() && matches!(reply, Some(Command::SendToClient { .. })));
        })
    });
    g.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
