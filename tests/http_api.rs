//! The HTTP side over real sockets: access workers, `/api/ice` (whose
//! credentials must work on the relay), its rate limit, HTTPS, and the
//! WebSocket rooms (limits, routing, malformed input, rate limit, cleanup).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::server::{turn_client, TestServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "test-access-key-1";

fn keyed(extra: &str) -> TestServer {
    TestServer::start(&format!(
        "[http]\nlisten = [\"127.0.0.1:0\"]\naccess-key = \"{KEY}\"\n{extra}"
    ))
}

/// One HTTP/1.1 request; returns (status, headers, body).
fn get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response");
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status");
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn json_body(body: &str) -> Value {
    // Bodies may be chunked: the JSON object is between the outer braces.
    let start = body.find('{').expect("json");
    let end = body.rfind('}').expect("json");
    serde_json::from_str(&body[start..=end]).expect("valid JSON")
}

#[test]
fn page_and_credentials_need_the_access_key() {
    let s = keyed("");
    let a = s.http_addr();
    let (st, _, body) = get(a, "/", "");
    assert_eq!(st, 401);
    assert!(body.contains("access key"));
    assert_eq!(get(a, "/?key=wrong-key-000000", "").0, 401);
    let (st, head, body) = get(a, &format!("/?key={KEY}"), "");
    assert_eq!(st, 200);
    assert!(body.contains(&format!("content=\"{KEY}\"")), "the page knows its key");
    assert!(head.contains("referrer-policy: no-referrer"), "{head}");
    assert!(head.contains("content-security-policy: default-src 'self'"), "{head}");
    let (st, _, body) = get(a, "/api/ice", "");
    assert_eq!(st, 401);
    assert!(!body.contains("iceServers") && !body.contains("credential"));
    assert_eq!(get(a, "/api/ice", "Authorization: Bearer nope-nope-nope\r\n").0, 401);
    // The page's assets and the health check carry nothing secret.
    assert_eq!(get(a, "/assets/app.js", "").0, 200);
    let (st, _, body) = get(a, "/healthz", "");
    assert_eq!((st, body.trim()), (200, "ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_credentials_are_short_lived_and_work_on_the_relay() {
    let s = keyed("");
    let a = s.http_addr();
    let (st, head, body) = tokio::task::spawn_blocking(move || get(a, &format!("/api/ice?key={KEY}"), ""))
        .await
        .expect("join");
    assert_eq!(st, 200);
    assert!(head.contains("cache-workers: no-store"));
    let v = json_body(&body);
    assert_eq!(v["ttl"], json!(3600));
    let port = s.addr.port();
    assert_eq!(v["iceServers"][0]["urls"], json!([format!("stun:127.0.0.1:{port}")]));
    let turn = &v["iceServers"][1];
    assert_eq!(turn["urls"], json!([format!("turn:127.0.0.1:{port}?transport=udp")]));
    let user = turn["username"].as_str().expect("username");
    let (expiry, name) = user.split_once(':').expect("expiry:user");
    let expiry: u64 = expiry.parse().expect("unix time");
    let now = turnd::serve::unix_now();
    assert!(
        (now + 3590..=now + 3610).contains(&expiry),
        "expires in an hour: {expiry} vs {now}"
    );
    assert!(name.starts_with("web-"));
    let c = turn_client(s.addr, user, turn["credential"].as_str().expect("credential")).await;
    let relay = c.allocate().await.expect("the minted credential allocates");
    assert_eq!(s.allocations(), 1);
    drop(relay);
    c.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_check_page_and_plan() {
    let s = keyed("");
    let a = s.http_addr();
    let port = s.addr.port();
    let (check, report, plan, locked, unkeyed) = tokio::task::spawn_blocking(move || {
        (
            get(a, &format!("/check?key={KEY}"), ""),
            get(a, "/check/report", ""),
            get(a, &format!("/api/check?key={KEY}"), ""),
            get(a, "/check", ""),
            get(a, "/api/check", ""),
        )
    })
    .await
    .expect("join");
    // The page needs the key, like the call page; a shared report does
    // not, and carries no key.
    assert_eq!(locked.0, 401);
    assert_eq!(check.0, 200);
    assert!(check.2.contains("/assets/check.js") && check.2.contains(&format!("content=\"{KEY}\"")));
    assert_eq!(report.0, 200);
    assert!(report.2.contains("content=\"\"") && !report.2.contains(KEY));
    assert_eq!(unkeyed.0, 401);
    assert!(!unkeyed.2.contains("credential"));
    // The plan: one STUN URL (no second STUN port configured), TURN over
    // UDP only (the only listener), one credential that works.
    assert_eq!(plan.0, 200);
    let v = json_body(&plan.2);
    assert_eq!(v["stun"], json!(format!("stun:127.0.0.1:{port}")));
    assert_eq!(v["stun2"], Value::Null);
    assert_eq!(v["turn"]["udp"], json!(format!("turn:127.0.0.1:{port}?transport=udp")));
    assert_eq!((&v["turn"]["tcp"], &v["turn"]["tls"]), (&Value::Null, &Value::Null));
    let c = turn_client(
        s.addr,
        v["username"].as_str().expect("username"),
        v["credential"].as_str().expect("credential"),
    )
    .await;
    let relay = c.allocate().await.expect("the check's credential allocates");
    drop(relay);
    c.close().await.expect("close");
}

#[test]
fn ice_is_rate_limited_per_address() {
    let s = keyed("ice-requests-per-minute = 5\n");
    let a = s.http_addr();
    for i in 0..5 {
        assert_eq!(get(a, &format!("/api/ice?key={KEY}"), "").0, 200, "request {i}");
    }
    let (st, head, body) = get(a, &format!("/api/ice?key={KEY}"), "");
    assert_eq!(st, 429);
    assert!(head.contains("retry-after: "), "{head}");
    assert!(!body.contains("credential"));
    // Other routes are not affected.
    assert_eq!(get(a, &format!("/?key={KEY}"), "").0, 200);
}

#[test]
fn open_access_needs_no_key() {
    let s = TestServer::start("[http]\nlisten = [\"127.0.0.1:0\"]\naccess = \"open\"\n");
    let a = s.http_addr();
    let (st, _, body) = get(a, "/", "");
    assert_eq!(st, 200);
    assert!(body.contains("content=\"\""));
    assert_eq!(get(a, "/api/ice", "").0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_configured_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let (cp, kp) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cp, cert.cert.pem()).expect("write");
    std::fs::write(&kp, cert.signing_key.serialize_pem()).expect("write");
    let s = TestServer::start(&format!(
        "[http]\nlisten = []\nhttps-listen = [\"127.0.0.1:0\"]\naccess = \"open\"\n[tls]\ncert-file = \"{}\"\nkey-file = \"{}\"\n",
        cp.display(),
        kp.display()
    ));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // A client that connects and says nothing holds up nobody: handshakes
    // run in their own tasks (with a deadline).
    let _silent = std::net::TcpStream::connect(s.https_addr()).expect("connect");
    let tcp = tokio::net::TcpStream::connect(s.https_addr()).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the configured certificate");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(addr: SocketAddr) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?key={KEY}"))
        .await
        .expect("websocket");
    ws
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// The next text message, within 3 s.
async fn recv(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(3), ws.next())
            .await
            .expect("a message within 3 s")
            .expect("open")
            .expect("ok");
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).expect("JSON from the server");
        }
    }
}

/// Nothing arrives within 300 ms.
async fn silent(ws: &mut Ws) {
    let r = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
    assert!(r.is_err(), "unexpected message: {r:?}");
}

async fn join(ws: &mut Ws, room: &str) -> String {
    join_with_token(ws, room).await.0
}

/// Joins `room`; the id and the resume token.
async fn join_with_token(ws: &mut Ws, room: &str) -> (String, String) {
    send(ws, json!({"type": "join", "room": room})).await;
    let v = recv(ws).await;
    assert_eq!(v["type"], "peers", "{v}");
    let token = v["token"].as_str().expect("a resume token");
    assert!(token.len() >= 32, "{token}");
    (v["you"].as_str().expect("id").to_string(), token.to_string())
}

/// A relayed message without its `seq` (which must be there).
fn unseq(mut v: Value) -> Value {
    let seq = v.as_object_mut().and_then(|o| o.remove("seq"));
    assert!(seq.as_ref().is_some_and(Value::is_u64), "no seq in {v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_needs_the_key() {
    let s = keyed("");
    let r = tokio_tungstenite::connect_async(format!("ws://{}/ws?key=wrong-key-000000", s.http_addr())).await;
    match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
}

/// A WebSocket upgrade with `origin` (None: no Origin header); its status.
async fn ws_status(addr: std::net::SocketAddr, origin: Option<&str>) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/ws?key={KEY}")
        .into_client_request()
        .expect("request");
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().expect("header"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("websocket: {e}"),
    }
}

/// Another site's page cannot open the signaling WebSocket (with the key
/// it may have obtained, or with `access = "open"`): only the page's own
/// origin, origins the operator lists, and non-browser clients (no Origin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_websockets_are_refused_unless_allowed() {
    let s = keyed("allowed-origins = [\"https://app.example.org\"]\n");
    let a = s.http_addr();
    assert_eq!(
        ws_status(a, Some(&format!("http://{a}"))).await,
        101,
        "the page's own origin"
    );
    assert_eq!(ws_status(a, None).await, 101, "no Origin: not a browser");
    assert_eq!(
        ws_status(a, Some("https://app.example.org")).await,
        101,
        "a listed origin"
    );
    assert_eq!(ws_status(a, Some("https://evil.example")).await, 403);
    assert_eq!(ws_status(a, Some(&format!("http://{a}.evil.example"))).await, 403);
    assert_eq!(ws_status(a, Some("null")).await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_route_limit_and_clean_up() {
    let s = keyed("");
    let a = s.http_addr();
    let mut m = Vec::new();
    let mut ids = Vec::new();
    for i in 0..4 {
        let mut w = ws(a).await;
        let id = join(&mut w, "room").await;
        for earlier in m.iter_mut().take(i) {
            let v = recv(earlier).await;
            assert_eq!(
                (v["type"].as_str(), v["from"].as_str()),
                (Some("join"), Some(id.as_str()))
            );
        }
        m.push(w);
        ids.push(id);
    }
    // The fifth is refused; the four are not disturbed.
    let mut fifth = ws(a).await;
    send(&mut fifth, json!({"type": "join", "room": "room"})).await;
    assert_eq!(recv(&mut fifth).await["code"], "room-full");
    for w in m.iter_mut() {
        silent(w).await;
    }
    // A second room next door.
    let mut other = ws(a).await;
    let other_id = join(&mut other, "other").await;

    // Offers go to the addressed member only, with the sender's id.
    send(
        &mut m[0],
        json!({"type": "offer", "to": ids[2], "payload": {"sdp": "v=0"}}),
    )
    .await;
    let v = recv(&mut m[2]).await;
    assert_eq!(
        unseq(v),
        json!({"type": "offer", "from": ids[0], "payload": {"sdp": "v=0"}})
    );
    silent(&mut m[1]).await;
    silent(&mut m[3]).await;
    // Nothing crosses rooms.
    send(&mut m[0], json!({"type": "candidate", "to": other_id, "payload": {}})).await;
    assert_eq!(recv(&mut m[0]).await["code"], "no-such-peer");
    silent(&mut other).await;

    // Malformed input: an error to the sender, nobody else hears of it.
    for (bad, code) in [
        ("{nope", "bad-json"),
        (r#"{"type":"subscribe"}"#, "unknown-type"),
        (r#"{"type":"offer"}"#, "bad-message"),
    ] {
        m[1].send(Message::text(bad)).await.expect("send");
        assert_eq!(recv(&mut m[1]).await["code"], code, "{bad}");
    }
    m[1].send(Message::binary(vec![1u8, 2, 3])).await.expect("send");
    assert_eq!(recv(&mut m[1]).await["code"], "bad-json");
    let big = json!({"type": "offer", "to": ids[0], "payload": "x".repeat(70 * 1024)});
    send(&mut m[1], big).await;
    assert_eq!(recv(&mut m[1]).await["code"], "too-large");
    silent(&mut m[0]).await;
    // Still a working member afterwards.
    send(&mut m[1], json!({"type": "answer", "to": ids[0], "payload": {}})).await;
    assert_eq!(recv(&mut m[0]).await["type"], "answer");
    send(&mut other, json!({"type": "join", "room": "other"})).await;
    assert_eq!(recv(&mut other).await["code"], "already-joined");

    // Leaving: the others hear it, then a page that closes its socket
    // (a close frame: the tab was closed).
    send(&mut m[3], json!({"type": "leave"})).await;
    for w in m.iter_mut().take(3) {
        assert_eq!(unseq(recv(w).await), json!({"type": "leave", "from": ids[3]}));
    }
    let mut gone = m.remove(2);
    gone.close(None).await.expect("close");
    for w in m.iter_mut().take(2) {
        assert_eq!(unseq(recv(w).await), json!({"type": "leave", "from": ids[2]}));
    }
    // The room has space again.
    let mut late = ws(a).await;
    send(&mut late, json!({"type": "join", "room": "room"})).await;
    let v = recv(&mut late).await;
    assert_eq!(v["peers"].as_array().map(Vec::len), Some(2), "{v}");
}

/// A page whose connection drops (the phone changed networks) resumes as
/// the same participant on a new connection: the others see no leave and
/// no join, and what was sent to it meanwhile arrives. A connection closed
/// with the page's "reconnecting" code (4000) may be resumed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_participant_resumes_as_itself() {
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    let s = keyed("");
    let a = s.http_addr();
    let mut x = ws(a).await;
    let mut y = ws(a).await;
    let (xid, token) = join_with_token(&mut x, "r").await;
    let yid = join(&mut y, "r").await;
    let joined = recv(&mut x).await;
    assert_eq!(joined["seq"], 1);
    send(&mut x, json!({"type": "ping", "ack": 1})).await;
    assert_eq!(recv(&mut x).await, json!({"type": "pong", "ack": 0}));
    // x's socket goes away without a close frame; y's offer is kept for x.
    drop(x);
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(
        &mut y,
        json!({"type": "offer", "to": xid, "payload": "restart", "seq": 1}),
    )
    .await;
    silent(&mut y).await;
    let mut x = ws(a).await;
    send(&mut x, json!({"type": "join", "room": "r", "resume": token, "ack": 1})).await;
    let v = recv(&mut x).await;
    assert_eq!(
        (v["type"].as_str(), v["you"].as_str(), v["peers"].clone()),
        (Some("resumed"), Some(xid.as_str()), json!([yid]))
    );
    let v = recv(&mut x).await;
    assert_eq!((v["payload"].as_str(), v["seq"].as_u64()), (Some("restart"), Some(2)));
    silent(&mut y).await;
    // Closed with 4000: resumable as well.
    x.close(Some(CloseFrame {
        code: CloseCode::from(4000),
        reason: "reconnecting".into(),
    }))
    .await
    .expect("close");
    let mut x = ws(a).await;
    send(&mut x, json!({"type": "join", "room": "r", "resume": token, "ack": 2})).await;
    assert_eq!(recv(&mut x).await["type"], "resumed");
    silent(&mut y).await;
    // The same token on a third connection takes over; the second is closed.
    let mut x3 = ws(a).await;
    send(&mut x3, json!({"type": "join", "room": "r", "resume": token, "ack": 2})).await;
    assert_eq!(recv(&mut x3).await["type"], "resumed");
    let end = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match x.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    });
    end.await.expect("the replaced connection is closed");
    send(&mut y, json!({"type": "answer", "to": xid, "payload": "a", "seq": 2})).await;
    assert_eq!(recv(&mut x3).await["payload"], "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_rate_limited_per_connection() {
    let s = keyed("ws-messages-per-second = 2\n");
    let a = s.http_addr();
    let mut x = ws(a).await;
    let mut y = ws(a).await;
    join(&mut x, "r").await;
    let yid = join(&mut y, "r").await;
    recv(&mut x).await; // y joined
    for i in 0..40 {
        send(&mut x, json!({"type": "candidate", "to": yid, "payload": {"n": i}})).await;
    }
    let mut delivered = 0;
    while tokio::time::timeout(Duration::from_millis(500), y.next()).await.is_ok() {
        delivered += 1;
    }
    let mut limited = 0;
    while let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::from_millis(300), x.next()).await {
        if t.as_str().contains("rate-limited") {
            limited += 1;
        }
    }
    // A burst of 10 × 2 passes (give or take refill), the rest is refused.
    assert!((18..=24).contains(&delivered), "delivered {delivered}");
    assert_eq!(delivered + limited, 40, "every message delivered or refused");
    // Other connections are unaffected.
    send(&mut y, json!({"type": "leave"})).await;
    assert_eq!(recv(&mut x).await["type"], "leave");
}
