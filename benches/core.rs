//! Micro-benchmarks of the sans-IO core's routing, no sockets: ChannelData
//! client→peer and peer→client (the hot path), a Send indication, a Binding
//! request. `cargo bench --bench core`.

#[path = "../tests/common/stunc.rs"]
mod stunc;

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use stun::attributes::*;
use stun::message::*;
use stunc::*;
use turnd::auth::{self, Credentials};
use turnd::net::sim::Sim;
use turnd::proto::{ClientAddr, Command, CoreConfig, RelayId, Transmit};

const REALM: &str = "bench";
const SECRET: &[u8] = b"north";

/// A core with one allocation, a permission and channel 0x4000 to `peer`.
struct Bound {
    sim: Sim,
    client: ClientAddr,
    relay: RelayId,
    peer: SocketAddr,
}

fn setup() -> Bound {
    let mut cfg = CoreConfig::new({
        let mut c = Credentials::new(REALM);
        c.secrets = vec![turnd::secret::Secret::from(std::str::from_utf8(SECRET).expect("utf8"))];
        c
    });
    cfg.policy = turnd::proto::policy::PeerPolicy::new(vec!["127.0.0.0/8".parse().expect("net")], vec![]);
    let mut sim = Sim::new(cfg, 50000, 50099);
    let client = ClientAddr::udp(
        "127.0.0.2:40000".parse().expect("addr"),
        "127.0.0.1:3478".parse().expect("addr"),
    );
    let peer: SocketAddr = "127.0.0.3:9".parse().expect("addr");
    let ask = |sim: &mut Sim, m: &Message| decode(&sim.client_sends(client, &m.raw).replies[0].1);
    let r = ask(
        &mut sim,
        &build(req(METHOD_ALLOCATE), vec![transport_udp()], None, false),
    );
    let nonce = text(&r, ATTR_NONCE).expect("401 nonce");
    let (user, pass) = auth::rest_credentials(SECRET, Some("bench"), Duration::from_secs(3600), sim.now.unix, ':');
    let cred = Cred {
        user,
        realm: REALM.into(),
        pass,
        nonce,
    };
    let r = ask(
        &mut sim,
        &build(req(METHOD_ALLOCATE), vec![transport_udp()], Some(&cred), false),
    );
    assert!(is_success(&r), "allocate: {:?}", error_code(&r));
    let relay = *sim.open.keys().next().expect("relay opened");
    let r = ask(
        &mut sim,
        &build(
            req(METHOD_CHANNEL_BIND),
            vec![channel(0x4000), stunc::peer(peer)],
            Some(&cred),
            false,
        ),
    );
    assert!(is_success(&r), "channel bind: {:?}", error_code(&r));
    Bound {
        sim,
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
            let t = b.sim.core.handle_client_input(b.client, black_box(&cd), b.sim.now);
            assert!(matches!(t, Some(Transmit::ToPeer { .. })));
        })
    });

    let mut buf = vec![0u8; 4 + payload.len()];
    g.bench_function("peer->client channeldata 172B", |bench| {
        bench.iter(|| {
            buf[4..].copy_from_slice(&payload);
            let t = b
                .sim
                .core
                .handle_peer_input(b.relay, b.peer, black_box(&mut buf), b.sim.now);
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
            let t = b.sim.core.handle_client_input(b.client, black_box(&ind.raw), b.sim.now);
            assert!(matches!(t, Some(Transmit::ToPeer { .. })));
        })
    });

    let binding = build(req(METHOD_BINDING), vec![], None, true);
    g.bench_function("binding request", |bench| {
        bench.iter(|| {
            let t = b
                .sim
                .core
                .handle_client_input(b.client, black_box(&binding.raw), b.sim.now);
            let reply = b.sim.core.poll_command();
            assert!(t.is_none() && matches!(reply, Some(Command::SendToClient { .. })));
        })
    });
    g.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
