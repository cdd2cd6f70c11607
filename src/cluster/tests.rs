use std::time::{Duration, Instant};

use super::*;

fn status(id: &str, allocations: u32) -> Status {
    Status {
        id: id.into(),
        name: format!("node-{id}"),
        draining: false,
        allocations,
        max_allocations: 1000,
        bps: 0,
        stun: vec![format!("stun:{id}.example:3478")],
        turn: vec![format!("turn:{id}.example:3478?transport=udp")],
        alternate: AlternateAddrs {
            udp: vec![format!("192.0.2.{}:3478", id.len()).parse().expect("addr")],
            tcp: Vec::new(),
            tls: vec!["[2001:db8::1]:443".parse().expect("addr")],
        },
    }
}

fn roster(now: Instant) -> Roster {
    let mut r = Roster::new(status("a", 0), Duration::from_secs(1), Duration::from_secs(1), now);
    r.record("http://b", 0, Ok(status("bb", 0)), now);
    r.record("http://c", 1, Ok(status("ccc", 0)), now);
    r
}

fn name(p: &Pick) -> &str {
    match p {
        Pick::Me => "me",
        Pick::Sibling { name, .. } => name,
    }
}

#[test]
fn handouts_spread_evenly_and_count_until_they_age() {
    let t0 = Instant::now();
    let mut r = roster(t0);
    let mut counts = HashMap::new();
    for _ in 0..60 {
        *counts.entry(name(&r.choose(None, t0)).to_string()).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&n| n == 20), "{counts:?}");
    // Older than the window: ties again, this node first.
    assert_eq!(r.choose(None, t0 + Duration::from_secs(RECENT_SECS + 1)), Pick::Me);
}

#[test]
fn least_loaded_wins_relative_to_capacity() {
    let t0 = Instant::now();
    let mut r = roster(t0);
    r.set_me(status("a", 5));
    r.record("http://b", 0, Ok(status("bb", 3)), t0);
    let mut c = status("ccc", 20);
    c.max_allocations = 10_000; // 0.2 % full, the others 0.3-0.5 %
    r.record("http://c", 1, Ok(c), t0);
    assert_eq!(name(&r.choose(None, t0)), "node-ccc");
}

#[test]
fn draining_failed_stale_and_self_are_left_out() {
    let t0 = Instant::now();
    let mut r = roster(t0);
    let mut b = status("bb", 0);
    b.draining = true;
    r.record("http://b", 0, Ok(b), t0);
    r.record("http://c", 1, Err("connection refused".into()), t0);
    // A name resolving to every node includes this one.
    r.record("http://a", 2, Ok(status("a", 0)), t0);
    for _ in 0..5 {
        assert_eq!(r.choose(None, t0), Pick::Me);
    }
    assert_eq!(
        r.health(t0),
        Health {
            healthy: 0,
            draining: 1,
            unreachable: 1
        }
    );
    // c answers again, then goes quiet past the staleness bound.
    r.record("http://c", 1, Ok(status("ccc", 0)), t0);
    assert_eq!(name(&r.choose(None, t0)), "node-ccc");
    let later = t0 + Duration::from_secs(5);
    r.set_me(status("a", 0));
    for _ in 0..3 {
        assert_eq!(r.choose(None, later), Pick::Me);
    }
}

#[test]
fn a_draining_node_sends_clients_to_siblings_and_serves_alone_when_none_is_left() {
    let t0 = Instant::now();
    let mut r = roster(t0);
    let mut me = status("a", 0);
    me.draining = true;
    r.set_me(me);
    for _ in 0..10 {
        assert_ne!(r.choose(None, t0), Pick::Me);
    }
    r.record("http://b", 0, Err("timed out".into()), t0);
    r.record("http://c", 1, Err("timed out".into()), t0);
    assert_eq!(r.choose(None, t0), Pick::Me, "no sibling left: serve alone");
}

#[test]
fn a_room_stays_on_its_node_while_it_is_usable() {
    let t0 = Instant::now();
    let mut r = roster(t0);
    let first = r.choose(Some("r1"), t0);
    assert_eq!(first, Pick::Me);
    for _ in 0..5 {
        assert_eq!(r.choose(Some("r1"), t0), Pick::Me);
    }
    // Another room goes elsewhere: this node carries six handouts.
    assert_eq!(name(&r.choose(Some("r2"), t0)), "node-bb");
    assert_eq!(name(&r.choose(Some("r2"), t0)), "node-bb");
    // r2's node is killed: r2 moves to the least-loaded live node.
    r.record("http://b", 0, Err("connection refused".into()), t0);
    assert_eq!(name(&r.choose(Some("r2"), t0)), "node-ccc");
    assert_eq!(name(&r.choose(Some("r2"), t0)), "node-ccc");
    // r1's node drains: r1 moves too.
    let mut me = status("a", 0);
    me.draining = true;
    r.set_me(me);
    assert_eq!(name(&r.choose(Some("r1"), t0)), "node-ccc");
}

#[test]
fn alternates_name_the_least_loaded_live_sibling_per_transport_and_family() {
    let t0 = Instant::now();
    let mut r = roster(t0);
    r.record("http://b", 0, Ok(status("bb", 7)), t0);
    r.record("http://c", 1, Ok(status("ccc", 2)), t0);
    let a = r.alternates(t0);
    assert_eq!(a[0][0], Some("192.0.2.3:3478".parse().expect("addr")), "udp/IPv4: c");
    assert_eq!(a[0][1], None, "no UDP IPv6 listener anywhere");
    assert_eq!(a[1], [None, None], "no TCP listener anywhere");
    assert_eq!(a[2][1], Some("[2001:db8::1]:443".parse().expect("addr")));
    r.record("http://c", 1, Err("refused".into()), t0);
    assert_eq!(r.alternates(t0)[0][0], Some("192.0.2.2:3478".parse().expect("addr")));
    r.record("http://b", 0, Err("refused".into()), t0);
    assert_eq!(r.alternates(t0), Alternates::default());
}

#[test]
fn node_urls() {
    let u = NodeUrl::parse("http://10.0.0.2:8080").expect("parses");
    assert_eq!((u.https, u.host.as_str(), u.port), (false, "10.0.0.2", 8080));
    assert_eq!(u.status_url(None), "http://10.0.0.2:8080/api/cluster");
    let u = NodeUrl::parse("https://turn.example.org/").expect("parses");
    assert_eq!((u.https, u.port), (true, 443));
    let u = NodeUrl::parse("http://[2001:db8::2]:80").expect("parses");
    assert_eq!(u.status_url(None), "http://[2001:db8::2]:80/api/cluster");
    assert_eq!(
        u.status_url(Some("192.0.2.9".parse().expect("ip"))),
        "http://192.0.2.9:80/api/cluster"
    );
    for bad in [
        "10.0.0.2:8080",
        "ftp://x",
        "http://",
        "http://x:0",
        "http://x:http",
        "http://x/path",
        "http://u@x",
        "http://[::1",
        "http://[nope]:1",
    ] {
        assert!(NodeUrl::parse(bad).is_err(), "{bad}");
    }
}
