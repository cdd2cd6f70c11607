//! Interop with coturn's own test clients (Debian package `coturn`):
//! `turnutils_uclient` against `turnutils_peer` with REST credentials, 50
//! sessions × 1000 messages, over channels, Send indications and
//! client-to-client, over UDP, TCP (`-t`), TLS (`-t -S`) and both on the
//! `auto` listener; and `turnutils_stunclient`. Each uclient run has its own
//! source address so leftovers of another run never share a 5-tuple.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::process::free_udp_port;
use common::server::*;

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_peer() -> Option<(Peer, u16)> {
    let bin = tool("turnutils_peer")?;
    let port = free_udp_port();
    let child = Command::new(bin)
        .args(["-L", PEER_IP, "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnutils_peer starts");
    // Ready once its port is taken.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::UdpSocket::bind((PEER_IP, port)).is_ok() {
        assert!(
            std::time::Instant::now() < end,
            "turnutils_peer never bound {PEER_IP}:{port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((Peer(child), port))
}

/// Runs uclient; returns its exit status and its output.
fn uclient(server_port: u16, local: &str, mode: &[&str], peer_port: Option<u16>) -> Option<(i32, String)> {
    let bin = tool("turnutils_uclient")?;
    let mut args: Vec<String> = mode.iter().map(|s| s.to_string()).collect();
    args.extend(
        [
            "-W", SECRET, "-m", "50", "-n", "1000", "-l", "172", "-z", "5", "-L", local,
        ]
        .map(String::from),
    );
    args.extend(["-p".into(), server_port.to_string()]);
    if let Some(p) = peer_port {
        args.extend(["-e".into(), PEER_IP.into(), "-r".into(), p.to_string()]);
    }
    args.push("127.0.0.1".into());
    let out = Command::new("timeout")
        .arg("180")
        .arg(bin)
        .args(&args)
        .output()
        .expect("uclient runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    Some((out.status.code().unwrap_or(-1), text))
}

fn lost_packets(out: &str) -> Option<u64> {
    let line = out.lines().rev().find(|l| l.contains("Total lost packets"))?;
    line.split("Total lost packets")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn check(mode: &[&str], local: &str, with_peer: bool) {
    check_on(mode, local, with_peer, "udp");
}

/// `listener`: "udp", or the stream listener ("tcp", "tls", "auto") that
/// uclient's `-t` (TCP) and `-t -S` (TLS) go to.
fn check_on(mode: &[&str], local: &str, with_peer: bool, listener: &str) {
    check_with(mode, local, with_peer, listener, "");
}

/// [`check_on`] with `relay` added to turnd's `[relay]` table.
fn check_with(mode: &[&str], local: &str, with_peer: bool, listener: &str, relay: &str) {
    // A short lifetime so that allocations uclient does not delete on exit
    // expire within the test: afterwards nothing may be left. uclient picks
    // channel numbers from the RFC 5766 range (up to 0x7FFF), which RFC
    // 8656 reserves above 0x4FFF: turnd accepts them only when told to.
    let srv = TestServer::start_streams(&format!(
        "[relay]\nmax-allocations-per-user = 1000\ndefault-lifetime = \"20s\"\nmax-lifetime = \"20s\"\nrfc5766-channels = true\n{relay}",
    ));
    let port = match listener {
        "udp" => srv.addr.port(),
        kind => srv.stream(kind).port(),
    };
    let peer = if with_peer {
        match start_peer() {
            Some(p) => Some(p),
            None => return,
        }
    } else {
        None
    };
    let Some((code, out)) = uclient(port, local, mode, peer.as_ref().map(|p| p.1)) else {
        return;
    };
    let tail: Vec<&str> = out.lines().rev().take(8).collect();
    assert_eq!(code, 0, "uclient {mode:?} failed: {tail:#?}");
    assert_eq!(lost_packets(&out), Some(0), "uclient {mode:?} lost packets: {tail:#?}");
    assert!(
        srv.wait_idle(Duration::from_secs(30)),
        "allocations ({}) or ports ({}) left after uclient {mode:?}",
        srv.allocations(),
        srv.ports_in_use()
    );
}

#[test]
fn uclient_channels_50_sessions_x_1000() {
    check(&[], "127.0.0.11", true);
}

#[test]
fn uclient_send_indications_50_sessions_x_1000() {
    check(&["-s"], "127.0.0.12", true);
}

#[test]
fn uclient_client_to_client_50_sessions_x_1000() {
    check(&["-y"], "127.0.0.13", false);
}

#[test]
fn uclient_over_tcp_50_sessions_x_1000() {
    check_on(&["-t"], "127.0.0.14", true, "tcp");
}

#[test]
fn uclient_over_tls_50_sessions_x_1000() {
    check_on(&["-t", "-S"], "127.0.0.15", true, "tls");
}

#[test]
fn uclient_over_tls_on_the_auto_listener_50_sessions_x_1000() {
    check_on(&["-t", "-S"], "127.0.0.16", true, "auto");
}

#[test]
fn uclient_over_plain_tcp_on_the_auto_listener_client_to_client() {
    check_on(&["-t", "-y"], "127.0.0.17", false, "auto");
}

#[test]
fn stunclient_gets_its_reflexive_address() {
    let srv = TestServer::start("");
    let Some(bin) = tool("turnutils_stunclient") else {
        return;
    };
    let out = Command::new("timeout")
        .args([
            "20".as_ref(),
            bin.as_os_str(),
            "-p".as_ref(),
            srv.addr.port().to_string().as_ref(),
            "127.0.0.1".as_ref(),
        ])
        .output()
        .expect("stunclient runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("UDP reflexive addr: 127.0.0.1:"), "{text}");
}

/// coturn's dual allocations (`-Z`: ADDITIONAL-ADDRESS-FAMILY, an IPv6 relay
/// beside the IPv4 one, RFC 8656 §7.1) with 50 sessions over the IPv4 relay
/// to turnutils_peer: accepted, relayed without loss, and nothing left at
/// the end (both ports of every dual allocation back).
#[test]
fn uclient_dual_allocations_50_sessions_x_1000() {
    check_with(&["-Z"], "127.0.0.23", true, "udp", "relay-ipv6 = \"::1\"\n");
}
