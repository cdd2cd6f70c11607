//! The certificate is reloaded on SIGHUP under a live TURN-over-TLS
//! allocation: the real binary, a real signal. The established connection
//! and its allocation carry on, new connections get the new certificate,
//! and a broken certificate is refused with the old one kept.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::process::{free_tcp_port, write_atomically, Proc};
use common::server::*;
use common::streamc::{self, Item};
use common::stunc::*;
use stun::message::*;

/// Writes a new self-signed certificate and key; returns its fingerprint.
fn write_cert(dir: &Path, name: &str) -> String {
    let g = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("cert");
    // Key first, then certificate, each replaced whole (as certbot's
    // symlink swap does).
    write_atomically(&dir.join("key.pem"), g.signing_key.serialize_pem().as_bytes());
    write_atomically(&dir.join("cert.pem"), g.cert.pem().as_bytes());
    turnd::tls::fingerprint(g.cert.der())
}

/// Waits (bounded) until a new connection is presented `fingerprint`.
fn wait_for_cert(addr: SocketAddr, fingerprint: &str) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if streamc::presented(&streamc::tls(addr)) == fingerprint {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn echo(c: &mut streamc::Framed<streamc::Tls>, what: &[u8]) {
    c.send(&channel_data(0x4000, what, true));
    assert_eq!(c.recv(), Some(Item::Channel(0x4000, what.to_vec())));
}

#[test]
fn sighup_swaps_the_certificate_under_a_live_tls_allocation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = write_cert(dir.path(), "a.example");
    let port = free_tcp_port();
    let listener = listener_toml("127.0.0.1", port, "tls");
    let config = format!(
        r#"realm = "{REALM}"
data-dir = "{{dir}}"
{listener}[auth]
static-auth-secrets = ["{SECRET}"]
[peers]
allow = ["127.0.0.0/8"]
[http]
listen = []
[tls]
cert-file = "{{dir}}/cert.pem"
key-file = "{{dir}}/key.pem"
"#
    );
    let daemon = Proc::spawn_in(dir, &config, &[]);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    daemon.wait_listening(addr);

    let (peer, _echo) = echo_peer();
    let mut live = streamc::tls(addr);
    assert_eq!(streamc::presented(&live), first);
    let (cred, _) = live.allocate("reload");
    live.bind(&cred, 0x4000, peer);
    echo(&mut live, b"before");

    let second = write_cert(daemon.dir.path(), "b.example");
    daemon.signal("HUP");
    assert!(wait_for_cert(addr, &second), "the new certificate is not presented");
    echo(&mut live, b"after the reload");
    let r = live.request(&build(req(METHOD_REFRESH), vec![lifetime_attr(600)], Some(&cred), true));
    assert!(is_success(&r), "refresh after reload: {r}");

    // A broken certificate: refused, logged, the second one stays.
    write_atomically(&daemon.path("cert.pem"), b"-----BEGIN CERTIFICATE-----\nbroken\n");
    daemon.signal("HUP");
    let log = daemon.wait_log("certificate not reloaded", Duration::from_secs(10));
    assert!(log.contains("certificate not reloaded, the old one stays"), "{log}");
    assert_eq!(streamc::presented(&streamc::tls(addr)), second);
    echo(&mut live, b"still there");
}
