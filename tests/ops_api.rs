//! The operator's side of a running turnd (the real binary): Prometheus
//! metrics checked against traffic sent, the admin API through `turnd
//! sessions` and `turnd kill`, and `turnd probe` succeeding over UDP, TCP
//! and TLS and explaining each failure (wrong secret, no answer, peer
//! policy).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::{free_tcp_port, free_udp_port, Proc};
use common::server::*;
use common::streamc::{self, Item};
use common::stunc::*;
use stun::message::*;

const METRICS_TOKEN: &str = "metrics-token-0123456789";
const ADMIN_TOKEN: &str = "admin-token-0123456789";

struct Ports {
    udp: u16,
    tcp: u16,
    tls: u16,
    metrics: u16,
    admin: u16,
}

fn start(peers: &str) -> (Proc, Ports) {
    let p = Ports {
        udp: free_udp_port(),
        tcp: free_tcp_port(),
        tls: free_tcp_port(),
        metrics: free_tcp_port(),
        admin: free_tcp_port(),
    };
    let listeners: String = [(p.udp, "udp"), (p.tcp, "tcp"), (p.tls, "tls")]
        .iter()
        .map(|(port, t)| listener_toml("127.0.0.1", *port, t))
        .collect();
    let config = format!(
        r#"realm = "{REALM}"
data-dir = "{{dir}}"
{listeners}[auth]
static-auth-secrets = ["{SECRET}"]
{peers}
[http]
listen = []
[metrics]
listen = ["127.0.0.1:{metrics}"]
token = "{METRICS_TOKEN}"
[admin]
listen = ["127.0.0.1:{admin}"]
token = "{ADMIN_TOKEN}"
"#,
        metrics = p.metrics,
        admin = p.admin,
    );
    let d = Proc::spawn(&config, &[]);
    d.wait_listening(SocketAddr::from(([127, 0, 0, 1], p.admin)));
    (d, p)
}

fn scrape(port: u16, token: Option<&str>) -> (u16, String) {
    let mut req = ureq::get(&format!("http://127.0.0.1:{port}/metrics"));
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().expect("body")),
        Err(ureq::Error::StatusCode(c)) => (c, String::new()),
        Err(e) => panic!("scrape: {e}"),
    }
}

/// The value of the sample `name{labels}` (labels exactly as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes until `series` reaches `want` (counters are published once a
/// second); the last scrape.
fn wait_metric(port: u16, series: &str, want: f64) -> String {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, text) = scrape(port, Some(METRICS_TOKEN));
        if sample(&text, series).is_some_and(|v| v >= want) || Instant::now() > end {
            return text;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn turnd(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_turnd"))
        .args(args)
        .output()
        .expect("turnd runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn metrics_follow_traffic_and_admin_lists_and_kills_sessions() {
    let (d, p) = start("[peers]\nallow = [\"127.0.0.0/8\"]\n[relay]\nreplace-idle-after = \"1s\"");
    let (peer, _echo) = echo_peer();
    let mut c = streamc::tcp(SocketAddr::from(([127, 0, 0, 1], p.tcp)));
    let (cred, relayed) = c.allocate("alice");
    c.bind(&cred, 0x4000, peer);
    for _ in 0..10 {
        c.send(&channel_data(0x4000, &[7u8; 100], true));
        assert_eq!(c.recv(), Some(Item::Channel(0x4000, vec![7u8; 100])));
    }
    // A request signed with a wrong password: one bad_integrity failure.
    let bad = Cred {
        pass: "wrong".into(),
        ..cred.clone()
    };
    let r = c.request(&build(req(METHOD_REFRESH), vec![lifetime_attr(600)], Some(&bad), true));
    assert_eq!(error_code(&r), Some(401));

    assert_eq!(scrape(p.metrics, None).0, 401, "metrics without the token");
    let text = wait_metric(
        p.metrics,
        "turnd_relayed_packets_total{direction=\"to_client\",transport=\"tcp\"}",
        10.0,
    );
    let v = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("no {s} in:\n{text}"));
    assert_eq!(v("turnd_allocations"), 1.0);
    assert_eq!(v("turnd_channels"), 1.0);
    assert_eq!(v("turnd_permissions"), 1.0);
    assert_eq!(v("turnd_allocations_created_total"), 1.0);
    assert_eq!(
        v("turnd_relayed_packets_total{direction=\"to_peer\",transport=\"tcp\"}"),
        10.0
    );
    assert_eq!(
        v("turnd_relayed_bytes_total{direction=\"to_peer\",transport=\"tcp\"}"),
        1000.0
    );
    assert_eq!(
        v("turnd_relayed_bytes_total{direction=\"to_client\",transport=\"tcp\"}"),
        1000.0
    );
    assert_eq!(
        v("turnd_relayed_packets_total{direction=\"to_peer\",transport=\"udp\"}"),
        0.0
    );
    assert_eq!(v("turnd_auth_failures_total{reason=\"bad_integrity\"}"), 1.0);
    // Two 401s: the first challenge and the bad signature.
    assert_eq!(v("turnd_error_responses_total{code=\"401\"}"), 2.0);
    assert_eq!(v("turnd_relay_ports_in_use"), 1.0);
    assert_eq!(v("turnd_relay_ports"), 16384.0);
    assert_eq!(v("turnd_stream_connections"), 1.0);
    assert!(text.contains("turnd_build_info{version=\""), "{text}");

    // The admin API through the CLI.
    let cfg = d.path("turnd.toml");
    let cfg = cfg.to_str().expect("utf8");
    c.send(&channel_data(0x4000, &[7u8; 100], true));
    assert_eq!(c.recv(), Some(Item::Channel(0x4000, vec![7u8; 100])));
    let (ok, out) = turnd(&["sessions", "-c", cfg]);
    assert!(ok, "{out}");
    assert!(
        out.contains(":alice") && out.contains("tcp") && out.contains(&relayed.to_string()),
        "{out}"
    );
    assert!(out.contains("1 allocation(s)") && out.contains("127.0.0.1"), "{out}");
    assert!(out.contains(" active "), "{out}");
    // Its client silent for longer than replace-idle-after: idle.
    std::thread::sleep(Duration::from_millis(2200));
    let (_, out) = turnd(&["sessions", "-c", cfg]);
    assert!(out.contains(" idle 2s ") || out.contains(" idle 3s "), "{out}");
    let denied = ureq::get(&format!("http://127.0.0.1:{}/admin/sessions", p.admin)).call();
    assert!(
        matches!(denied, Err(ureq::Error::StatusCode(401))),
        "admin API without the token"
    );
    let (ok, out) = turnd(&["kill", "--user", "alice", "-c", cfg]);
    assert!(ok && out.contains("killed 1 allocation(s) of alice"), "{out}");
    let r = c.request(&build(req(METHOD_REFRESH), vec![lifetime_attr(600)], Some(&cred), true));
    assert_eq!(error_code(&r), Some(437), "the killed allocation still answers");
    let text = wait_metric(p.metrics, "turnd_allocations_deleted_total", 1.0);
    assert_eq!(sample(&text, "turnd_allocations"), Some(0.0));
    let (ok, out) = turnd(&["sessions", "-c", cfg]);
    assert!(ok && out.contains("0 allocation(s)"), "{out}");
}

#[test]
fn probe_succeeds_over_udp_tcp_and_tls_and_explains_failures() {
    let (_d, p) = start("[peers]\nallow = [\"127.0.0.0/8\"]");
    for url in [
        format!("turn:127.0.0.1:{}", p.udp),
        format!("turn:127.0.0.1:{}?transport=tcp", p.tcp),
        format!("turns:127.0.0.1:{}?transport=tcp", p.tls),
    ] {
        let (ok, out) = turnd(&["probe", &url, "--secret", SECRET, "--insecure"]);
        assert!(ok, "{url}: {out}");
        assert!(
            out.contains("STUN Binding: this machine is seen as 127.0.0.1:"),
            "{out}"
        );
        assert!(out.contains("data relayed both ways"), "{out}");
    }
    // Wrong secret.
    let url = format!("turn:127.0.0.1:{}", p.udp);
    let (ok, out) = turnd(&["probe", &url, "--secret", "not-the-secret"]);
    assert!(
        !ok && out.contains("Allocate: error 401") && out.contains("clock"),
        "{out}"
    );
    // A certificate the probe cannot verify.
    let tls = format!("turns:127.0.0.1:{}", p.tls);
    let (ok, out) = turnd(&["probe", &tls, "--secret", SECRET]);
    assert!(!ok && out.contains("--insecure"), "{out}");
    // Nothing answers (a socket that swallows everything): UDP blocked?
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let url = format!("turn:{}", silent.local_addr().expect("addr"));
    let (ok, out) = turnd(&["probe", &url, "--secret", SECRET, "--timeout", "300ms"]);
    assert!(!ok && out.contains("timeout") && out.contains("transport=tcp"), "{out}");
}

/// With the default peer policy (relays on 127.0.0.1, a denied range),
/// the probe's two allocations reach each other: a live relay of turnd is
/// always a permitted peer. The secret comes from a file or the
/// environment, never the command line, and the probe deletes what it
/// allocated, on success as on failure.
#[test]
fn probe_passes_against_the_default_policy_and_leaves_nothing_behind() {
    let (d, p) = start("");
    let secret_file = d.dir.path().join("probe-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).expect("secret file");
    let secret_file = secret_file.display().to_string();
    let allocations = || {
        let (_, text) = scrape(p.metrics, Some(METRICS_TOKEN));
        sample(&text, "turnd_allocations")
    };
    for url in [
        format!("turn:127.0.0.1:{}", p.udp),
        format!("turn:127.0.0.1:{}?transport=tcp", p.tcp),
    ] {
        let (ok, out) = turnd(&["probe", &url, "--secret-file", &secret_file]);
        assert!(ok && out.contains("data relayed both ways"), "{url}: {out}");
        assert!(out.contains("2 allocation(s) deleted"), "{out}");
        assert_eq!(allocations(), Some(0.0), "the probe left allocations behind: {out}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_turnd"))
        .args(["probe", &format!("turn:127.0.0.1:{}", p.udp)])
        .env("TURND_SECRET", SECRET)
        .output()
        .expect("turnd runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "TURND_SECRET: {text}");
    assert_eq!(allocations(), Some(0.0));
    // No secret at all: says where one can come from.
    let out = Command::new(env!("CARGO_BIN_EXE_turnd"))
        .args(["probe", &format!("turn:127.0.0.1:{}", p.udp)])
        .env_remove("TURND_SECRET")
        .output()
        .expect("turnd runs");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("--secret-file"), "{text}");
}

#[test]
fn a_failed_probe_deletes_what_it_allocated() {
    // One allocation per user: the second Allocate gets 486.
    let (_d, p) = start("[relay]\nmax-allocations-per-user = 1");
    let url = format!("turn:127.0.0.1:{}", p.udp);
    let (ok, out) = turnd(&["probe", &url, "--secret", SECRET]);
    assert!(!ok && out.contains("second Allocate: error 486"), "{out}");
    assert!(out.contains("1 allocation(s) deleted"), "{out}");
    let (_, text) = scrape(p.metrics, Some(METRICS_TOKEN));
    assert_eq!(sample(&text, "turnd_allocations"), Some(0.0), "{out}");
}

#[test]
fn probe_says_when_a_turns_url_points_at_a_plain_port() {
    let (_d, p) = start("");
    let url = format!("turns:127.0.0.1:{}", p.tcp);
    let (ok, out) = turnd(&["probe", &url, "--secret", SECRET, "--timeout", "1s"]);
    assert!(!ok && out.contains("does not seem to speak TLS"), "{out}");
    assert!(!out.contains("self-signed"), "{out}");
}
