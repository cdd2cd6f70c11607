//! The call page in real Chromium (Debian's /usr/bin/chromium driven by npm
//! playwright-core, see tests/browser/): two pages call each other through
//! turnd with "relay only", chat, mute, switch cameras, survive glare, hang
//! up; screenshots at phone and desktop sizes land in target/screenshots.

mod common;

use std::path::Path;
use std::process::Command;

use common::server::{present, TestServer};

const KEY: &str = "browser-test-key";

#[test]
fn two_pages_call_through_the_relay() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !present(Path::new("/usr/bin/chromium"), "Debian package chromium")
        || !present(Path::new("/usr/bin/node"), "Debian/NodeSource nodejs")
        || !present(&dir.join("node_modules/playwright-core"), "npm ci in tests/browser")
    {
        return;
    }
    let server = TestServer::start(&format!(
        "[relay]\ndefault-lifetime = \"20s\"\n[http]\nlisten = [\"127.0.0.1:0\"]\naccess-key = \"{KEY}\"\nroom-size = 2\n"
    ));
    let base = format!("http://{}", server.http_addr());
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    let out = Command::new("node")
        .arg(dir.join("call.mjs"))
        .args([&base, KEY])
        .arg(&shots)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "browser checks failed: {stderr}");
    assert!(stdout.contains("all browser checks passed"));
    // A browser killed mid-call cannot delete its allocations: they expire
    // (20 s lifetime here), and nothing is left behind.
    assert!(
        server.wait_idle(std::time::Duration::from_secs(45)),
        "allocations left after the pages closed"
    );
}
