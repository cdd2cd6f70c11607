//! The kernel data path (src/net/xdp) end to end: the real turnd binary in
//! its own network namespace with the XDP program attached natively to its
//! veth, a client and a peer in theirs, all routed through a router
//! namespace (so every rewritten datagram's next hop comes from the kernel's
//! route and neighbour tables). Each check runs with offload on and again
//! on the socket path (`mode = "off"`), which must behave the same; with
//! offload on, turnd's own counters prove the kernel relayed the traffic.
//! Needs root (a visible skip otherwise; a failure under CI=true).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::frames;
use common::netns::{self, Topo};
use common::process::Proc;
use common::streamc::{self, Datagrams, Framed, Item};
use common::stunc::*;
use stun::message::*;

const METRICS: u16 = 9478;
const ADMIN: u16 = 9479;
const PORT: u16 = 3478;

/// turnd's configuration in `t`: UDP listeners on its IPv4 address and,
/// except in a [`Topo::direct`] topology (IPv4 only), its IPv6 address.
/// `extra` follows `[xdp] mode`: keys of that table, then other tables.
fn config(t: &Topo, mode: &str, extra: &str) -> String {
    let v4 = t.ip('t', 4);
    let v6 = if t.direct {
        String::new()
    } else {
        format!(
            "[[listener]]\naddress = \"{}\"\nport = {PORT}\ntransport = \"udp\"\n",
            t.ip('t', 6)
        )
    };
    format!(
        r#"realm = "{realm}"
data-dir = "{{dir}}"
drain-timeout = "1s"
[[listener]]
address = "{v4}"
port = {PORT}
transport = "udp"
{v6}[auth]
static-auth-secrets = ["{secret}"]
[metrics]
listen = ["127.0.0.1:{METRICS}"]
[admin]
listen = ["127.0.0.1:{ADMIN}"]
token = "admin-token-for-xdp-tests"
[xdp]
mode = "{mode}"
{extra}
"#,
        realm = common::server::REALM,
        secret = common::server::SECRET,
    )
}

const PEERS: &str = "[peers]\nallow = [\"10.0.0.0/8\", \"fd00::/8\"]\n";

/// turnd in `t` with `mode`, once its metrics answer.
fn start(t: &Topo, mode: &str, extra: &str) -> Proc {
    let p = t.turnd(&config(t, mode, &format!("{extra}{PEERS}")));
    let end = Instant::now() + Duration::from_secs(10);
    while !t.metrics(METRICS).contains("turnd_xdp_info") {
        assert!(Instant::now() < end, "turnd did not start: {}", p.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let info = format!(
        "turnd_xdp_info{{mode=\"{}\"}} 1",
        if mode == "off" { "off" } else { "native" }
    );
    assert!(t.metrics(METRICS).contains(&info), "{}", p.log());
    p
}

/// A client of turnd over `family`, allocated (an IPv6 relay for IPv6).
fn client(t: &Topo, family: u8, user: &str) -> (Framed<Datagrams>, Cred, SocketAddr) {
    let server = SocketAddr::new(t.ip('t', family), PORT);
    let mut c = streamc::udp_on(t.udp('c', family), server);
    let fam: Attrs = if family == 6 {
        vec![transport_udp(), raw(0x0017, &[2, 0, 0, 0])]
    } else {
        vec![transport_udp()]
    };
    let r = c.request(&build(req(METHOD_ALLOCATE), fam, None, true));
    assert_eq!(error_code(&r), Some(401), "{r}");
    let (u, p) = common::server::rest_creds(user);
    let cred = Cred {
        user: u,
        realm: common::server::REALM.into(),
        pass: p,
        nonce: text(&r, stun::attributes::ATTR_NONCE).expect("nonce"),
    };
    let fam: Attrs = if family == 6 {
        vec![transport_udp(), raw(0x0017, &[2, 0, 0, 0])]
    } else {
        vec![transport_udp()]
    };
    let r = c.request(&build(req(METHOD_ALLOCATE), fam, Some(&cred), true));
    assert!(is_success(&r), "allocate: {r}");
    let relayed = relayed(&r).expect("relayed");
    (c, cred, relayed)
}

/// A peer socket in the peer namespace.
fn peer(t: &Topo, family: u8) -> (UdpSocket, SocketAddr) {
    let s = t.udp('p', family);
    let a = s.local_addr().expect("addr");
    (s, a)
}

fn recv_from(s: &UdpSocket, limit: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    s.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = vec![0u8; 65536];
    let (n, from) = s.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some((buf, from))
}

/// The next ChannelData the client gets (skipping STUN), within `limit`.
fn recv_channel(c: &mut Framed<Datagrams>, limit: Duration) -> Option<(u16, Vec<u8>)> {
    c.io.0.set_read_timeout(Some(limit)).expect("timeout");
    let end = Instant::now() + limit;
    while Instant::now() < end {
        let mut buf = vec![0u8; 65536];
        let Ok(n) = c.io.0.recv(&mut buf) else {
            return None;
        };
        if n >= 4 && buf[0] >> 6 == 1 {
            let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
            return Some((
                u16::from_be_bytes([buf[0], buf[1]]),
                buf[4..4 + len.min(n - 4)].to_vec(),
            ));
        }
    }
    None
}

fn family_label(family: u8) -> &'static str {
    if family == 4 {
        "ipv4"
    } else {
        "ipv6"
    }
}

fn kernel(t: &Topo, direction: &str, family: u8) -> u64 {
    t.metric(
        METRICS,
        &format!(
            "turnd_xdp_packets_total{{direction=\"{direction}\",family=\"{}\"}}",
            family_label(family)
        ),
    )
}

/// Both directions on a channel, IPv4 and IPv6: every datagram arrives,
/// from the relayed address, and with offload on the kernel relayed all of
/// them (the route is in the kernel before the ChannelBind answer leaves);
/// turnd's relayed totals include them within the second.
#[test]
fn channel_data_both_ways_over_ipv4_and_ipv6() {
    if !netns::available() {
        return;
    }
    for (n, mode) in [(101u8, "native"), (102, "off")] {
        let t = Topo::new(&format!("xb{n}"), n);
        let p = start(&t, mode, "");
        for family in [4u8, 6] {
            let (mut c, cred, relayed) = client(&t, family, "both");
            assert_eq!(relayed.is_ipv6(), family == 6);
            let (ps, pa) = peer(&t, family);
            c.bind(&cred, 0x4000, pa);
            for i in 0..20u8 {
                let payload = vec![i; 100 + i as usize];
                c.send(&channel_data(0x4000, &payload, false));
                let (got, from) = recv_from(&ps, Duration::from_secs(2)).expect("the peer gets it");
                assert_eq!((got, from), (payload, relayed), "{mode} {family} #{i}");
                let back = vec![i ^ 0xff; 50 + i as usize];
                ps.send_to(&back, relayed).expect("send");
                let got = recv_channel(&mut c, Duration::from_secs(2)).expect("the client gets it");
                assert_eq!(got, (0x4000, back), "{mode} {family} #{i} back");
            }
            if mode == "native" {
                assert_eq!(kernel(&t, "to_peer", family), 20, "{}", t.metrics(METRICS));
                assert_eq!(kernel(&t, "to_client", family), 20, "{}", t.metrics(METRICS));
            } else {
                assert_eq!(kernel(&t, "to_peer", family), 0);
            }
        }
        // `turnd sessions` (the admin API) counts what the kernel relayed.
        let sessions = t.within('t', || {
            ureq::get(&format!("http://127.0.0.1:{ADMIN}/admin/sessions"))
                .header("Authorization", "Bearer admin-token-for-xdp-tests")
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .unwrap_or_default()
        });
        assert_eq!(
            sessions.matches("\"to_peer_packets\":20").count(),
            2,
            "{mode}: {sessions}"
        );
        // Credited to the totals (the kernel's counters, once a second).
        let total = t.wait_metric(
            METRICS,
            "turnd_relayed_packets_total{direction=\"to_peer\",transport=\"udp\"}",
            40,
            Duration::from_secs(3),
        );
        assert_eq!(total, 40, "{mode}: {}", p.log());
        drop(p);
    }
}

/// One allocation with a channel to one peer and Send indications to
/// another: ChannelData goes through the kernel, indications and Data
/// indications through the socket path, and neither disturbs the other.
#[test]
fn send_indications_and_channel_data_on_one_allocation() {
    if !netns::available() {
        return;
    }
    for (n, mode) in [(103u8, "native"), (104, "off")] {
        let t = Topo::new(&format!("xm{n}"), n);
        let _p = start(&t, mode, "");
        let (mut c, cred, relayed) = client(&t, 4, "mixed");
        let (pa, a) = peer(&t, 4);
        let (pb, b) = peer(&t, 4);
        c.bind(&cred, 0x4001, a);
        let r = c.request(&build(
            req(METHOD_CREATE_PERMISSION),
            vec![common::stunc::peer(b)],
            Some(&cred),
            true,
        ));
        assert!(is_success(&r), "{r}");
        for i in 0..10u8 {
            c.send(&channel_data(0x4001, &[i; 64], false));
            let ind = build(
                MessageType::new(METHOD_SEND, CLASS_INDICATION),
                vec![common::stunc::peer(b), data(&[i; 32])],
                None,
                false,
            );
            c.send(&ind.raw);
            assert_eq!(recv_from(&pa, Duration::from_secs(2)), Some((vec![i; 64], relayed)));
            assert_eq!(recv_from(&pb, Duration::from_secs(2)), Some((vec![i; 32], relayed)));
            pa.send_to(&[i; 16], relayed).expect("send");
            pb.send_to(&[i; 8], relayed).expect("send");
            let mut channel = None;
            let mut indication = None;
            while channel.is_none() || indication.is_none() {
                match c.recv().expect("an answer") {
                    Item::Channel(n, p) => channel = Some((n, p)),
                    Item::Stun(m) => indication = data_indication(&decode(&m)),
                }
            }
            assert_eq!(channel, Some((0x4001, vec![i; 16])));
            assert_eq!(indication, Some((b, vec![i; 8])));
        }
        if mode == "native" {
            assert_eq!(kernel(&t, "to_peer", 4), 10);
            assert_eq!(kernel(&t, "to_client", 4), 10);
        }
    }
}

/// Two clients bind the same channel number on their own allocations to
/// different peers: each channel's data goes to its own peer and back to
/// its own client only.
#[test]
fn the_same_channel_number_on_two_allocations() {
    if !netns::available() {
        return;
    }
    for (n, mode) in [(105u8, "native"), (106, "off")] {
        let t = Topo::new(&format!("xs{n}"), n);
        let _p = start(&t, mode, "");
        let (mut x, cx, rx) = client(&t, 4, "x");
        let (mut y, cy, ry) = client(&t, 4, "y");
        let (px, ax) = peer(&t, 4);
        let (py, ay) = peer(&t, 4);
        x.bind(&cx, 0x4000, ax);
        y.bind(&cy, 0x4000, ay);
        for i in 0..10u8 {
            x.send(&channel_data(0x4000, b"from x", false));
            y.send(&channel_data(0x4000, b"from y", false));
            assert_eq!(
                recv_from(&px, Duration::from_secs(2)),
                Some((b"from x".to_vec(), rx)),
                "#{i}"
            );
            assert_eq!(
                recv_from(&py, Duration::from_secs(2)),
                Some((b"from y".to_vec(), ry)),
                "#{i}"
            );
            px.send_to(b"to x", rx).expect("send");
            py.send_to(b"to y", ry).expect("send");
            assert_eq!(
                recv_channel(&mut x, Duration::from_secs(2)),
                Some((0x4000, b"to x".to_vec()))
            );
            assert_eq!(
                recv_channel(&mut y, Duration::from_secs(2)),
                Some((0x4000, b"to y".to_vec()))
            );
        }
        assert_eq!(recv_from(&px, Duration::from_millis(200)), None, "nothing crossed over");
        if mode == "native" {
            assert_eq!(kernel(&t, "to_peer", 4), 20);
            assert_eq!(kernel(&t, "to_client", 4), 20);
        }
    }
}

/// At a 1500-byte MTU, over IPv4 and IPv6: the largest ChannelData a
/// client can send (1468 / 1448 bytes of data) and the largest a peer's
/// datagram can become (the same + 4) are relayed in the kernel; a peer's
/// full-size datagram, whose ChannelData would not fit the client's link,
/// goes to the socket path (counted), which sends it in fragments, and so
/// does a 3000-byte datagram the peer sent in fragments.
#[test]
fn the_largest_channel_data_at_a_1500_byte_mtu() {
    if !netns::available() {
        return;
    }
    for (n, mode) in [(107u8, "native"), (108, "off")] {
        let t = Topo::new(&format!("xl{n}"), n);
        let _p = start(&t, mode, "");
        for family in [4u8, 6] {
            let ip = if family == 4 { 20 } else { 40 };
            let (mut c, cred, relayed) = client(&t, family, "large");
            let (ps, pa) = peer(&t, family);
            c.bind(&cred, 0x4000, pa);
            let big = vec![0x5a; 1500 - ip - 8 - 4];
            c.send(&channel_data(0x4000, &big, false));
            assert_eq!(recv_from(&ps, Duration::from_secs(2)), Some((big.clone(), relayed)));
            ps.send_to(&big, relayed).expect("send");
            assert_eq!(recv_channel(&mut c, Duration::from_secs(2)), Some((0x4000, big)));
            // 1472 / 1452 bytes from the peer become a 1504-byte packet to
            // the client: left to the socket path, which sends it in
            // fragments (it used to set DF and drop it over IPv4, and over
            // IPv6 sendmsg failed with EMSGSIZE: IPV6_DONTFRAG).
            for size in [1500 - ip - 8, 3000] {
                ps.send_to(&vec![0xa5; size], relayed).expect("send");
                let got = recv_channel(&mut c, Duration::from_secs(2));
                assert_eq!(
                    got.map(|(n, p)| (n, p.len())),
                    Some((0x4000, size)),
                    "{mode} IPv{family} {size}"
                );
            }
            if mode == "native" {
                assert_eq!(kernel(&t, "to_peer", family), 1);
                assert_eq!(kernel(&t, "to_client", family), 1);
            }
        }
        if mode == "native" {
            assert_eq!(passed(&t, "too_big"), 2, "{}", t.metrics(METRICS));
        }
    }
}

/// ChannelData whose length does not fill the datagram: padded to 4 bytes
/// (allowed over UDP) is relayed in the kernel without the padding; any
/// other surplus goes to the socket path, which relays the stated length
/// as before; a length past the datagram is dropped there.
#[test]
fn channel_data_lengths_that_do_not_match_the_datagram() {
    if !netns::available() {
        return;
    }
    for (n, mode) in [(109u8, "native"), (110, "off")] {
        let t = Topo::new(&format!("xo{n}"), n);
        let _p = start(&t, mode, "");
        let (mut c, cred, relayed) = client(&t, 4, "odd");
        let (ps, pa) = peer(&t, 4);
        c.bind(&cred, 0x4000, pa);
        // 5 bytes padded with 3 (nonzero, which the checksum must lose).
        let mut padded = channel_data(0x4000, b"12345", false);
        padded.extend_from_slice(&[7, 7, 7]);
        c.send(&padded);
        assert_eq!(
            recv_from(&ps, Duration::from_secs(2)),
            Some((b"12345".to_vec(), relayed))
        );
        // 8 bytes more than stated: the socket path relays the stated 5.
        let mut longer = channel_data(0x4000, b"abcde", false);
        longer.extend_from_slice(&[1; 8]);
        c.send(&longer);
        assert_eq!(
            recv_from(&ps, Duration::from_secs(2)),
            Some((b"abcde".to_vec(), relayed))
        );
        // A length past the datagram: dropped.
        let mut short = channel_data(0x4000, &[9; 40], false);
        short.truncate(20);
        c.send(&short);
        assert_eq!(recv_from(&ps, Duration::from_millis(300)), None);
        if mode == "native" {
            assert_eq!(kernel(&t, "to_peer", 4), 1, "only the padded one");
            assert_eq!(t.metric(METRICS, "turnd_xdp_passed_total{reason=\"length\"}"), 2);
        }
    }
}

/// Sends ChannelData every 20 ms from now until `limit` after `since`;
/// when (after `since`) the last one reached the peer.
fn stops_within(c: &mut Framed<Datagrams>, ps: &UdpSocket, since: Instant, limit: Duration) -> Duration {
    let mut last = Duration::ZERO;
    while Instant::now() < since + limit {
        c.send(&channel_data(0x4000, b"still?", false));
        if recv_from(ps, Duration::from_millis(20)).is_some() {
            last = since.elapsed();
        }
    }
    last
}

/// Every way a channel's route ends takes it out of the kernel: traffic on
/// it stops within a second of the allocation being deleted by its client,
/// expiring, being killed by an operator, or its peer being denied by a
/// reloaded policy; and when turnd stops (drain timeout) or dies, nothing
/// is left attached to the interface.
#[test]
fn every_way_a_channel_ends_stops_the_kernel_route() {
    if !netns::available() {
        return;
    }
    let t = Topo::new("xe111", 111);
    let p = start(
        &t,
        "native",
        "[relay]\ndefault-lifetime = \"3s\"\nmax-lifetime = \"3s\"\n",
    );
    let mut checks = Vec::new();
    // A live channel for `user`, carrying traffic in the kernel.
    let live = |user: &str| {
        let (mut c, cred, relayed) = client(&t, 4, user);
        let (ps, pa) = peer(&t, 4);
        c.bind(&cred, 0x4000, pa);
        c.send(&channel_data(0x4000, b"hello", false));
        assert_eq!(
            recv_from(&ps, Duration::from_secs(2)),
            Some((b"hello".to_vec(), relayed))
        );
        (c, cred, ps)
    };

    // Deleted by its client.
    let (mut c, cred, ps) = live("deleted");
    let r = c.request(&build(req(METHOD_REFRESH), vec![lifetime_attr(0)], Some(&cred), true));
    assert!(is_success(&r), "{r}");
    checks.push((
        "deleted",
        stops_within(&mut c, &ps, Instant::now(), Duration::from_secs(2)),
    ));

    // Expired (max-lifetime 3 s, never refreshed).
    let (mut c, _cred, ps) = live("expired");
    let since = Instant::now() + Duration::from_secs(3);
    std::thread::sleep(Duration::from_millis(2500));
    checks.push(("expired", stops_within(&mut c, &ps, since, Duration::from_secs(2))));

    // Killed by an operator (the admin API `turnd kill` calls).
    let (mut c, _cred, ps) = live("killed");
    let answer = t.within('t', || {
        ureq::post(&format!("http://127.0.0.1:{ADMIN}/admin/kill?user=killed"))
            .header("Authorization", "Bearer admin-token-for-xdp-tests")
            .send_empty()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default()
    });
    assert!(answer.contains("\"killed\":1"), "{answer}");
    checks.push((
        "killed",
        stops_within(&mut c, &ps, Instant::now(), Duration::from_secs(2)),
    ));

    // Its peer denied by a reloaded policy (the allow list gone: private
    // addresses are denied by default).
    let (mut c, _cred, ps) = live("denied");
    p.rewrite_config(&config(
        &t,
        "native",
        "[relay]\ndefault-lifetime = \"3s\"\nmax-lifetime = \"3s\"\n",
    ));
    p.signal("HUP");
    let log = p.wait_log("configuration reloaded", Duration::from_secs(5));
    assert!(log.contains("configuration reloaded"), "{log}");
    checks.push((
        "denied",
        stops_within(&mut c, &ps, Instant::now(), Duration::from_secs(2)),
    ));

    for (what, stopped) in &checks {
        assert!(
            *stopped <= Duration::from_secs(1),
            "{what}: offloaded traffic went on for {stopped:?}\n{}",
            p.log()
        );
    }

    // Drain timeout: SIGTERM, then exit after a second; the program goes
    // with the process.
    let mut p = p;
    p.signal("TERM");
    assert!(
        p.wait_exit(Duration::from_secs(10)).is_some(),
        "turnd exits after draining"
    );
    let link = t.run('t', "ip", &["link", "show", "eth0"]);
    assert!(!String::from_utf8_lossy(&link.stdout).contains("xdp"), "{link:?}");
    // Killed outright: the link dies with the process too.
    let mut p = start(&t, "native", "");
    let _ = p.child.kill();
    let _ = p.wait_exit(Duration::from_secs(5));
    let link = t.run('t', "ip", &["link", "show", "eth0"]);
    assert!(!String::from_utf8_lossy(&link.stdout).contains("xdp"), "{link:?}");
}

/// `auto` where the kernel cannot look up next hops (forwarding off on the
/// interface): the socket path, one log line naming the sysctl, and
/// /metrics saying "off"; relaying works as before.
#[test]
fn auto_falls_back_to_the_socket_path_and_says_why() {
    if !netns::available() {
        return;
    }
    let t = Topo::new("xa112", 112);
    t.run('t', "sysctl", &["-qw", "net.ipv4.conf.eth0.forwarding=0"]);
    let p = t.turnd(&config(&t, "auto", PEERS));
    let log = p.wait_log("xdp mode auto", Duration::from_secs(10));
    assert!(log.contains("net.ipv4.conf.eth0.forwarding=1"), "{log}");
    assert!(t.metrics(METRICS).contains("turnd_xdp_info{mode=\"off\"} 1"));
    let (mut c, cred, relayed) = client(&t, 4, "auto");
    let (ps, pa) = peer(&t, 4);
    c.bind(&cred, 0x4000, pa);
    c.send(&channel_data(0x4000, b"socket path", false));
    assert_eq!(
        recv_from(&ps, Duration::from_secs(2)),
        Some((b"socket path".to_vec(), relayed))
    );
    // `native` refuses to start instead.
    drop(p);
    let mut p = t.turnd(&config(&t, "native", PEERS));
    assert!(p.wait_exit(Duration::from_secs(10)).is_some_and(|s| !s.success()));
    assert!(p.log().contains("forwarding=1"), "{}", p.log());
}

/// coturn's uclient, 50 channel sessions of 1000 messages (`-c`: no RTCP
/// allocations), then client to client (`-y`, relay to relay, which stays
/// in the process), with offload on: no loss, and the kernel relayed the
/// channel sessions.
#[test]
fn uclient_channel_sessions_with_offload() {
    if !netns::available() {
        return;
    }
    let (Some(uclient), Some(peer_tool)) = (
        common::server::tool("turnutils_uclient"),
        common::server::tool("turnutils_peer"),
    ) else {
        return;
    };
    let t = Topo::new("xu113", 113);
    let _p = start(
        &t,
        "native",
        "[relay]\nmax-allocations-per-user = 1000\nrfc5766-channels = true\n",
    );
    let pip = t.ip('p', 4).to_string();
    let mut peer_proc = t.spawn('p', peer_tool.to_str().expect("path"), &["-L", &pip, "-p", "3480"]);
    let tip = t.ip('t', 4).to_string();
    // Each run from its own address: uclient leaves allocations behind,
    // and a new run reusing a port of the last one would meet an
    // allocation made with an older REST username (441).
    let second = format!("10.{}.1.3", t.n);
    let added = t.run('c', "ip", &["addr", "add", &format!("{second}/24"), "dev", "eth0"]);
    assert!(added.status.success(), "{added:?}");
    let first = t.ip('c', 4).to_string();
    for mode in [
        &["-c", "-e", &pip, "-r", "3480", "-L", &first][..],
        &["-c", "-y", "-L", &second][..],
    ] {
        let mut args = mode.to_vec();
        args.extend([
            "-W",
            common::server::SECRET,
            "-m",
            "50",
            "-n",
            "1000",
            "-l",
            "172",
            "-z",
            "5",
            "-p",
            "3478",
            &tip,
        ]);
        let out = t.run('c', uclient.to_str().expect("path"), &args);
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = text.lines().rev().take(6).collect();
        assert!(out.status.success(), "uclient {mode:?}: {tail:#?}");
        assert!(
            text.contains("Total lost packets 0 "),
            "uclient {mode:?} lost packets: {tail:#?}"
        );
    }
    let _ = peer_proc.kill();
    let _ = peer_proc.wait();
    assert!(kernel(&t, "to_peer", 4) >= 50_000, "{}", t.metrics(METRICS));
    assert!(kernel(&t, "to_client", 4) >= 50_000, "{}", t.metrics(METRICS));
}

/// The program alone (`BPF_PROG_TEST_RUN`, no interface): a route whose
/// expiry has passed is left to the socket path, in both directions, even
/// before turnd's sweep removes it: a channel or permission that lapses
/// stops in the kernel at its expiry, not at the next sweep. (The core's
/// own tests prove it reports ChannelEnded at that instant.) The route
/// layout is written out here independently of `src/net/xdp/maps.rs`.
#[test]
fn an_expired_route_is_left_to_the_socket_path() {
    if !netns::available() {
        return;
    }
    use aya::maps::{HashMap as KernelMap, MapData, PerCpuArray};
    use aya::programs::{TestRun, TestRunOptions, Xdp};
    static OBJECT: &[u8] = aya::include_bytes_aligned!("../src/net/xdp/turnd.bpf.o");
    let mut ebpf = aya::EbpfLoader::new().load(OBJECT).expect("the object loads");
    let (client, listener, relay, peer) = ([10, 9, 1, 2], [10, 9, 2, 2], [10, 9, 2, 2], [10, 9, 3, 2]);
    let (cport, lport, rport, pport, channel) = (40000u16, 3478u16, 50000u16, 3480u16, 0x4000u16);
    let now = {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    };
    let mut out4: KernelMap<MapData, [u8; 16], [u8; 32]> =
        KernelMap::try_from(ebpf.take_map("OUT4").expect("OUT4")).expect("hash");
    let mut in4: KernelMap<MapData, [u8; 12], [u8; 32]> =
        KernelMap::try_from(ebpf.take_map("IN4").expect("IN4")).expect("hash");
    // The test run's frames arrive on loopback (ifindex 1): its MAC is the
    // frames' destination, no reverse-path filter, hop limit 64.
    let mut ifaces: KernelMap<MapData, u32, [u8; 8]> =
        KernelMap::try_from(ebpf.take_map("IFACES").expect("IFACES")).expect("hash");
    ifaces.insert(1, [2, 0, 0, 0, 0, 1, 0, 64], 0).expect("insert");
    let counters: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(ebpf.take_map("COUNTERS").expect("COUNTERS")).expect("array");
    let counter = |i: u32| -> u64 { counters.get(&i, 0).map_or(0, |v| v.iter().sum()) };
    let prog: &mut Xdp = ebpf
        .program_mut("turnd_relay")
        .expect("program")
        .try_into()
        .expect("xdp");
    prog.load().expect("the kernel takes the program");
    let (expired, no_route) = (4, 6);
    let be = |p: u16| p.to_be_bytes();
    let out_key: Vec<u8> = [&client[..], &listener, &be(cport), &be(lport), &be(channel), &[0, 0]].concat();
    let in_key: Vec<u8> = [&peer[..], &relay, &be(pport), &be(rport)].concat();
    let routes = |out4: &mut KernelMap<MapData, [u8; 16], [u8; 32]>,
                  in4: &mut KernelMap<MapData, [u8; 12], [u8; 32]>,
                  until: u64| {
        // relay, peer, ports, slot, expiry, generation, padding
        let out_val: Vec<u8> = [
            &relay[..],
            &peer,
            &be(rport),
            &be(pport),
            &0u32.to_ne_bytes(),
            &until.to_ne_bytes(),
            &1u32.to_ne_bytes(),
            &[0; 4],
        ]
        .concat();
        // client, listener, ports, channel, padding, slot, generation, expiry
        let in_val: Vec<u8> = [
            &client[..],
            &listener,
            &be(cport),
            &be(lport),
            &be(channel),
            &[0, 0],
            &0u32.to_ne_bytes(),
            &1u32.to_ne_bytes(),
            &until.to_ne_bytes(),
        ]
        .concat();
        out4.insert(
            <[u8; 16]>::try_from(&out_key[..]).expect("16"),
            <[u8; 32]>::try_from(&out_val[..]).expect("32"),
            0,
        )
        .expect("insert");
        in4.insert(
            <[u8; 12]>::try_from(&in_key[..]).expect("12"),
            <[u8; 32]>::try_from(&in_val[..]).expect("32"),
            0,
        )
        .expect("insert");
    };
    // An Ethernet frame carrying UDP from `src` to `dst` with `payload`.
    let frame = |src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]| -> Vec<u8> {
        let (s, d) = (SocketAddr::from((src, sport)), SocketAddr::from((dst, dport)));
        common::frames::udp([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], s, d, payload)
    };
    let from_client = frame(client, cport, listener, lport, &channel_data(channel, b"data", false));
    let from_peer = frame(peer, pport, relay, rport, b"data");
    let run = |f: &[u8]| -> u32 {
        let opts = TestRunOptions {
            data_in: Some(f),
            ..TestRunOptions::new()
        };
        prog.test_run(opts).expect("test run").return_value
    };
    const XDP_PASS: u32 = 2;
    // Expired a nanosecond ago: both directions left to the socket path as
    // expired.
    routes(&mut out4, &mut in4, now - 1);
    assert_eq!(run(&from_client), XDP_PASS);
    assert_eq!(run(&from_peer), XDP_PASS);
    assert_eq!((counter(expired), counter(no_route)), (2, 0));
    // Live for a minute: past the expiry check (then no route: a test run
    // has no interface to send from).
    routes(&mut out4, &mut in4, now + 60_000_000_000);
    assert_eq!(run(&from_client), XDP_PASS);
    assert_eq!(run(&from_peer), XDP_PASS);
    assert_eq!((counter(expired), counter(no_route)), (2, 2));
}

/// With a bandwidth limit configured the core keeps every channel on the
/// socket path, where the limit is enforced per packet: nothing goes
/// through the kernel and a burst over the limit is cut.
#[test]
fn a_bandwidth_limit_keeps_channels_on_the_socket_path() {
    if !netns::available() {
        return;
    }
    let t = Topo::new("xw114", 114);
    let _p = start(&t, "native", "[relay]\nmax-bps = 20000\n");
    let (mut c, cred, relayed) = client(&t, 4, "limited");
    let (ps, pa) = peer(&t, 4);
    c.bind(&cred, 0x4000, pa);
    for _ in 0..100 {
        c.send(&channel_data(0x4000, &[1; 1000], false));
    }
    let mut got = 0;
    while let Some((p, from)) = recv_from(&ps, Duration::from_millis(300)) {
        assert_eq!((p.len(), from), (1000, relayed));
        got += 1;
    }
    assert!(got > 0 && got < 60, "{got} of 100 KB within a 20 KB/s limit");
    assert_eq!(kernel(&t, "to_peer", 4), 0, "{}", t.metrics(METRICS));
    assert!(
        t.wait_metric(METRICS, "turnd_over_bandwidth_packets_total", 1, Duration::from_secs(3)) > 0,
        "{}",
        t.metrics(METRICS)
    );
}

/// With room in the kernel for only as many channels as there are
/// workers, a channel beyond its worker's share stays on the socket path
/// (counted) and relays as before; the kernel relays the others. What the
/// kernel relayed is in the allocation's totals when it is deleted.
#[test]
fn channels_beyond_the_maps_stay_on_the_socket_path() {
    if !netns::available() {
        return;
    }
    let t = Topo::new("xf115", 115);
    // One worker, one channel's room in the kernel.
    let cfg = config(&t, "native", PEERS)
        .replace("mode = \"native\"", "mode = \"native\"\nmax-channels = 1")
        .replace("drain-timeout", "workers = 1\ndrain-timeout");
    let p = t.turnd(&cfg);
    let end = Instant::now() + Duration::from_secs(10);
    while !t.metrics(METRICS).contains("turnd_xdp_info{mode=\"native\"}") {
        assert!(Instant::now() < end, "turnd did not start: {}", p.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut c, cred, relayed) = client(&t, 4, "full");
    let (pa, a) = peer(&t, 4);
    let (pb, b) = peer(&t, 4);
    c.bind(&cred, 0x4000, a);
    c.bind(&cred, 0x4001, b);
    for _ in 0..5 {
        c.send(&channel_data(0x4000, b"kernel", false));
        c.send(&channel_data(0x4001, b"socket", false));
        assert_eq!(
            recv_from(&pa, Duration::from_secs(2)),
            Some((b"kernel".to_vec(), relayed))
        );
        assert_eq!(
            recv_from(&pb, Duration::from_secs(2)),
            Some((b"socket".to_vec(), relayed))
        );
    }
    assert_eq!(kernel(&t, "to_peer", 4), 5);
    assert_eq!(t.metric(METRICS, "turnd_xdp_map_full_total"), 1);
    let r = c.request(&build(req(METHOD_REFRESH), vec![lifetime_attr(0)], Some(&cred), true));
    assert!(is_success(&r), "{r}");
    let log = p.wait_log("allocation deleted", Duration::from_secs(5));
    let line = log
        .lines()
        .find(|l| l.contains("allocation deleted"))
        .expect("the line");
    assert!(
        line.contains("to_peer_pkts=10") && line.contains("to_peer_bytes=60"),
        "{line}"
    );
}

/// turnd's host between the client's link and the peer's: every rewritten
/// datagram leaves by the other interface (bpf_redirect, both attached),
/// and arrives; a next hop whose neighbour entry is not resolved yet is
/// left to the socket path.
#[test]
fn redirects_between_two_interfaces() {
    if !netns::available() {
        return;
    }
    let t = Topo::direct("xr116", 116);
    let _p = start(&t, "native", "interfaces = [\"eth0\", \"eth1\"]\n");
    let (mut c, cred, relayed) = client(&t, 4, "redirect");
    let (ps, pa) = peer(&t, 4);
    c.bind(&cred, 0x4000, pa);
    for i in 0..10u8 {
        c.send(&channel_data(0x4000, &[i; 80], false));
        assert_eq!(
            recv_from(&ps, Duration::from_secs(2)),
            Some((vec![i; 80], relayed)),
            "#{i}"
        );
        ps.send_to(&[i; 40], relayed).expect("send");
        assert_eq!(
            recv_channel(&mut c, Duration::from_secs(2)),
            Some((0x4000, vec![i; 40])),
            "#{i} back"
        );
    }
    // The first datagram to the peer finds no neighbour entry for it yet
    // (turnd never spoke to it): the socket path sends it, and the kernel
    // resolves the neighbour on the way. Every other one is redirected.
    let (to_peer, to_client) = (kernel(&t, "to_peer", 4), kernel(&t, "to_client", 4));
    let no_route = t.metric(METRICS, "turnd_xdp_passed_total{reason=\"no_route\"}");
    assert_eq!((to_peer + no_route, to_client), (10, 10), "{}", t.metrics(METRICS));
    assert!(to_peer >= 9);
    assert_eq!(t.metric(METRICS, "turnd_xdp_redirected_total"), to_peer + to_client);
}

// ------------------------------------------------------------------------
// The kernel path against the socket path, frame by frame (issue 23): each
// case sends the same crafted frames in `native` and `off` mode and reads
// what crosses the links, with a frame that must get through as the
// positive control (a case cannot pass by seeing nothing).

/// A client allocated over `family` with channel 0x4000 bound to a peer
/// socket, the neighbours on both sides resolved (one datagram each way:
/// the first one to an unresolved neighbour goes to the socket path).
struct Call {
    c: Framed<Datagrams>,
    cred: Cred,
    relayed: SocketAddr,
    /// The client's address and the listener it talks to: the 5-tuple a
    /// crafted frame in its name carries.
    ca: SocketAddr,
    server: SocketAddr,
    ps: UdpSocket,
    pa: SocketAddr,
}

fn call(t: &Topo, family: u8, user: &str) -> Call {
    let (mut c, cred, relayed) = client(t, family, user);
    let (ps, pa) = peer(t, family);
    c.bind(&cred, 0x4000, pa);
    c.send(&channel_data(0x4000, b"warm", false));
    assert_eq!(
        recv_from(&ps, Duration::from_secs(2)),
        Some((b"warm".to_vec(), relayed))
    );
    ps.send_to(b"warm", relayed).expect("send");
    assert_eq!(
        recv_channel(&mut c, Duration::from_secs(2)),
        Some((0x4000, b"warm".to_vec()))
    );
    let ca = c.io.0.local_addr().expect("addr");
    let server = c.io.0.peer_addr().expect("addr");
    Call {
        c,
        cred,
        relayed,
        ca,
        server,
        ps,
        pa,
    }
}

/// The MACs of a frame the router sends to turnd's host.
fn router_to_turnd(t: &Topo) -> ([u8; 6], [u8; 6]) {
    (frames::mac(&t.ns('r'), "tot"), frames::mac(&t.ns('t'), "eth0"))
}

fn passed(t: &Topo, reason: &str) -> u64 {
    t.metric(METRICS, &format!("turnd_xdp_passed_total{{reason=\"{reason}\"}}"))
}

/// Strict reverse-path filtering on turnd's host, a second link into it:
/// a frame in the client's name (to the listener, on the bound channel) or
/// in the peer's (to the relayed address) that comes in on the wrong link
/// is dropped, as the stack drops it; the same frame from the right link
/// is relayed (the control).
#[test]
fn spoofed_sources_on_the_wrong_link_are_not_relayed() {
    if !netns::available() {
        return;
    }
    for (n, mode) in [(117u8, "native"), (118, "off")] {
        let t = Topo::new(&format!("xs{n}"), n);
        t.second_link();
        let rp = [
            "-qw",
            "net.ipv4.conf.all.rp_filter=1",
            "net.ipv4.conf.eth0.rp_filter=1",
            "net.ipv4.conf.eth1.rp_filter=1",
        ];
        let set = t.run('t', "sysctl", &rp);
        assert!(set.status.success(), "{set:?}");
        let p = start(&t, mode, "interfaces = [\"eth0\", \"eth1\"]\n");
        let mut k = call(&t, 4, "spoof");
        let (rmac, tmac) = router_to_turnd(&t);
        let (xmac, tmac1) = (frames::mac(&t.ns('x'), "eth0"), frames::mac(&t.ns('t'), "eth1"));
        let cd = channel_data(0x4000, b"in the client's name", false);
        frames::inject(&t, 'r', "tot", &[frames::udp(rmac, tmac, k.ca, k.server, &cd)]);
        assert_eq!(
            recv_from(&k.ps, Duration::from_secs(2)),
            Some((b"in the client's name".to_vec(), k.relayed)),
            "{mode}: the control"
        );
        frames::inject(&t, 'x', "eth0", &[frames::udp(xmac, tmac1, k.ca, k.server, &cd)]);
        assert_eq!(
            recv_from(&k.ps, Duration::from_millis(500)),
            None,
            "{mode}: a spoofed client relayed\n{}",
            p.log()
        );
        let from_peer = |smac, dmac| frames::udp(smac, dmac, k.pa, k.relayed, b"in the peer's name");
        frames::inject(&t, 'r', "tot", &[from_peer(rmac, tmac)]);
        assert_eq!(
            recv_channel(&mut k.c, Duration::from_secs(2)),
            Some((0x4000, b"in the peer's name".to_vec())),
            "{mode}: the control"
        );
        frames::inject(&t, 'x', "eth0", &[from_peer(xmac, tmac1)]);
        assert_eq!(
            recv_channel(&mut k.c, Duration::from_millis(500)),
            None,
            "{mode}: a spoofed peer relayed"
        );
        if mode == "native" {
            assert_eq!(passed(&t, "reverse_path"), 2, "{}", t.metrics(METRICS));
            // The controls went through the kernel.
            assert_eq!(kernel(&t, "to_peer", 4), 2, "{}", t.metrics(METRICS));
            assert_eq!(kernel(&t, "to_client", 4), 2, "{}", t.metrics(METRICS));
        }
    }
}

/// Frames the stack throws away are not relayed: a bad IPv4 header
/// checksum, a bad UDP checksum (IPv4 and IPv6, both directions) and a
/// wrong IP version nibble, each in the client's or the peer's name on the
/// right link. Only the control arrives on the far link, and with a valid
/// checksum.
#[test]
fn malformed_frames_are_not_relayed() {
    if !netns::available() {
        return;
    }
    for (n, mode) in [(119u8, "native"), (120, "off")] {
        let t = Topo::new(&format!("xm{n}"), n);
        let _p = start(&t, mode, "");
        let (rmac, tmac) = router_to_turnd(&t);
        for family in [4u8, 6] {
            let mut k = call(&t, family, "malformed");
            let to_peer =
                |payload: &[u8]| frames::udp(rmac, tmac, k.ca, k.server, &channel_data(0x4000, payload, false));
            let mut bad = Vec::new();
            let mut f = to_peer(b"bad udp checksum");
            let at = if family == 4 {
                frames::v4::UDP_SUM
            } else {
                frames::v6::UDP_SUM
            };
            f[at] ^= 0x5a;
            bad.push(f);
            let mut f = to_peer(b"wrong version");
            if family == 4 {
                f[frames::v4::VERSION] = 0x65;
                frames::fix(&mut f);
            } else {
                f[frames::v6::VERSION] = 0x40 | (f[frames::v6::VERSION] & 0x0f);
            }
            bad.push(f);
            if family == 4 {
                let mut f = to_peer(b"bad ip checksum");
                f[frames::v4::IP_SUM] ^= 0xff;
                bad.push(f);
            }
            bad.push(to_peer(b"the control"));
            let cap = frames::Capture::start(&t, 'p', "eth0");
            frames::inject(&t, 'r', "tot", &bad);
            let seen = cap.stop();
            let got: Vec<(Vec<u8>, bool)> = seen.to(k.pa).iter().map(|s| (s.payload.clone(), s.udp_ok)).collect();
            assert_eq!(got, vec![(b"the control".to_vec(), true)], "{mode} IPv{family}");
            assert_eq!(
                recv_from(&k.ps, Duration::from_secs(1)),
                Some((b"the control".to_vec(), k.relayed))
            );
            // From the peer: a bad UDP checksum, then the control.
            let mut f = frames::udp(rmac, tmac, k.pa, k.relayed, b"bad udp checksum");
            f[at] ^= 0x5a;
            let control = frames::udp(rmac, tmac, k.pa, k.relayed, b"the control");
            let cap = frames::Capture::start(&t, 'c', "eth0");
            frames::inject(&t, 'r', "tot", &[f, control]);
            let seen = cap.stop();
            let got: Vec<(Vec<u8>, bool)> = seen.to(k.ca).iter().map(|s| (s.payload.clone(), s.udp_ok)).collect();
            assert_eq!(
                got,
                vec![(channel_data(0x4000, b"the control", false), true)],
                "{mode} IPv{family} to the client"
            );
            assert_eq!(
                recv_channel(&mut k.c, Duration::from_secs(1)),
                Some((0x4000, b"the control".to_vec()))
            );
            if mode == "native" {
                assert_eq!(kernel(&t, "to_peer", family), 2, "{}", t.metrics(METRICS));
                assert_eq!(kernel(&t, "to_client", family), 2, "{}", t.metrics(METRICS));
            }
        }
        if mode == "native" {
            assert_eq!(passed(&t, "checksum"), 4, "{}", t.metrics(METRICS));
            assert_eq!(passed(&t, "malformed"), 3, "{}", t.metrics(METRICS));
        }
    }
}

/// A frame for another host's MAC (a flooding switch, a promiscuous port)
/// is not relayed; one to the broadcast MAC is left to the stack, which
/// decides as it does on the socket path; the control, to turnd's MAC, is
/// relayed.
#[test]
fn frames_for_another_mac_are_not_relayed() {
    if !netns::available() {
        return;
    }
    let mut broadcast = Vec::new();
    for (n, mode) in [(121u8, "native"), (122, "off")] {
        let t = Topo::new(&format!("xh{n}"), n);
        let _p = start(&t, mode, "");
        let (rmac, tmac) = router_to_turnd(&t);
        let k = call(&t, 4, "otherhost");
        let frame =
            |dmac, payload: &[u8]| frames::udp(rmac, dmac, k.ca, k.server, &channel_data(0x4000, payload, false));
        let cap = frames::Capture::start(&t, 'p', "eth0");
        frames::inject(
            &t,
            'r',
            "tot",
            &[
                frame([2, 0, 0, 0, 0, 0x99], b"another host"),
                frame([0xff; 6], b"broadcast"),
                frame(tmac, b"the control"),
            ],
        );
        let seen = cap.stop();
        let got: Vec<Vec<u8>> = seen.to(k.pa).iter().map(|s| s.payload.clone()).collect();
        assert!(!got.contains(&b"another host".to_vec()), "{mode}: {got:?}");
        assert!(got.contains(&b"the control".to_vec()), "{mode}: {got:?}");
        broadcast.push(got.contains(&b"broadcast".to_vec()));
        if mode == "native" {
            assert!(passed(&t, "other_host") >= 2, "{}", t.metrics(METRICS));
        }
    }
    assert_eq!(
        broadcast[0], broadcast[1],
        "a broadcast frame: native {broadcast:?} off"
    );
}

/// What a relayed datagram's IP header carries is what a relay socket's
/// does, whatever the sender's said: TOS / traffic class 0 and flow label 0
/// (RFC 8656 §14's alternate behaviours), DF and the identification as the
/// stack writes them, the host's default TTL (net.ipv4.ip_default_ttl) and
/// the interface's IPv6 hop limit, both read again on reload. Seen one hop
/// on (the router takes one off).
#[test]
fn relayed_headers_are_what_a_relay_socket_sends() {
    if !netns::available() {
        return;
    }
    let mut modes = Vec::new();
    for (n, mode) in [(123u8, "native"), (124, "off")] {
        let t = Topo::new(&format!("xi{n}"), n);
        let sysctl = |ttl: u8, hops: u8| {
            let (a, b) = (
                format!("net.ipv4.ip_default_ttl={ttl}"),
                format!("net.ipv6.conf.eth0.hop_limit={hops}"),
            );
            let out = t.run('t', "sysctl", &["-qw", &a, &b]);
            assert!(out.status.success(), "{out:?}");
        };
        sysctl(77, 66);
        let p = start(&t, mode, "");
        let (rmac, tmac) = router_to_turnd(&t);
        let mut seen = Vec::new();
        for round in 0..2 {
            if round == 1 {
                sysctl(99, 33);
                p.signal("HUP");
                let log = p.wait_log("configuration reloaded", Duration::from_secs(5));
                assert!(log.contains("configuration reloaded"), "{log}");
            }
            for family in [4u8, 6] {
                let k = call(&t, family, "headers");
                let bend = |mut f: Vec<u8>| {
                    if family == 4 {
                        f[frames::v4::TOS] = 0xb9;
                        f[frames::v4::TTL] = 9;
                        f[frames::v4::ID..frames::v4::ID + 2].copy_from_slice(&[0x42, 0x42]);
                        f[frames::v4::FRAG] = 0;
                    } else {
                        // Traffic class 0xb9, flow label 0xabcde.
                        f[14..18].copy_from_slice(&[0x6b, 0x9a, 0xbc, 0xde]);
                        f[frames::v6::HOP_LIMIT] = 9;
                    }
                    frames::fix(&mut f);
                    f
                };
                let before = (kernel(&t, "to_peer", family), kernel(&t, "to_client", family));
                let cd = channel_data(0x4000, b"to the peer", false);
                let cap = frames::Capture::start(&t, 'p', "eth0");
                frames::inject(&t, 'r', "tot", &[bend(frames::udp(rmac, tmac, k.ca, k.server, &cd))]);
                let to_peer = cap.stop().to(k.pa).into_iter().cloned().collect::<Vec<_>>();
                let cap = frames::Capture::start(&t, 'c', "eth0");
                let f = frames::udp(rmac, tmac, k.pa, k.relayed, b"to the client");
                frames::inject(&t, 'r', "tot", &[bend(f)]);
                let to_client = cap.stop().to(k.ca).into_iter().cloned().collect::<Vec<_>>();
                assert_eq!((to_peer.len(), to_client.len()), (1, 1), "{mode} IPv{family}");
                if mode == "native" {
                    let after = (kernel(&t, "to_peer", family), kernel(&t, "to_client", family));
                    assert_eq!(after, (before.0 + 1, before.1 + 1), "{mode}: the kernel relayed them");
                }
                for (dir, s) in [("to_peer", &to_peer[0]), ("to_client", &to_client[0])] {
                    assert!(s.ip_ok && s.udp_ok, "{mode} {dir}: {s:?}");
                    // The identification is the stack's (a hash-based
                    // counter per destination): nonzero in both modes.
                    seen.push((round, family, dir, s.tos, s.ttl, s.df, s.id != 0, s.flow));
                }
            }
        }
        modes.push(seen);
    }
    assert_eq!(modes[0], modes[1], "native, then off");
    for &(round, family, dir, tos, ttl, df, id, flow) in &modes[1] {
        let want = match (round, family) {
            (0, 4) => 76,
            (0, _) => 65,
            (_, 4) => 98,
            _ => 32,
        };
        let v4 = family == 4;
        assert_eq!(
            (tos, ttl, df, id, flow),
            (0, want, v4, v4, 0),
            "round {round} IPv{family} {dir}"
        );
    }
}

/// A smaller MTU appears behind the router (its link to the peer drops to
/// 1300 bytes): the first large datagram is lost while the router's ICMP
/// teaches turnd's host the path MTU, and every later one arrives, in
/// fragments, in both modes (the kernel path used to reuse its cached next
/// hop for a second, sending full-size datagrams into the black hole).
#[test]
fn a_smaller_path_mtu_behind_the_router_applies_at_once() {
    if !netns::available() {
        return;
    }
    for (n, mode) in [(125u8, "native"), (126, "off")] {
        let t = Topo::new(&format!("xt{n}"), n);
        let _p = start(&t, mode, "");
        for family in [4u8, 6] {
            let mut k = call(&t, family, "pmtu");
            let big = |i: u8| vec![i; 1400];
            for i in 0..3 {
                k.c.send(&channel_data(0x4000, &big(i), false));
                assert_eq!(recv_from(&k.ps, Duration::from_secs(2)), Some((big(i), k.relayed)));
            }
            let mtu = |v: &str| {
                let out = t.run('r', "ip", &["link", "set", "top", "mtu", v]);
                assert!(out.status.success(), "{out:?}");
            };
            mtu("1300");
            k.c.send(&channel_data(0x4000, &big(10), false));
            std::thread::sleep(Duration::from_millis(300));
            for i in 11..21 {
                k.c.send(&channel_data(0x4000, &big(i), false));
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut got = Vec::new();
            while let Some((p, _)) = recv_from(&k.ps, Duration::from_millis(500)) {
                got.push(p[0]);
            }
            got.retain(|&i| i >= 11);
            assert_eq!(got, (11..21).collect::<Vec<u8>>(), "{mode} IPv{family}");
            mtu("1500");
        }
    }
}

/// An IPv6 allocation asked for a channel or a permission to an
/// IPv4-mapped address (`::ffff:10.n.3.2`, an allowed IPv4 peer in IPv6
/// spelling): 443 in both modes, and nothing leaves turnd's host for it;
/// the control (the warm-up to the peer's real IPv6 address) does.
#[test]
fn ipv4_mapped_peers_are_refused() {
    if !netns::available() {
        return;
    }
    for (n, mode) in [(127u8, "native"), (128, "off")] {
        let t = Topo::new(&format!("xv{n}"), n);
        let _p = start(&t, mode, "");
        let cap = frames::Capture::start(&t, 'r', "tot");
        let mut k = call(&t, 6, "mapped");
        let mapped: SocketAddr = format!("[::ffff:{}]:{}", t.ip('p', 4), k.pa.port())
            .parse()
            .expect("address");
        let r = k.c.request(&build(
            req(METHOD_CHANNEL_BIND),
            vec![channel(0x4001), common::stunc::peer(mapped)],
            Some(&k.cred),
            true,
        ));
        assert_eq!(error_code(&r), Some(443), "{mode}: {r}");
        let r = k.c.request(&build(
            req(METHOD_CREATE_PERMISSION),
            vec![common::stunc::peer(mapped)],
            Some(&k.cred),
            true,
        ));
        assert_eq!(error_code(&r), Some(443), "{mode}: {r}");
        k.c.send(&channel_data(0x4001, b"to a mapped peer", false));
        let seen = cap.stop();
        assert!(seen.to(mapped).is_empty(), "{mode}: {:?}", seen.to(mapped));
        assert_eq!(seen.to(k.pa).len(), 1, "{mode}: the control");
    }
}

/// Every frame the kernel path leaves to the stack is counted by reason: a
/// flood of datagrams for no channel (`unknown`), pings (`not_udp`), a
/// fragment (`options`).
#[test]
fn frames_left_to_the_stack_are_counted_by_reason() {
    if !netns::available() {
        return;
    }
    let t = Topo::new("xq129", 129);
    let _p = start(&t, "native", "");
    let s = t.udp('c', 4);
    let nobody = SocketAddr::new(t.ip('t', 4), 9999);
    for _ in 0..50 {
        s.send_to(b"nobody here", nobody).expect("send");
    }
    assert!(
        t.wait_metric(
            METRICS,
            "turnd_xdp_passed_total{reason=\"unknown\"}",
            50,
            Duration::from_secs(3)
        ) >= 50,
        "{}",
        t.metrics(METRICS)
    );
    let ping = t.run(
        'c',
        "ping",
        &["-c", "3", "-i", "0.2", "-W", "1", &t.ip('t', 4).to_string()],
    );
    assert!(ping.status.success(), "{ping:?}");
    assert!(passed(&t, "not_udp") >= 3, "{}", t.metrics(METRICS));
    let (rmac, tmac) = router_to_turnd(&t);
    let mut f = frames::udp(rmac, tmac, s.local_addr().expect("addr"), nobody, b"first of two");
    f[frames::v4::FRAG] = 0x20;
    frames::fix(&mut f);
    let before = passed(&t, "options");
    frames::inject(&t, 'r', "tot", &[f]);
    assert_eq!(
        t.wait_metric(
            METRICS,
            "turnd_xdp_passed_total{reason=\"options\"}",
            before + 1,
            Duration::from_secs(3)
        ),
        before + 1
    );
}
