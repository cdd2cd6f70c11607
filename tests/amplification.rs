//! How much bigger than the request is what an unauthenticated request
//! gets back (the reflection a spoofed source could use), for turnd and,
//! side by side, for coturn's defaults (Debian `turnserver`): a Binding
//! request, the smallest valid Allocate (28 bytes) with and without
//! FINGERPRINT, and a Refresh without an allocation. Same realm for both.
//! Prints the table the README quotes.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::server::*;
use common::stunc::*;
use stun::message::*;

/// The default realm: a 401's size grows with the realm's length.
const DEFAULT_REALM: &str = "turnd";

/// The server and the directory of its log and pid file.
struct Coturn {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn coturn(port: u16) -> Option<Coturn> {
    let bin = std::path::Path::new("/usr/bin/turnserver");
    if !present(bin, "Debian package coturn") {
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let child = Command::new(bin)
        .args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--listening-ip=127.0.0.1"])
        .arg(format!("--listening-port={port}"))
        .args([
            "--use-auth-secret",
            &format!("--static-auth-secret={SECRET}"),
            &format!("--realm={DEFAULT_REALM}"),
        ])
        .arg(format!("--log-file={}", dir.path().join("log").display()))
        .arg(format!("--pidfile={}", dir.path().join("pid").display()))
        .arg("--no-stdout-log")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnserver starts");
    Some(Coturn { child, _dir: dir })
}

/// The size of the answer to `request`, retrying while the server starts.
fn answer_size(server: SocketAddr, request: &[u8]) -> usize {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    let mut buf = [0u8; 2048];
    for _ in 0..20 {
        s.send_to(request, server).expect("send");
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return n;
        }
    }
    panic!("no answer from {server}");
}

fn requests() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("Binding", build(req(METHOD_BINDING), vec![], None, false).raw),
        (
            "Allocate",
            build(req(METHOD_ALLOCATE), vec![transport_udp()], None, false).raw,
        ),
        (
            "Allocate + FINGERPRINT",
            build(req(METHOD_ALLOCATE), vec![transport_udp()], None, true).raw,
        ),
        (
            "Refresh, no allocation",
            build(req(METHOD_REFRESH), vec![], None, false).raw,
        ),
    ]
}

#[test]
fn unauthenticated_answers_stay_within_twice_the_request() {
    // turnd with the default realm.
    let cfg = turnd::config::Config::parse(
        "[[listener]]\naddress = \"127.0.0.1\"\nport = 0\n[auth]\nstatic-auth-secrets = [\"north\"]\n[http]\nlisten = []\n",
        "t.toml",
    )
    .expect("config");
    assert_eq!(cfg.realm, DEFAULT_REALM);
    let secrets = cfg.secrets("t.toml").expect("secrets");
    let daemon = turnd::serve::start(&cfg, secrets).expect("turnd starts");
    let ours = daemon.relay.udp[0];
    let port = common::process::free_udp_port();
    let theirs = coturn(port);
    println!("| request | bytes | turnd answer | factor | coturn answer | factor |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (what, m) in requests() {
        let a = answer_size(ours, &m);
        let factor = a as f64 / m.len() as f64;
        let coturn = theirs
            .as_ref()
            .map(|_| answer_size(SocketAddr::from(([127, 0, 0, 1], port)), &m));
        let (c, cf) = coturn.map_or(("-".to_string(), "-".to_string()), |c| {
            (c.to_string(), format!("{:.2}×", c as f64 / m.len() as f64))
        });
        println!("| {what} | {} | {a} | {factor:.2}× | {c} | {cf} |", m.len());
        assert!(factor <= 2.0, "{what}: {a} bytes for {} ({factor:.2}×)", m.len());
        if let Some(c) = coturn {
            assert!(a <= c, "{what}: turnd {a} bytes, coturn {c}");
        }
    }
    daemon.stop();
}
