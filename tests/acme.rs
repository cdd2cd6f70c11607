//! Certificates by ACME against a real CA: Debian's `pebble` (the RFC 8555
//! test CA) in a network namespace with dnsmasq naming turnd
//! `turn.acme.test`, and turnd in the same namespace answering the
//! challenges on its own listeners — TLS-ALPN-01 on its `auto` listener on
//! 443, HTTP-01 on `acme.http-listen` port 80. The certificate it serves is
//! verified against pebble's root only; it is renewed while a TURN/TLS
//! allocation made before keeps relaying; a CA gone keeps the certificate
//! in use; a restart reuses the stored one. Needs root (a visible skip
//! otherwise; a failure under CI=true).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{metrics_in, sh, within};
use common::process::Proc;
use common::server::{skip, REALM, SECRET};
use common::streamc::{self, Framed, Tls};
use common::stunc::*;
use rustls::pki_types::pem::PemObject;
use stun::message::*;

const NAME: &str = "turn.acme.test";

/// pebble and dnsmasq in namespace `acme{n}`, with turnd's address
/// 10.n.0.1 and a peer's 10.n.0.2 on one end of a veth pair; `turn.acme.test`
/// resolves to 10.n.0.1 for pebble (dnsmasq) and for processes run with
/// `ip netns exec` (/etc/netns hosts file).
struct Ca {
    ns: String,
    n: u8,
    dir: tempfile::TempDir,
    pebble: Option<Child>,
    dnsmasq: Child,
}

impl Ca {
    fn available() -> bool {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            skip("needs root for a network namespace");
            return false;
        }
        for (tool, package) in [("/usr/bin/pebble", "pebble"), ("/usr/sbin/dnsmasq", "dnsmasq-base")] {
            if !Path::new(tool).exists() {
                skip(&format!(
                    "{tool} missing (Debian package {package}; bin/test installs it)"
                ));
                return false;
            }
        }
        true
    }

    fn start(n: u8) -> Ca {
        let ns = format!("acme{n}");
        teardown(&ns);
        sh(&format!(
            "ip netns add {ns}
ip -n {ns} link set lo up
ip link add d0 netns {ns} type veth peer name d1 netns {ns}
ip -n {ns} addr add 10.{n}.0.1/24 dev d0
ip -n {ns} addr add 10.{n}.0.2/24 dev d0
ip -n {ns} link set d0 up
ip -n {ns} link set d1 up
mkdir -p /etc/netns/{ns}
printf '127.0.0.1 localhost\\n10.{n}.0.1 {NAME}\\n' > /etc/netns/{ns}/hosts"
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        // pebble's own HTTPS: a CA of this test's and a certificate for
        // 127.0.0.1 (turnd trusts it through acme.ca-file).
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "pebble directory test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("CA");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("leaf");
        let p = |f: &str| dir.path().join(f);
        std::fs::write(p("directory-ca.pem"), ca_cert.pem()).expect("write");
        std::fs::write(p("pebble-cert.pem"), leaf.pem()).expect("write");
        std::fs::write(p("pebble-key.pem"), key.serialize_pem()).expect("write");
        let config = serde_json::json!({"pebble": {
            "listenAddress": "127.0.0.1:14000",
            "managementListenAddress": "127.0.0.1:15000",
            "certificate": p("pebble-cert.pem"),
            "privateKey": p("pebble-key.pem"),
            "httpPort": 80,
            "tlsPort": 443,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(p("pebble.json"), config.to_string()).expect("write");
        let log = |f: &str| std::fs::File::create(p(f)).expect("log");
        let dnsmasq = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "/usr/sbin/dnsmasq",
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
            ])
            .args([
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--port=5353",
                "--pid-file=",
            ])
            .arg(format!("--address=/{NAME}/10.{n}.0.1"))
            .stdout(Stdio::null())
            .stderr(log("dnsmasq.log"))
            .spawn()
            .expect("dnsmasq starts");
        let mut ca = Ca {
            ns,
            n,
            dir,
            pebble: None,
            dnsmasq,
        };
        ca.start_pebble();
        ca
    }

    fn start_pebble(&mut self) {
        let p = |f: &str| self.dir.path().join(f);
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "env",
                "PEBBLE_VA_NOSLEEP=1",
                "PEBBLE_WFE_NONCEREJECT=0",
            ])
            .args(["/usr/bin/pebble", "-dnsserver", "127.0.0.1:5353", "-config"])
            .arg(p("pebble.json"))
            .stdout(std::fs::File::create(p("pebble.log")).expect("log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble starts");
        self.pebble = Some(child);
        let end = Instant::now() + Duration::from_secs(15);
        while !within(&self.ns, || TcpStream::connect("127.0.0.1:14000").is_ok()) {
            assert!(Instant::now() < end, "pebble did not start: {}", self.log("pebble.log"));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop_pebble(&mut self) {
        if let Some(mut c) = self.pebble.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self, f: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default()
    }

    fn ip(&self, host: u8) -> String {
        format!("10.{}.0.{host}", self.n)
    }

    /// The root pebble issues under (its management API), as a PEM file.
    fn root(&self) -> PathBuf {
        let trust = turnd::tls::client_config_with_root(&self.dir.path().join("directory-ca.pem")).expect("trust");
        let pem = within(&self.ns, move || {
            let s = TcpStream::connect("127.0.0.1:15000").expect("management API");
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
            let mut t = rustls::StreamOwned::new(rustls::ClientConnection::new(trust, name).expect("client"), s);
            t.write_all(b"GET /roots/0 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                .expect("request");
            let mut out = Vec::new();
            let _ = t.read_to_end(&mut out);
            String::from_utf8_lossy(&out).to_string()
        });
        let body = pem.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).expect("a body");
        assert!(body.contains("BEGIN CERTIFICATE"), "{pem}");
        let path = self.dir.path().join("root.pem");
        std::fs::write(&path, body).expect("write");
        path
    }

    /// turnd's configuration here, `extra` after `[acme]`'s own keys.
    fn config(&self, listeners: &str, acme: &str) -> String {
        format!(
            r#"realm = "{REALM}"
data-dir = "{{dir}}"
drain-timeout = "1s"
public-host = "{NAME}"
{listeners}[[listener]]
address = "{ip}"
port = 3478
transport = "udp"
[auth]
static-auth-secrets = ["{SECRET}"]
[peers]
allow = ["10.0.0.0/8"]
[metrics]
listen = ["127.0.0.1:9478"]
[acme]
enabled = true
email = "ops@acme.test"
directory = "https://127.0.0.1:14000/dir"
ca-file = "{ca}"
{acme}"#,
            ip = self.ip(1),
            ca = self.dir.path().join("directory-ca.pem").display(),
        )
    }
}

fn teardown(ns: &str) {
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
    let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
}

impl Drop for Ca {
    fn drop(&mut self) {
        self.stop_pebble();
        let _ = self.dnsmasq.kill();
        let _ = self.dnsmasq.wait();
        teardown(&self.ns);
    }
}

/// Waits (bounded) until turnd's log has `n` lines with `text`.
fn wait_count(p: &Proc, text: &str, n: usize, limit: Duration) -> String {
    let end = Instant::now() + limit;
    loop {
        let log = p.log();
        if log.matches(text).count() >= n {
            return log;
        }
        assert!(Instant::now() < end, "no {n}× {text:?} within {limit:?}:\n{log}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A TURN/TLS connection to turnd at `addr` as `NAME`, the certificate
/// verified against `root` alone.
fn connect(ca: &Ca, addr: SocketAddr, root: &Path) -> Result<Framed<Tls>, String> {
    let config = turnd::tls::client_config_with_root(root).map_err(|e| format!("{e:#}"))?;
    within(&ca.ns, move || streamc::tls_verified(addr, NAME, config))
}

/// A UDP peer in the namespace on 10.n.0.2.
fn peer(ca: &Ca) -> (UdpSocket, SocketAddr) {
    let ip = ca.ip(2);
    let s = within(&ca.ns, move || UdpSocket::bind((ip.as_str(), 0)).expect("bind"));
    s.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    let a = s.local_addr().expect("addr");
    (s, a)
}

fn send_indication(to: SocketAddr, d: &[u8]) -> Vec<u8> {
    build(
        MessageType::new(METHOD_SEND, CLASS_INDICATION),
        vec![peer_attr(to), data(d)],
        None,
        false,
    )
    .raw
}

fn peer_attr(a: SocketAddr) -> Box<dyn Setter> {
    common::stunc::peer(a)
}

/// TLS-ALPN-01 on the `auto` listener on 443: issued, verified against
/// pebble's root only; renewed (a short renewal window) while a TURN/TLS
/// allocation made before keeps relaying, a new connection seeing the new
/// certificate; pebble gone: the order fails in one log line and the
/// certificate stays; a restart reuses the stored one without asking the CA.
#[test]
fn tls_alpn_01_issues_renews_survives_the_ca_and_restarts() {
    if !Ca::available() {
        return;
    }
    let mut ca = Ca::start(61);
    let listener = format!(
        "[[listener]]\naddress = \"{}\"\nport = 443\ntransport = \"auto\"\n",
        ca.ip(1)
    );
    // Due again as soon as issued: renewed every 10 s.
    let p = Proc::spawn_netns(&ca.ns, &ca.config(&listener, "renew-before = \"100000d\"\n"));
    let log = wait_count(&p, "certificate issued", 1, Duration::from_secs(60));
    assert!(log.contains("tls-alpn-01"), "{log}");
    let root = ca.root();
    let addr: SocketAddr = format!("{}:443", ca.ip(1)).parse().expect("addr");
    let mut c = connect(&ca, addr, &root).expect("the issued certificate verifies against pebble's root");
    let first = streamc::presented(&c);
    // A TURN/TLS allocation, relaying.
    let (ps, pa) = peer(&ca);
    let (cred, relayed) = c.allocate("acme");
    let r = c.request(&build(
        req(METHOD_CREATE_PERMISSION),
        vec![peer_attr(pa)],
        Some(&cred),
        true,
    ));
    assert!(is_success(&r), "{r}");
    let mut buf = [0u8; 2048];
    c.send(&send_indication(pa, b"before the renewal"));
    let (n, from) = ps.recv_from(&mut buf).expect("the peer gets it");
    assert_eq!((&buf[..n], from), (&b"before the renewal"[..], relayed));
    // Renewed: a new connection sees a new certificate, still verified.
    wait_count(&p, "certificate issued", 2, Duration::from_secs(60));
    let second = streamc::presented(&connect(&ca, addr, &root).expect("the renewed certificate verifies"));
    assert_ne!(first, second, "a renewal serves a new certificate");
    // The allocation made before carries on, both ways.
    c.send(&send_indication(pa, b"after the renewal"));
    let (n, _) = ps.recv_from(&mut buf).expect("the peer still gets it");
    assert_eq!(&buf[..n], b"after the renewal");
    ps.send_to(b"back", relayed).expect("send");
    let back = c.recv_stun();
    assert_eq!(back.typ, MessageType::new(METHOD_DATA, CLASS_INDICATION), "{back}");
    // `turnd probe` verifies the chain against pebble's root.
    let probe = Command::new("ip")
        .args(["netns", "exec", &ca.ns, env!("CARGO_BIN_EXE_turnd"), "probe"])
        .arg(format!("turns:{NAME}:443?transport=tcp"))
        .args(["--secret", SECRET, "--ca-file"])
        .arg(&root)
        .output()
        .expect("probe runs");
    let text = String::from_utf8_lossy(&probe.stdout).to_string() + &String::from_utf8_lossy(&probe.stderr);
    assert!(probe.status.success() && text.contains(", verified"), "{text}");
    // The metrics say so.
    let metrics = metrics_in(&ca.ns, 9478);
    assert!(
        metrics.contains(&format!(
            "turnd_certificate_expiry_timestamp_seconds{{name=\"{NAME}\"}}"
        )),
        "{metrics}"
    );
    assert!(
        !metrics.contains("turnd_acme_orders_total{outcome=\"issued\"} 0"),
        "{metrics}"
    );
    // The CA gone: the next order fails, in one line, and the certificate
    // in use stays.
    ca.stop_pebble();
    let log = wait_count(&p, "ACME order failed", 1, Duration::from_secs(40));
    let line = log.lines().find(|l| l.contains("ACME order failed")).expect("the line");
    assert!(
        line.contains("127.0.0.1:14000") || line.contains("Connection refused") || line.contains("connect"),
        "{line}"
    );
    let kept = streamc::presented(&connect(&ca, addr, &root).expect("the certificate stays"));
    let issued = log.matches("certificate issued").count();
    assert!(issued >= 2);
    drop(c);
    // A restart with the CA still gone: the stored certificate, no order.
    let mut p = p;
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(10)).is_some(), "turnd exits");
    let dir = std::mem::replace(&mut p.dir, tempfile::tempdir().expect("tempdir"));
    drop(p);
    let p = Proc::spawn_netns_in(dir, &ca.ns, &ca.config(&listener, ""));
    let log = p.wait_log("ACME-issued certificate", Duration::from_secs(10));
    assert!(log.contains("reused until it is due"), "{log}");
    let after = streamc::presented(&connect(&ca, addr, &root).expect("the stored certificate"));
    assert_eq!(after, kept, "the restart serves the stored certificate");
    std::thread::sleep(Duration::from_secs(2));
    assert!(!p.log().contains("ACME order"), "no order at a restart: {}", p.log());
}

/// HTTP-01 on `acme.http-listen` port 80, for a `tls` listener elsewhere:
/// issued and verified; everything else on port 80 is redirected to HTTPS.
/// A name the CA cannot resolve: the order fails with the CA's reason and
/// the self-signed certificate keeps serving.
#[test]
fn http_01_issues_and_a_failed_challenge_is_explained() {
    if !Ca::available() {
        return;
    }
    let ca = Ca::start(62);
    let listener = format!(
        "[[listener]]\naddress = \"{}\"\nport = 8443\ntransport = \"tls\"\n",
        ca.ip(1)
    );
    let acme = format!("challenge = \"http-01\"\nhttp-listen = [\"{}:80\"]\n", ca.ip(1));
    let p = Proc::spawn_netns(&ca.ns, &ca.config(&listener, &acme));
    let log = wait_count(&p, "certificate issued", 1, Duration::from_secs(60));
    assert!(log.contains("http-01"), "{log}");
    let root = ca.root();
    let addr: SocketAddr = format!("{}:8443", ca.ip(1)).parse().expect("addr");
    connect(&ca, addr, &root).expect("the issued certificate verifies against pebble's root");
    let ip = ca.ip(1);
    let answer = within(&ca.ns, move || {
        let mut s = TcpStream::connect((ip.as_str(), 80)).expect("port 80");
        s.write_all(format!("GET /call?room=x HTTP/1.0\r\nHost: {NAME}\r\n\r\n").as_bytes())
            .expect("request");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    });
    assert!(
        answer.starts_with("HTTP/1.0 301") || answer.starts_with("HTTP/1.1 301"),
        "{answer}"
    );
    assert!(
        answer
            .to_ascii_lowercase()
            .contains(&format!("location: https://{NAME}/call?room=x")),
        "{answer}"
    );
    drop(p);
    // A name nothing resolves.
    let acme = format!("{acme}domains = [\"nowhere.acme.test\"]\n");
    let p = Proc::spawn_netns(&ca.ns, &ca.config(&listener, &acme));
    let log = wait_count(&p, "ACME order failed", 1, Duration::from_secs(60));
    let line = log.lines().find(|l| l.contains("ACME order failed")).expect("the line");
    assert!(line.contains("nowhere.acme.test") && line.contains("resolve"), "{line}");
    assert!(!log.contains("panicked"), "{log}");
    let presented = within(&ca.ns, move || streamc::presented(&streamc::tls(addr)));
    let stored = std::fs::read_to_string(p.dir.path().join("self-signed-cert.pem")).expect("self-signed");
    let der = rustls::pki_types::CertificateDer::from_pem_slice(stored.as_bytes()).expect("pem");
    assert_eq!(
        presented,
        turnd::tls::fingerprint(&der),
        "the self-signed certificate serves meanwhile"
    );
}
