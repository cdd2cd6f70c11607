//! turnd started in-process on 127.0.0.1:0, plus loopback helpers: a UDP echo
//! peer and a counting proxy. Everything stops on drop.

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use turnd::config::Config;
use turnd::serve::Daemon;

pub const SECRET: &str = "north";
pub const REALM: &str = "turnd-test";

pub struct TestServer {
    pub addr: SocketAddr,
    running: Option<Daemon>,
    /// The data dir (self-signed certificate) of servers with TLS.
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// turnd with the REST secret, loopback peers allowed, generous quotas,
    /// and `extra` TOML appended (top-level keys must come before tables, so
    /// `extra` holds whole tables or `[relay]`-style overrides).
    pub fn start(extra: &str) -> Self {
        Self::start_on("127.0.0.1", extra)
    }

    /// Like [`TestServer::start`], listening on `address` (e.g. "::1"); the
    /// `[peers]` table comes from `extra` when it has one.
    pub fn start_on(address: &str, extra: &str) -> Self {
        Self::start_with(address, &["udp"], extra)
    }

    /// turnd with UDP, TCP, TLS and `auto` listeners on 127.0.0.1 (a
    /// self-signed certificate in a temporary data dir); `[tcp]` limits
    /// high enough for uclient unless `extra` has its own.
    pub fn start_streams(extra: &str) -> Self {
        let tcp = if extra.contains("[tcp]") {
            String::new()
        } else {
            "[tcp]\nmax-connections-per-address = 1000\n".to_string()
        };
        Self::start_with("127.0.0.1", &["udp", "tcp", "tls", "auto"], &(tcp + extra))
    }

    /// The bound address of the first listener of `kind` ("tcp", "tls",
    /// "auto").
    pub fn stream(&self, kind: &str) -> SocketAddr {
        self.running
            .as_ref()
            .and_then(|r| r.relay.streams.iter().find(|(_, k)| k.to_string() == kind))
            .map(|(a, _)| *a)
            .expect("a listener of that kind")
    }

    /// The certificate fingerprint TLS listeners present now.
    pub fn fingerprint(&self) -> String {
        self.running
            .as_ref()
            .and_then(|r| r.certs.as_ref())
            .expect("a TLS listener")
            .fingerprint()
    }

    /// turnd listening on `address` with one listener per transport.
    pub fn start_with(address: &str, transports: &[&str], extra: &str) -> Self {
        let peers = if extra.contains("[peers]") {
            ""
        } else {
            "[peers]\nallow = [\"127.0.0.0/8\"]\n"
        };
        // No HTTP side unless the test asks for one (8080 may be taken).
        let http = if extra.contains("[http]") {
            ""
        } else {
            "[http]\nlisten = []\n"
        };
        let dir = transports
            .iter()
            .any(|t| *t == "tls" || *t == "auto")
            .then(|| tempfile::tempdir().expect("tempdir"));
        let data_dir = dir
            .as_ref()
            .map(|d| format!("data-dir = {:?}\n", d.path().display().to_string()))
            .unwrap_or_default();
        let listeners: String = transports.iter().map(|t| listener_toml(address, 0, t)).collect();
        let toml = format!(
            r#"realm = "{REALM}"
workers = 2
log-level = "warn"
{data_dir}{listeners}[auth]
static-auth-secrets = ["{SECRET}"]
{peers}{http}{extra}"#
        );
        let cfg = Config::parse(&toml, "test.toml").expect("test config");
        let secrets = cfg.secrets("test.toml").expect("secrets");
        let running = turnd::serve::start(&cfg, secrets).expect("turnd starts");
        Self {
            addr: running
                .relay
                .udp
                .first()
                .copied()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            running: Some(running),
            _dir: dir,
        }
    }

    /// The page's plain HTTP address, when `[http]` was configured.
    pub fn http_addr(&self) -> SocketAddr {
        self.http().http[0]
    }

    /// The page's HTTPS address, when `https-listen` was configured.
    pub fn https_addr(&self) -> SocketAddr {
        self.http().https[0]
    }

    fn http(&self) -> &turnd::http::Page {
        self.running
            .as_ref()
            .and_then(|r| r.http.as_ref())
            .expect("an [http] section")
    }

    /// The workers' counters as soon as `done` holds for them (they are
    /// published once a second), or the last ones seen after 5 s.
    pub fn stats_when(&self, done: impl Fn(&turnd::proto::Stats) -> bool) -> turnd::proto::Stats {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let s = self
                .running
                .as_ref()
                .map(|r| r.relay.workers.totals().stats)
                .unwrap_or_default();
            if done(&s) || Instant::now() > end {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// 401/438 answers the rate limit held back, once there are any.
    pub fn challenges_limited(&self) -> u64 {
        self.stats_when(|s| s.challenges_limited > 0).challenges_limited
    }

    /// Packets dropped over a bandwidth limit, once at least `min`.
    pub fn over_bandwidth(&self, min: u64) -> u64 {
        self.stats_when(|s| s.over_bandwidth >= min).over_bandwidth
    }

    pub fn allocations(&self) -> u32 {
        self.running.as_ref().map_or(0, |r| r.relay.shared.lock().total)
    }

    pub fn ports_in_use(&self) -> usize {
        self.running
            .as_ref()
            .map_or(0, |r| r.relay.shared.lock().ports.in_use())
    }

    /// Waits (bounded) until no allocation and no relay port is left.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if self.allocations() == 0 && self.ports_in_use() == 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl TestServer {
    /// The running daemon (listeners, workers, shared state).
    pub fn daemon(&self) -> &Daemon {
        self.running.as_ref().expect("running")
    }

    /// Stops turnd now (as SIGTERM twice would); returns how long it took.
    pub fn stop(mut self) -> Duration {
        let t0 = Instant::now();
        if let Some(r) = self.running.take() {
            r.stop();
        }
        t0.elapsed()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }
}

/// One `[[listener]]` table of a config file.
pub fn listener_toml(address: &str, port: u16, transport: &str) -> String {
    format!("[[listener]]\naddress = \"{address}\"\nport = {port}\ntransport = \"{transport}\"\n")
}

/// A REST username/password valid for an hour.
pub fn rest_creds(user: &str) -> (String, String) {
    let now = turnd::serve::unix_now();
    turnd::auth::rest_credentials(SECRET.as_bytes(), Some(user), Duration::from_secs(3600), now, ':')
}

/// A background thread that runs until dropped (bounded by `limit`).
pub struct Bg {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Bg {
    pub fn spawn(limit: Duration, f: impl FnOnce(Arc<AtomicBool>, Instant) + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let end = Instant::now() + limit;
        let handle = std::thread::spawn(move || f(s, end));
        Self {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn running(stop: &AtomicBool, end: Instant) -> bool {
    !stop.load(Ordering::Relaxed) && Instant::now() < end
}

/// Where loopback peers live: a loopback address turnd does not use (its
/// own addresses are never peers, unless a live relay of its own).
pub const PEER_IP: &str = "127.0.0.2";

/// A UDP echo peer on [`PEER_IP`].
pub fn echo_peer() -> (SocketAddr, Bg) {
    let sock = UdpSocket::bind((PEER_IP, 0)).expect("bind echo");
    sock.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
    let addr = sock.local_addr().expect("addr");
    let bg = Bg::spawn(Duration::from_secs(300), move |stop, end| {
        let mut buf = vec![0u8; 65536];
        while running(&stop, end) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        }
    });
    (addr, bg)
}

/// What passed through a [`counting_proxy`].
#[derive(Default)]
pub struct Counts {
    pub send_indications: AtomicU64,
    pub channel_data_up: AtomicU64,
    pub data_indications: AtomicU64,
    pub channel_data_down: AtomicU64,
}

fn kind(b: &[u8]) -> Option<u16> {
    (b.len() >= 2).then(|| u16::from_be_bytes([b[0], b[1]]))
}

/// Forwards one client's datagrams to `server` and back, counting the TURN
/// data message kinds in each direction.
pub fn counting_proxy(server: SocketAddr) -> (SocketAddr, Arc<Counts>, Bg) {
    let front = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let back = UdpSocket::bind("127.0.0.1:0").expect("bind");
    front.set_nonblocking(true).expect("nb");
    back.set_nonblocking(true).expect("nb");
    let addr = front.local_addr().expect("addr");
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    let bg = Bg::spawn(Duration::from_secs(300), move |stop, end| {
        let mut buf = vec![0u8; 65536];
        let mut client: Option<SocketAddr> = None;
        while running(&stop, end) {
            let mut idle = true;
            if let Ok((n, from)) = front.recv_from(&mut buf) {
                idle = false;
                client = Some(from);
                match kind(&buf[..n]) {
                    Some(0x0016) => c.send_indications.fetch_add(1, Ordering::Relaxed),
                    Some(k) if (0x4000..0x8000).contains(&k) => c.channel_data_up.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
                let _ = back.send_to(&buf[..n], server);
            }
            if let Ok((n, _)) = back.recv_from(&mut buf) {
                idle = false;
                match kind(&buf[..n]) {
                    Some(0x0017) => c.data_indications.fetch_add(1, Ordering::Relaxed),
                    Some(k) if (0x4000..0x8000).contains(&k) => c.channel_data_down.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
                if let Some(cl) = client {
                    let _ = front.send_to(&buf[..n], cl);
                }
            }
            if idle {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    });
    (addr, counts, bg)
}

/// The path of a Debian `coturn` tool, or `None`. Under `CI=true` a missing
/// tool fails the test instead of skipping it.
pub fn tool(name: &str) -> Option<std::path::PathBuf> {
    let p = std::path::PathBuf::from("/usr/bin").join(name);
    present(&p, "Debian package coturn").then_some(p)
}

/// Whether `path` exists; under CI=true a missing one fails the test (the
/// README test command installs it), elsewhere it is a visible skip.
pub fn present(path: &std::path::Path, installed_by: &str) -> bool {
    if path.exists() {
        return true;
    }
    skip(&format!(
        "{} missing ({installed_by}; bin/test installs it)",
        path.display()
    ));
    false
}

/// A test that cannot run here says so in the test output, past the
/// harness's capture (it prints even when the test passes); under CI=true it
/// fails instead.
pub fn skip(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("cannot run under CI: {why}");
    }
    use std::io::Write;
    let name = std::thread::current().name().unwrap_or("a test").to_string();
    let _ = writeln!(std::io::stderr(), "SKIP {name}: {why}");
    // One line per skip, which bin/test counts into its summary line.
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(SKIPPED) {
        let _ = writeln!(f, "{name}: {why}");
    }
}

/// Where [`skip`] lists what it skipped (bin/test empties it first).
pub const SKIPPED: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/skipped");

/// The `turn` crate's client for `server`, listening, bound on the loopback
/// address of the server's family.
pub async fn turn_client(server: SocketAddr, user: &str, pass: &str) -> turn::client::Client {
    let bind = if server.is_ipv6() { "[::1]:0" } else { "127.0.0.1:0" };
    let conn = tokio::net::UdpSocket::bind(bind).await.expect("bind");
    super::turnc::listening_client(conn, server, user, pass)
        .await
        .expect("turn client listens")
}

/// Sends `n` messages to `peer` through `relay`, `pause` apart, and checks
/// each one comes back from `peer`, unchanged, within 3 s.
pub async fn echo_through(relay: &impl webrtc_util::Conn, peer: SocketAddr, n: usize, pause: Duration) {
    let mut buf = vec![0u8; 2048];
    for i in 0..n {
        let msg = format!("message {i} through turnd");
        relay.send_to(msg.as_bytes(), peer).await.expect("send_to");
        let (len, from) = tokio::time::timeout(Duration::from_secs(3), relay.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("echo {i} lost: not back within 3 s"))
            .expect("recv_from");
        assert_eq!(from, peer);
        assert_eq!(&buf[..len], msg.as_bytes());
        tokio::time::sleep(pause).await;
    }
}
