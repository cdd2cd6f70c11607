//! The call page in real Chromium (Debian's /usr/bin/chromium driven by npm
//! playwright-core, see tests/browser/): two pages call each other through
//! turnd with "relay only", chat, mute, switch cameras, survive glare, hang
//! up; screenshots at phone and desktop sizes land in target/screenshots.

mod common;

use std::path::Path;
use std::process::Command;

use common::server::{present, TestServer};

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
fn node(script: &Path, args: &[&str], done: &str) {
    let out = Command::new("node").arg(script).args(args).output().expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "browser checks failed: {stderr}");
    assert!(stdout.contains(done));
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
    node(
        &dir.join("call.mjs"),
        &[&base, KEY, &shots],
        "all browser checks passed",
    );
    // A browser killed mid-call cannot delete its allocations: they expire
    // (20 s lifetime here), and nothing is left behind.
    assert!(
        server.wait_idle(std::time::Duration::from_secs(45)),
        "allocations left after the pages closed"
    );
}
