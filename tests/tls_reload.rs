//! The certificate is reloaded on SIGHUP under a live TURN-over-TLS
//! allocation: the real binary, a real signal. The established connection
//! and its allocation carry on, new connections get the new certificate,
//! and a broken certificate is refused with the old one kept.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::server::*;
use common::streamc::{self, Item};
use common::stunc::*;
use stun::message::*;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes a new self-signed certificate and key; returns its fingerprint.
fn write_cert(dir: &Path, name: &str) -> String {
    let g = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("cert");
    // Written next to the target and renamed, as certbot's symlink swap.
    std::fs::write(dir.join("new-cert.pem"), g.cert.pem()).expect("write");
    std::fs::write(dir.join("new-key.pem"), g.signing_key.serialize_pem()).expect("write");
    std::fs::rename(dir.join("new-key.pem"), dir.join("key.pem")).expect("rename");
    std::fs::rename(dir.join("new-cert.pem"), dir.join("cert.pem")).expect("rename");
    turnd::tls::fingerprint(g.cert.der())
}

fn hup(child: &Child) {
    let ok = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(ok.success());
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
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = format!(
        r#"realm = "{REALM}"
data-dir = {data:?}
[[listener]]
address = "127.0.0.1"
port = {port}
transport = "tls"
[auth]
static-auth-secrets = ["{SECRET}"]
[peers]
allow = ["127.0.0.0/8"]
[http]
listen = []
[tls]
cert-file = {cert:?}
key-file = {key:?}
"#,
        data = dir.path().display().to_string(),
        cert = dir.path().join("cert.pem").display().to_string(),
        key = dir.path().join("key.pem").display().to_string(),
    );
    std::fs::write(dir.path().join("turnd.toml"), config).expect("config");
    let log = std::fs::File::create(dir.path().join("log")).expect("log");
    let daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_turnd"))
            .arg("-c")
            .arg(dir.path().join("turnd.toml"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("turnd starts"),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let end = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < end, "turnd does not listen");
        std::thread::sleep(Duration::from_millis(50));
    }

    let (peer, _echo) = echo_peer();
    let mut live = streamc::tls(addr);
    assert_eq!(streamc::presented(&live), first);
    let (cred, _) = live.allocate("reload");
    live.bind(&cred, 0x4000, peer);
    echo(&mut live, b"before");

    let second = write_cert(dir.path(), "b.example");
    hup(&daemon.0);
    assert!(wait_for_cert(addr, &second), "the new certificate is not presented");
    echo(&mut live, b"after the reload");
    let r = live.request(&build(req(METHOD_REFRESH), vec![lifetime_attr(600)], Some(&cred), true));
    assert!(is_success(&r), "refresh after reload: {r}");

    // A broken certificate: refused, logged, the second one stays.
    std::fs::write(dir.path().join("cert.pem"), "-----BEGIN CERTIFICATE-----\nbroken\n").expect("write");
    hup(&daemon.0);
    let end = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(dir.path().join("log")).expect("log");
        if log.contains("certificate not reloaded") || Instant::now() > end {
            break log;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(log.contains("certificate not reloaded, the old one stays"), "{log}");
    assert_eq!(streamc::presented(&streamc::tls(addr)), second);
    echo(&mut live, b"still there");
}
