//! One lifecycle: stopping turnd ends everything it runs at once. Every
//! kind of open connection (TURN over TCP and TLS with allocations, a page
//! keep-alive connection, a metrics connection) is closed, and every port
//! it held (UDP and TCP listeners, relay ports, the page, the metrics
//! listener) can be bound again.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use common::server::*;

/// What a read on a connection turnd should have closed returns: the close
/// (end of stream or reset), not a timeout.
fn closed<S: Read>(s: &mut S, what: &str) {
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                panic!("{what}: still open after turnd stopped")
            }
            Err(_) => return,
        }
    }
}

/// An HTTP/1.1 keep-alive connection that has had one answer.
fn keep_alive(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = s.read(&mut buf).expect("answer");
        assert!(n > 0, "answered");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
    s
}

#[test]
fn stopping_turnd_closes_every_connection_and_frees_every_port() {
    let srv = TestServer::start_streams(
        "[http]\nlisten = [\"127.0.0.1:0\"]\naccess = \"open\"\n[metrics]\nlisten = [\"127.0.0.1:0\"]\n",
    );
    let d = srv.daemon();
    let udp = srv.addr;
    let (tcp, tls) = (srv.stream("tcp"), srv.stream("tls"));
    let page = d.http.as_ref().expect("page").http[0];
    let metrics = d.ops.as_ref().expect("metrics").metrics[0];

    let mut over_tcp = common::streamc::tcp(tcp);
    let (_, relayed_tcp) = over_tcp.allocate("tcp");
    let mut over_tls = common::streamc::tls(tls);
    let (_, relayed_tls) = over_tls.allocate("tls");
    let mut over_udp = common::streamc::udp(udp);
    let (_, relayed_udp) = over_udp.allocate("udp");
    let mut page_conn = keep_alive(page, "/healthz");
    let mut metrics_conn = keep_alive(metrics, "/metrics");
    assert_eq!(srv.allocations(), 3);

    let took = srv.stop();
    eprintln!("stopped in {took:?}");

    closed(&mut over_tcp.io, "TURN over TCP");
    closed(&mut over_tls.io, "TURN over TLS");
    closed(&mut page_conn, "the page's keep-alive connection");
    closed(&mut metrics_conn, "the metrics connection");
    for a in [tcp, tls, page, metrics] {
        TcpListener::bind(a).unwrap_or_else(|e| panic!("tcp {a} still held: {e}"));
    }
    for a in [udp, relayed_tcp, relayed_tls, relayed_udp] {
        UdpSocket::bind(a).unwrap_or_else(|e| panic!("udp {a} still held: {e}"));
    }
}
