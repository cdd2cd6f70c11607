//! Interop with the `turn` crate's client over real sockets: allocate, create
//! a permission, and echo through a UDP peer, first via Send/Data
//! indications and then via a channel.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use std::time::Duration;

use common::server::*;

/// Between two echoes: long enough for the client to finish binding its channel.
const PAUSE: Duration = Duration::from_millis(20);
use webrtc_util::Conn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_permission_send_indications_then_channel() {
    let srv = TestServer::start("");
    let (peer, _echo) = echo_peer();
    let (proxy, counts, _p) = counting_proxy(srv.addr);
    let (user, pass) = rest_creds("alice");
    let c = turn_client(proxy, &user, &pass).await;
    let mapped = c.send_binding_request().await.expect("binding");
    assert_eq!(mapped.ip().to_string(), "127.0.0.1");
    let relay = c.allocate().await.expect("allocate");
    let relayed = relay.local_addr().expect("relayed address");
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");
    assert_eq!(srv.allocations(), 1);
    echo_through(&relay, peer, 40, PAUSE).await;
    let up_ind = counts.send_indications.load(Ordering::Relaxed);
    let up_chan = counts.channel_data_up.load(Ordering::Relaxed);
    let down = counts.data_indications.load(Ordering::Relaxed) + counts.channel_data_down.load(Ordering::Relaxed);
    assert!(up_ind >= 1, "some data went as Send indications ({up_ind})");
    assert!(up_chan >= 1, "then over the channel ({up_chan})");
    assert_eq!(up_ind + up_chan, 40);
    assert_eq!(down, 40);
    assert!(
        counts.channel_data_down.load(Ordering::Relaxed) >= 1,
        "echoes came back as ChannelData"
    );
    relay.close().await.expect("close");
    c.close().await.expect("close client");
    assert!(
        srv.wait_idle(Duration::from_secs(5)),
        "allocation and port released after Refresh 0"
    );
}

/// Credentials computed the way Matrix Synapse does for `turn_shared_secret`
/// (synapse/rest/client/voip.py): username "<expiry>:<mxid>", password
/// base64(HMAC-SHA1(secret, username)); the expiry is the clock in ms plus
/// `turn_user_lifetime` (default 1 h), divided by 1000 and printed with %d.
/// Computed in Python, as Synapse does, not with turnd's code.
fn synapse_credentials(user_id: &str) -> (String, String) {
    let script = r#"
import base64, hashlib, hmac, sys, time
secret, user_id = sys.argv[1], sys.argv[2]
user_lifetime = 3600000
expiry = (int(time.time() * 1000) + user_lifetime) / 1000
username = "%d:%s" % (expiry, user_id)
mac = hmac.new(secret.encode(), msg=username.encode(), digestmod=hashlib.sha1)
print(username)
print(base64.b64encode(mac.digest()).decode("ascii"))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, SECRET, user_id])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf8");
    let mut lines = text.lines();
    (
        lines.next().expect("username").into(),
        lines.next().expect("password").into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_synapse_turn_shared_secret_credentials_work() {
    let srv = TestServer::start("");
    let (peer, _echo) = echo_peer();
    let (user, pass) = synapse_credentials("@alice:matrix.example.org");
    assert!(user.ends_with(":@alice:matrix.example.org"));
    let c = turn_client(srv.addr, &user, &pass).await;
    let relay = c.allocate().await.expect("allocate with Synapse credentials");
    echo_through(&relay, peer, 5, PAUSE).await;
    relay.close().await.expect("close");
    c.close().await.expect("close client");
    // A wrong secret is refused.
    let (bad_user, _) = synapse_credentials("@mallory:matrix.example.org");
    let c = turn_client(srv.addr, &bad_user, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=").await;
    assert!(c.allocate().await.is_err());
    c.close().await.expect("close client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_never_tears_down_the_allocation() {
    let srv = TestServer::start("");
    let (peer, _echo) = echo_peer();
    // A port nobody listens on: the kernel answers with ICMP port unreachable.
    let dead: SocketAddr = {
        let s = std::net::UdpSocket::bind((PEER_IP, 0)).expect("bind");
        s.local_addr().expect("addr")
    };
    let (user, pass) = rest_creds("alice");
    let c = turn_client(srv.addr, &user, &pass).await;
    let relay = c.allocate().await.expect("allocate");
    echo_through(&relay, peer, 3, PAUSE).await;
    for _ in 0..50 {
        relay.send_to(b"into the void", dead).await.expect("send_to");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    echo_through(&relay, peer, 10, PAUSE).await;
    assert_eq!(srv.allocations(), 1);
    relay.close().await.expect("close");
    c.close().await.expect("close client");
}

/// IPv6 end to end: Binding with the `turn` crate's client, then two raw
/// IPv6 allocations (REQUESTED-ADDRESS-FAMILY) relaying to each other. On
/// loopback the only IPv6 address is ::1, turnd's own, so the peer is the
/// other allocation: exactly what turnd always permits, handed over inside
/// the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_over_ipv6() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        skip("no IPv6 loopback");
        return;
    }
    let srv = TestServer::start_on("::1", "[peers]\n");
    let (user, pass) = rest_creds("alice");
    let c = turn_client(srv.addr, &user, &pass).await;
    // The turn crate's client sends no REQUESTED-ADDRESS-FAMILY; turnd's
    // relay for an IPv6 client without it is IPv4 (RFC 8656 §7.2), so ask
    // the wire directly for the IPv6 case below.
    let mapped = c.send_binding_request().await.expect("binding over IPv6");
    assert!(mapped.is_ipv6());
    c.close().await.expect("close");

    use common::stunc::*;
    use stun::attributes::ATTR_NONCE;
    use stun::message::*;
    struct V6 {
        sock: std::net::UdpSocket,
        cred: Cred,
        relayed: SocketAddr,
    }
    let ask = |sock: &std::net::UdpSocket, m: &Message| {
        sock.send_to(&m.raw, srv.addr).expect("send");
        let mut b = [0u8; 2048];
        let (n, _) = sock.recv_from(&mut b).expect("answer");
        decode(&b[..n])
    };
    let v6 = || -> Attrs { vec![transport_udp(), Box::new(turn::proto::reqfamily::REQUESTED_FAMILY_IPV6)] };
    let allocate = |user: &str| {
        let sock = std::net::UdpSocket::bind("[::1]:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        let r = ask(&sock, &build(req(METHOD_ALLOCATE), v6(), None, false));
        let (user, pass) = rest_creds(user);
        let cred = Cred {
            user,
            realm: REALM.into(),
            pass,
            nonce: text(&r, ATTR_NONCE).expect("nonce"),
        };
        let r = ask(&sock, &build(req(METHOD_ALLOCATE), v6(), Some(&cred), false));
        let relayed = relayed(&r).expect("relayed");
        assert_eq!(relayed.ip().to_string(), "::1");
        V6 { sock, cred, relayed }
    };
    let (a, b) = (allocate("alice"), allocate("bob"));
    for (x, y) in [(&a, &b), (&b, &a)] {
        let r = ask(
            &x.sock,
            &build(
                req(METHOD_CREATE_PERMISSION),
                vec![common::stunc::peer(y.relayed)],
                Some(&x.cred),
                false,
            ),
        );
        assert!(is_success(&r), "{r}");
    }
    let send = build(
        MessageType::new(METHOD_SEND, CLASS_INDICATION),
        vec![common::stunc::peer(b.relayed), data(b"six")],
        None,
        false,
    );
    a.sock.send_to(&send.raw, srv.addr).expect("send");
    let mut buf = [0u8; 2048];
    let (n, _) = b.sock.recv_from(&mut buf).expect("Data indication");
    assert_eq!(data_indication(&decode(&buf[..n])), Some((a.relayed, b"six".to_vec())));
    for x in [&a, &b] {
        let r = ask(
            &x.sock,
            &build(req(METHOD_REFRESH), vec![lifetime_attr(0)], Some(&x.cred), false),
        );
        assert!(is_success(&r));
    }
    assert!(srv.wait_idle(Duration::from_secs(5)));
}
