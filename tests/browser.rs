//! The call page in real Chromium (Debian's /usr/bin/chromium driven by npm
//! playwright-core, see tests/browser/): two pages call each other through
//! turnd with "relay only", chat, mute, switch cameras, survive glare, hang
//! up; screenshots at phone and desktop sizes land in target/screenshots.
//! turnd run with no configuration at all serves a relay-only call; a call
//! that fails is explained in words (403, 401, no relay, checks timed out).

mod common;

use std::path::Path;
use std::process::Command;

use common::process::Proc;
use common::server::{present, rest_creds, TestServer};

const KEY: &str = "browser-test-key";

/// The test scripts' folder, when Chromium, node and playwright-core are
/// there (under CI a missing one fails the test).
fn browser_dir() -> Option<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    (present(Path::new("/usr/bin/chromium"), "Debian package chromium")
        && present(Path::new("/usr/bin/node"), "Debian/NodeSource nodejs")
        && present(&dir.join("node_modules/playwright-core"), "npm ci in tests/browser"))
    .then_some(dir)
}

/// Runs `node SCRIPT ARGS…`; passes when it exits 0 and prints `done`.
/// Returns what it printed.
fn node(script: &Path, args: &[&str], done: &str) -> String {
    let out = Command::new("node").arg(script).args(args).output().expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "browser checks failed: {stderr}");
    assert!(stdout.contains(done));
    stdout.to_string()
}

/// The QR codes `zbarimg` (Debian zbar-tools) reads in a screenshot.
fn qr_codes(png: &Path) -> Vec<String> {
    let out = Command::new("zbarimg")
        .args(["--quiet", "--raw", "-Sdisable", "-Sqrcode.enable"])
        .arg(png)
        .output()
        .expect("zbarimg runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Two pages whose only ICE server is the `turns:` URL of an `auto`
/// listener, which also serves them the page over HTTPS: relay only, over
/// TLS, video decoded.
#[test]
fn two_pages_call_through_turns_on_the_auto_listener() {
    let Some(dir) = browser_dir() else {
        return;
    };
    let server = TestServer::start_with(
        "127.0.0.1",
        &["auto"],
        &format!("[relay]\ndefault-lifetime = \"20s\"\n[http]\nlisten = []\naccess-key = \"{KEY}\"\nroom-size = 2\n"),
    );
    let base = format!("https://{}", server.stream("auto"));
    node(&dir.join("tls.mjs"), &[&base, KEY], "all TLS browser checks passed");
    // Closing the pages closes their TLS connections: the allocations go
    // with them.
    assert!(
        server.wait_idle(std::time::Duration::from_secs(30)),
        "allocations left after the pages closed"
    );
}

/// The lobby and the call page pass axe-core's WCAG 2 A/AA and
/// best-practice rules at desktop and phone size.
#[test]
fn the_pages_pass_axe_core() {
    let Some(dir) = browser_dir() else {
        return;
    };
    let server = TestServer::start(&format!("[http]\nlisten = [\"127.0.0.1:0\"]\naccess-key = \"{KEY}\"\n"));
    let base = format!("http://{}", server.http_addr());
    node(&dir.join("a11y.mjs"), &[&base, KEY], "all accessibility checks passed");
}

#[test]
fn two_pages_call_through_the_relay() {
    let Some(dir) = browser_dir() else {
        return;
    };
    let server = TestServer::start(&format!(
        "[relay]\ndefault-lifetime = \"20s\"\n[http]\nlisten = [\"127.0.0.1:0\"]\naccess-key = \"{KEY}\"\nroom-size = 2\n"
    ));
    let base = format!("http://{}", server.http_addr());
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    let shots = shots.to_string_lossy();
    let printed = node(
        &dir.join("call.mjs"),
        &[&base, KEY, &shots],
        "all browser checks passed",
    );
    // "Invite a phone": each screenshot holds one code, of exactly the
    // link the page shows.
    if present(Path::new("/usr/bin/zbarimg"), "Debian package zbar-tools") {
        let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        for (shot, label) in [
            ("invite-lobby-desktop.png", "lobby invite: "),
            ("invite-call-desktop.png", "room invite: "),
        ] {
            let link = printed
                .lines()
                .find_map(|l| l.strip_prefix(label))
                .unwrap_or_else(|| panic!("no {label:?} line"));
            assert_eq!(qr_codes(&shots.join(shot)), vec![link.to_string()], "{shot}");
        }
        assert!(
            printed.contains(&format!("lobby invite: {base}/?key={KEY}")),
            "{printed}"
        );
    }
    // A browser killed mid-call cannot delete its allocations: they expire
    // (20 s lifetime here), and nothing is left behind.
    assert!(
        server.wait_idle(std::time::Duration::from_secs(45)),
        "allocations left after the pages closed"
    );
}

/// turnd exactly as a new user first runs it: no configuration file, so
/// UDP and TCP on 0.0.0.0:3478 and [::]:3478, the page on 127.0.0.1:8080,
/// the default peer policy (loopback denied) and a generated secret. Two
/// relay-only pages connect, and `turnd probe --secret-file` passes.
#[test]
fn with_no_configuration_at_all_a_relay_only_call_connects() {
    let Some(dir) = browser_dir() else {
        return;
    };
    let d = Proc::spawn_bare();
    let log = d.wait_log("join link: ", std::time::Duration::from_secs(20));
    let link = log
        .lines()
        .find_map(|l| l.split("join link: ").nth(1))
        .unwrap_or_else(|| panic!("no join link printed: {log}"))
        .trim()
        .to_string();
    assert!(link.starts_with("http://127.0.0.1:8080/?key="), "{link}");
    let secret = d.path(".local/state/turnd/secret");
    let out = Command::new(env!("CARGO_BIN_EXE_turnd"))
        .args(["probe", "turn:127.0.0.1:3478", "--secret-file"])
        .arg(&secret)
        .output()
        .expect("probe runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("data relayed both ways"),
        "{text}"
    );
    node(&dir.join("noconfig.mjs"), &[&link], "all first-run checks passed");
}

/// An `iceServers` answer for one TURN URL with a REST credential.
fn ice_json(url: &str, user: &str, pass: &str) -> String {
    serde_json::json!({"iceServers": [{"urls": [url], "username": user, "credential": pass}], "ttl": 3600}).to_string()
}

#[test]
fn a_failed_call_is_explained_in_words() {
    let Some(dir) = browser_dir() else {
        return;
    };
    // P serves the page and A's relay; loopback allowed, so only the own-
    // address rule refuses Y's relay.
    let p = TestServer::start(&format!(
        "[http]\nlisten = [\"127.0.0.1:0\"]\naccess-key = \"{KEY}\"\nroom-size = 2\n"
    ));
    // Y: another turnd on P's address. Q: on 127.0.0.3, its relays
    // advertised on 127.0.0.9, where nothing listens.
    let y = TestServer::start("");
    let q = TestServer::start_with("127.0.0.3", &["udp"], "[relay]\nexternal-ip = [\"127.0.0.9\"]\n");
    let (user, pass) = rest_creds("web-b");
    let closed = common::process::free_udp_port();
    let ice403 = ice_json(&format!("turn:{}?transport=udp", y.addr), &user, &pass);
    let ice401 = ice_json(&format!("turn:{}?transport=udp", p.addr), &user, "wrong-password");
    let ice701 = ice_json(&format!("turn:127.0.0.1:{closed}?transport=udp"), &user, &pass);
    let ice_timeout = ice_json(&format!("turn:{}?transport=udp", q.addr), &user, &pass);
    let base = format!("http://{}", p.http_addr());
    node(
        &dir.join("failures.mjs"),
        &[&base, KEY, &ice403, &ice401, &ice701, &ice_timeout],
        "all failure checks passed",
    );
}
