//! Operating turnd as a service, on the real binary: systemd notifications
//! (READY, RELOADING, STOPPING, WATCHDOG) captured on a NOTIFY_SOCKET of
//! the test's own, SIGHUP reloading secrets under a live allocation (and
//! refusing an invalid file), SIGTERM draining (new allocations refused,
//! existing ones relaying until they end), a second signal exiting at
//! once, the drain timeout, JSON logs.

mod common;

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::process::{free_tcp_port, Proc};
use common::server::*;
use common::streamc::{self, Item};
use common::stunc::*;
use stun::message::*;

/// A config with one TCP listener on `port`, REST secrets `secrets` and
/// `extra` top-level keys.
fn config(port: u16, secrets: &str, extra: &str) -> String {
    let listener = listener_toml("127.0.0.1", port, "tcp");
    format!(
        r#"realm = "{REALM}"
data-dir = "{{dir}}"
{extra}
{listener}[auth]
static-auth-secrets = [{secrets}]
[peers]
allow = ["127.0.0.0/8"]
[http]
listen = []
"#
    )
}

/// Reads notifications until one has `line`; all read so far on failure.
fn expect_notify(sock: &UnixDatagram, line: &str) -> String {
    let end = Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push_str(&msg);
            seen.push('|');
            if msg.lines().any(|l| l == line) {
                return seen;
            }
        }
    }
    panic!("no {line} notification; got: {seen}");
}

type Conn = streamc::Framed<std::net::TcpStream>;

/// An Allocate over a new TCP connection with REST credentials made from
/// `secret`: the answer's error code (None on success), the connection and
/// the credentials.
fn try_allocate(addr: SocketAddr, secret: &str) -> (Option<u16>, Conn, Cred) {
    let mut c = streamc::tcp(addr);
    let r = c.request(&build(req(METHOD_ALLOCATE), vec![transport_udp()], None, true));
    let nonce = text(&r, stun::attributes::ATTR_NONCE).expect("nonce");
    let (u, p) = turnd::auth::rest_credentials(
        secret.as_bytes(),
        Some("ops"),
        Duration::from_secs(600),
        turnd::serve::unix_now(),
        ':',
    );
    let cred = Cred {
        user: u,
        realm: REALM.into(),
        pass: p,
        nonce,
    };
    let r = c.request(&build(req(METHOD_ALLOCATE), vec![transport_udp()], Some(&cred), true));
    (error_code(&r), c, cred)
}

/// Deletes the connection's allocation (its answer comes once it is gone)
/// and closes the connection.
fn release(mut c: Conn, cred: &Cred) {
    let r = c.request(&build(req(METHOD_REFRESH), vec![lifetime_attr(0)], Some(cred), true));
    assert!(is_success(&r), "refresh 0: {r}");
}

fn echo(c: &mut Conn, what: &[u8]) {
    c.send(&channel_data(0x4000, what, true));
    assert_eq!(c.recv(), Some(Item::Channel(0x4000, what.to_vec())));
}

#[test]
fn notify_reload_and_drain_under_a_live_allocation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let port = free_tcp_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut d = Proc::spawn(
        &config(port, "\"north\"", "drain-timeout = \"30s\""),
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().expect("utf8")),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let seen = expect_notify(&sock, "READY=1");
    d.wait_listening(addr);
    // Pings at half the watchdog period, only while the workers turn.
    expect_notify(&sock, "WATCHDOG=1");
    expect_notify(&sock, "WATCHDOG=1");
    assert!(seen.contains("STATUS=serving"), "{seen}");

    let (peer, _echo) = echo_peer();
    let (code, mut live, cred) = try_allocate(addr, "north");
    assert_eq!(code, None);
    live.bind(&cred, 0x4000, peer);
    echo(&mut live, b"before the reload");

    // Rotate the secret: "south" only. The live allocation keeps relaying,
    // new clients need the new secret.
    d.rewrite_config(&config(port, "\"south\"", "drain-timeout = \"30s\""));
    d.signal("HUP");
    expect_notify(&sock, "RELOADING=1");
    expect_notify(&sock, "READY=1");
    let (code, ..) = try_allocate(addr, "north");
    assert_eq!(code, Some(401), "the old secret still works after the reload");
    let (code, new_conn, new_cred) = try_allocate(addr, "south");
    assert_eq!(code, None, "the new secret does not work");
    release(new_conn, &new_cred);
    echo(&mut live, b"after the reload");

    // An invalid file: refused, logged, the running config stays.
    d.rewrite_config("[relay]\nmin-port = 0\n");
    d.signal("HUP");
    let log = d.wait_log("configuration not reloaded", Duration::from_secs(10));
    assert!(log.contains("relay.min-port"), "{log}");
    let (code, c, c_cred) = try_allocate(addr, "south");
    assert_eq!(code, None, "the config in use changed after an invalid reload");
    release(c, &c_cred);

    // SIGTERM: draining (only `live` is left). New allocations refused with
    // a reason, the live one still relays, turnd waits for it.
    d.signal("TERM");
    expect_notify(&sock, "STOPPING=1");
    let (code, ..) = try_allocate(addr, "south");
    assert_eq!(code, Some(508));
    echo(&mut live, b"while draining");
    assert!(
        d.wait_exit(Duration::from_millis(800)).is_none(),
        "exited with an allocation alive"
    );
    // The last allocation ends (its connection closes): turnd exits 0.
    drop(live);
    let status = d.wait_exit(Duration::from_secs(5)).expect("exits once drained");
    assert!(status.success(), "{status:?}");
    assert!(d.log().contains("drained: no allocation left"));
}

#[test]
fn second_signal_exits_at_once_and_alternate_server_answers_300() {
    let port = free_tcp_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut d = Proc::spawn(
        &config(
            port,
            "\"north\"",
            "drain-timeout = \"1h\"\nalternate-server = \"192.0.2.7:3478\"",
        ),
        &[],
    );
    d.wait_listening(addr);
    let (code, _live, _) = try_allocate(addr, "north");
    assert_eq!(code, None);
    d.signal("TERM");
    d.wait_log("draining", Duration::from_secs(5));
    let (code, c, _) = try_allocate(addr, "north");
    assert_eq!(code, Some(300));
    drop(c);
    assert!(d.wait_exit(Duration::from_millis(500)).is_none());
    let t = Instant::now();
    d.signal("INT");
    let status = d.wait_exit(Duration::from_secs(3)).expect("a second signal exits");
    assert!(status.success() && t.elapsed() < Duration::from_secs(2), "{status:?}");
}

#[test]
fn drain_timeout_ends_the_wait() {
    let port = free_tcp_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut d = Proc::spawn(
        &config(port, "\"north\"", "drain-timeout = \"1s\"\nlog-format = \"json\""),
        &[],
    );
    d.wait_listening(addr);
    let (code, _live, _) = try_allocate(addr, "north");
    assert_eq!(code, None);
    let t = Instant::now();
    d.signal("TERM");
    let status = d
        .wait_exit(Duration::from_secs(5))
        .expect("exits after the drain timeout");
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() >= Duration::from_millis(900), "did not wait");
    // JSON log lines: one object per event, fields included.
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("drain timeout"))
        .expect("a drain timeout line");
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(v["fields"]["message"], "drain timeout: exiting with allocations left");
    assert_eq!(v["fields"]["allocations"], 1);
    assert_eq!(v["level"], "INFO");
}

/// `systemd-analyze verify` accepts the unit and `systemd-analyze security`
/// rates it OK or better (offline: no running systemd needed); the same
/// with the kernel data path's drop-in (`systemd/turnd-xdp.conf`) applied.
#[test]
fn unit_file_verifies_and_is_rated_ok() {
    let analyze = std::path::Path::new("/usr/bin/systemd-analyze");
    if !present(analyze, "Debian package systemd") {
        return;
    }
    // verify wants ExecStart's binary to exist: point it at the one built.
    let unit = std::fs::read_to_string("systemd/turnd.service").expect("unit");
    let unit = unit.replace("/usr/local/bin/turnd", env!("CARGO_BIN_EXE_turnd"));
    let dropin = std::fs::read_to_string("systemd/turnd-xdp.conf").expect("drop-in");
    let service_lines: String = dropin
        .lines()
        .filter(|l| !l.starts_with('#') && *l != "[Service]")
        .map(|l| format!("{l}\n"))
        .collect();
    let with_xdp = unit.replace("[Install]", &format!("{}\n[Install]", service_lines.trim()));
    assert_ne!(with_xdp, unit, "the drop-in adds to [Service]");
    for (name, text) in [("turnd.service", unit), ("turnd.service + turnd-xdp.conf", with_xdp)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("turnd.service");
        std::fs::write(&path, text).expect("write");
        let out = std::process::Command::new(analyze)
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.trim().is_empty(), "verify {name}: {text}");
        let out = std::process::Command::new(analyze)
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&path)
            .output()
            .expect("systemd-analyze runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let overall = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("no rating: {text}"));
        println!("{name}: {overall}");
        assert!(
            overall.contains(" OK") || overall.contains(" SAFE"),
            "{name}: {overall}"
        );
    }
}

/// Logs to a file or the journal carry no terminal colour codes; under
/// systemd (JOURNAL_STREAM set) each line starts with its syslog priority
/// and has no timestamp of its own. The join link of listeners on 0.0.0.0
/// and [::] with one port is printed once.
#[test]
fn logs_fit_files_and_the_journal_and_links_print_once() {
    let tcp = free_tcp_port();
    let http = free_tcp_port();
    let page = format!("[http]\nlisten = [\"0.0.0.0:{http}\", \"[::]:{http}\"]\naccess-key = \"journal-test-key\"\n");
    let cfg = config(tcp, "\"north\"", "").replace("[http]\nlisten = []\n", &page);
    let d = Proc::spawn(&cfg, &[]);
    let log = d.wait_log("listening", Duration::from_secs(10));
    assert!(!log.contains('\u{1b}'), "colour codes in a log file:\n{log}");
    let links = log.lines().filter(|l| l.contains("join link:")).count();
    assert_eq!(links, 1, "one link for 0.0.0.0 and [::] on one port:\n{log}");
    drop(d);
    let d = Proc::spawn(
        &config(free_tcp_port(), "\"north\"", ""),
        &[("JOURNAL_STREAM", "8:12345")],
    );
    let log = d.wait_log("listening", Duration::from_secs(10));
    let line = log.lines().find(|l| l.contains("listening")).expect("a listening line");
    assert!(line.starts_with("<6>"), "no syslog priority: {line}");
    assert!(!line.contains("Z "), "a timestamp in a journal line: {line}");
    assert!(!log.contains('\u{1b}'), "colour codes in the journal:\n{log}");
}

/// Firefox skips `turns:` URLs that name an IP address (found by the
/// Firefox tests in bin/e2e-nat): with a TLS listener and an IP address as
/// public-host, turnd says so at start; with a host name it does not.
#[test]
fn an_ip_address_public_host_with_tls_gets_the_firefox_warning() {
    let config = |host: &str| {
        format!(
            "data-dir = \"{{dir}}\"\npublic-host = \"{host}\"\n[[listener]]\naddress = \"127.0.0.1\"\nport = {}\ntransport = \"tls\"\n[auth]\nstatic-auth-secrets = [\"north\"]\n[http]\nlisten = []\n",
            free_tcp_port()
        )
    };
    let warning = "Firefox uses turns: (TURN over TLS) URLs only with a host name";
    let ip = Proc::spawn(&config("127.0.0.1"), &[]);
    let log = ip.wait_log(warning, Duration::from_secs(10));
    assert!(log.contains(warning), "{log}");
    let name = Proc::spawn(&config("turn.example.org"), &[]);
    let log = name.wait_log("certificate SHA-256", Duration::from_secs(10));
    assert!(log.contains("certificate SHA-256"), "{log}");
    assert!(!log.contains(warning), "{log}");
}
