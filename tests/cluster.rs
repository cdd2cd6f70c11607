//! A fleet of three turnd processes on loopback (127.0.0.1, .2, .3), each
//! listing all three in `[cluster] nodes` (itself included, as a name that
//! resolves to every node would): `/api/ice` from any node spreads clients
//! evenly, credentials minted by one node are accepted by another, a
//! draining node and a killed one stop getting clients within 5 s, and a
//! draining node's 300 ALTERNATE-SERVER names a live sibling. The status
//! endpoint needs the fleet's token.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::process::{free_tcp_port_on, Proc};
use common::server::*;
use common::streamc;
use common::stunc::*;
use stun::addr::AlternateServer;
use stun::message::*;

const TOKEN: &str = "fleet-token-0123456789";

struct Node {
    proc: Proc,
    turn: SocketAddr,
    http: SocketAddr,
    /// `/metrics`, `/healthz` and `/readyz`.
    ops: SocketAddr,
}

/// Three nodes, each with UDP and TCP TURN and the page on 127.0.0.N.
fn fleet() -> Vec<Node> {
    let ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let turn: Vec<u16> = ips.iter().map(|ip| free_tcp_port_on(ip)).collect();
    let http: Vec<u16> = ips.iter().map(|ip| free_tcp_port_on(ip)).collect();
    let ops: Vec<u16> = ips.iter().map(|ip| free_tcp_port_on(ip)).collect();
    let urls: Vec<String> = ips
        .iter()
        .zip(&http)
        .map(|(ip, p)| format!("\"http://{ip}:{p}\""))
        .collect();
    ips.iter()
        .enumerate()
        .map(|(i, ip)| {
            let config = format!(
                r#"realm = "{REALM}"
data-dir = "{{dir}}"
public-host = "{ip}"
drain-timeout = "1h"
{udp}{tcp}[auth]
static-auth-secrets = ["{SECRET}"]
[peers]
allow = ["127.0.0.0/8"]
[http]
listen = ["{ip}:{http}"]
access = "open"
ice-requests-per-minute = 10000
[metrics]
listen = ["{ip}:{ops}"]
public = true
[cluster]
nodes = [{nodes}]
name = "node-{n}"
token = "{TOKEN}"
poll-interval = "200ms"
poll-timeout = "500ms"
"#,
                udp = listener_toml(ip, turn[i], "udp"),
                tcp = listener_toml(ip, turn[i], "tcp"),
                http = http[i],
                ops = ops[i],
                nodes = urls.join(", "),
                n = i + 1,
            );
            let turn = format!("{ip}:{}", turn[i]).parse().expect("addr");
            let http = format!("{ip}:{}", http[i]).parse().expect("addr");
            let ops = format!("{ip}:{}", ops[i]).parse().expect("addr");
            let proc = Proc::spawn(&config, &[]);
            proc.wait_listening(http);
            Node { proc, turn, http, ops }
        })
        .collect()
}

fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut req = agent.get(url);
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut r = req.call().expect("HTTP answer");
    let body = r.body_mut().read_to_string().expect("body");
    (r.status().as_u16(), body)
}

/// `/api/ice` from `node`: the node it names and its TURN URLs.
fn ice(node: &Node, room: Option<&str>) -> (String, Vec<String>) {
    let (name, turn, _) = ice_cred(node, room);
    (name, turn)
}

/// [`ice`] with the credential it carries.
fn ice_cred(node: &Node, room: Option<&str>) -> (String, Vec<String>, (String, String)) {
    let q = room.map(|r| format!("?room={r}")).unwrap_or_default();
    let (code, body) = get(&format!("http://{}/api/ice{q}", node.http), None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let server = v["iceServers"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s.get("username").is_some()))
        .cloned()
        .unwrap_or_default();
    let turn = server["urls"]
        .as_array()
        .map(|u| u.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let cred = (
        server["username"].as_str().unwrap_or_default().to_string(),
        server["credential"].as_str().unwrap_or_default().to_string(),
    );
    (v["node"].as_str().unwrap_or("?").to_string(), turn, cred)
}

/// Waits (up to 10 s) until every node has polled both siblings
/// successfully (its `/metrics` counts two healthy ones) and the nodes
/// together hand out all three. A node started first finds its siblings
/// unreachable until they listen and says so until its next poll: seeing
/// every name from some node is not enough (CI once checked the metrics
/// between the two).
fn wait_converged(nodes: &[&Node]) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let polled = nodes.iter().all(|n| {
            let (_, m) = get(&format!("http://{}/metrics", n.ops), None);
            m.contains("turnd_cluster_siblings{state=\"healthy\"} 2")
        });
        let seen: std::collections::BTreeSet<String> = (0..30).map(|i| ice(nodes[i % nodes.len()], None).0).collect();
        if polled && seen.len() == nodes.len() {
            return;
        }
        assert!(
            Instant::now() < end,
            "the fleet did not converge: {seen:?}, every node polled both: {polled}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How long until `n` requests in a row, spread over `asked`, leave out
/// `gone`.
fn time_until_left_out(asked: &[&Node], gone: &str) -> Duration {
    let t = Instant::now();
    let mut clean = 0;
    let mut i = 0;
    while clean < 12 {
        assert!(t.elapsed() < Duration::from_secs(10), "{gone} still handed out");
        let (node, _) = ice(asked[i % asked.len()], None);
        i += 1;
        clean = if node == gone { 0 } else { clean + 1 };
        std::thread::sleep(Duration::from_millis(20));
    }
    t.elapsed()
}

/// An Allocate over TCP at `addr` with a credential minted for `user`: the
/// error code and, for 300, the ALTERNATE-SERVER.
fn allocate(addr: SocketAddr) -> (Option<u16>, Option<SocketAddr>, streamc::Framed<std::net::TcpStream>) {
    allocate_as(addr, rest_creds("fleet"))
}

/// [`allocate`] with the REST credential `(user, pass)`.
fn allocate_as(
    addr: SocketAddr,
    (user, pass): (String, String),
) -> (Option<u16>, Option<SocketAddr>, streamc::Framed<std::net::TcpStream>) {
    let mut c = streamc::tcp(addr);
    let r = c.request(&build(req(METHOD_ALLOCATE), vec![transport_udp()], None, true));
    let nonce = text(&r, stun::attributes::ATTR_NONCE).expect("nonce");
    let cred = Cred {
        user,
        realm: REALM.into(),
        pass,
        nonce,
    };
    let r = c.request(&build(req(METHOD_ALLOCATE), vec![transport_udp()], Some(&cred), true));
    let mut alt = AlternateServer::default();
    let alt = alt
        .get_from_as(&r, stun::attributes::ATTR_ALTERNATE_SERVER)
        .ok()
        .map(|_| SocketAddr::new(alt.ip, alt.port));
    (error_code(&r), alt, c)
}

#[test]
fn a_fleet_spreads_clients_and_routes_around_draining_and_dead_nodes() {
    let mut nodes = fleet();
    let all: Vec<&Node> = nodes.iter().collect();
    wait_converged(&all);

    // The status endpoint: the fleet's token or nothing.
    let status = format!("http://{}/api/cluster", nodes[0].http);
    assert_eq!(get(&status, None).0, 401);
    assert_eq!(get(&status, Some("not-the-fleet-token")).0, 401);
    let (code, body) = get(&status, Some(TOKEN));
    assert_eq!(code, 200);
    let me: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(me["name"], "node-1");
    assert_eq!(me["draining"], false);

    // Liveness, readiness and the fleet's health in /metrics.
    for n in &nodes {
        assert_eq!(get(&format!("http://{}/healthz", n.ops), None).0, 200);
        assert_eq!(get(&format!("http://{}/readyz", n.ops), None).0, 200);
        let (_, m) = get(&format!("http://{}/metrics", n.ops), None);
        assert!(m.contains("turnd_cluster_siblings{state=\"healthy\"} 2"), "{m}");
        assert!(m.contains("turnd_draining 0"), "{m}");
    }

    // Let the handouts of the convergence check age out of the load.
    std::thread::sleep(Duration::from_secs(11));
    // 60 clients, asking the three nodes in turn: within ±20 % of 20 each.
    let mut counts: HashMap<String, usize> = HashMap::new();
    for i in 0..60 {
        *counts.entry(ice(all[i % 3], None).0).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (n, c) in &counts {
        assert!((16..=24).contains(c), "{n} got {c} of 60: {counts:?}");
    }
    // One room (its signaling lives on the node whose page it is), one
    // relay node for all its participants.
    let (room_node, _) = ice(all[1], Some("fleet-room"));
    for _ in 0..6 {
        assert_eq!(ice(all[1], Some("fleet-room")).0, room_node);
    }

    // A credential node 1 minted, sending the client to node 2, works on
    // node 2 (and on node 3: the nodes share only the secret).
    let (name, turn, cred) = (0..10)
        .map(|_| ice_cred(&nodes[0], None))
        .find(|(n, _, _)| n == "node-2")
        .expect("node 1 sends a client to node 2");
    assert!(
        turn.iter().all(|u| u.contains(&nodes[1].turn.to_string())),
        "{name}: {turn:?}"
    );
    for n in &nodes[1..] {
        let (code, _, c) = allocate_as(n.turn, cred.clone());
        assert_eq!(code, None, "node 1's credential on {}", n.turn);
        drop(c);
    }

    // Node 3 drains (an allocation keeps it alive): it is left out.
    let (code, _, live) = allocate(nodes[2].turn);
    assert_eq!(code, None);
    nodes[2].proc.signal("TERM");
    nodes[2].proc.wait_log("draining", Duration::from_secs(5));
    let took = time_until_left_out(&all[..2], "node-3");
    assert_eq!(get(&format!("http://{}/readyz", nodes[2].ops), None).0, 503);
    assert_eq!(get(&format!("http://{}/healthz", nodes[2].ops), None).0, 200);
    let (_, m) = get(&format!("http://{}/metrics", nodes[0].ops), None);
    assert!(m.contains("turnd_cluster_siblings{state=\"draining\"} 1"), "{m}");
    assert!(took < Duration::from_secs(5), "draining node-3 handed out for {took:?}");
    // ... and sends new Allocates to a live sibling.
    let (code, alt, _c) = allocate(nodes[2].turn);
    assert_eq!(code, Some(300));
    let alt = alt.expect("ALTERNATE-SERVER");
    assert!(alt == nodes[0].turn || alt == nodes[1].turn, "{alt}");
    // Node 3 itself sends clients elsewhere too.
    for _ in 0..6 {
        assert_ne!(ice(&nodes[2], None).0, "node-3");
    }

    // Node 2 is killed: left out within 5 s; node 3's 300 names node 1.
    nodes[1].proc.child.kill().expect("SIGKILL");
    let _ = nodes[1].proc.child.wait();
    let took = time_until_left_out(&[&nodes[0]], "node-2");
    assert!(took < Duration::from_secs(5), "dead node-2 handed out for {took:?}");
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, alt, _c) = allocate(nodes[2].turn);
        assert_eq!(code, Some(300));
        if alt == Some(nodes[0].turn) {
            break;
        }
        assert!(Instant::now() < end, "node-3 still sends clients to {alt:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Node 3 exits once its last allocation ends.
    drop(live);
    let status = nodes[2]
        .proc
        .wait_exit(Duration::from_secs(10))
        .expect("node 3 exits when drained");
    assert!(status.success(), "{status:?}");
}
