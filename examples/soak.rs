//! The long soak for `bin/soak`: starts the given turnd binary (2 workers,
//! metrics on loopback, 2 s lifetimes) and runs cycles of `ALLOCATIONS`
//! clients that allocate, refresh, bind a channel, relay one message and
//! leave their allocations to expire, for `MINUTES`. After each cycle it
//! waits until turnd reports no allocation, relay port or timer, then
//! prints turnd's RSS and open descriptors; it fails when either grows more
//! than 10 % over the first cycle or anything is left. The relay range is
//! 10000-30000, below the ephemeral ports the clients' own sockets take on
//! this same host.
//!
//!     soak TURND_BINARY ALLOCATIONS MINUTES

#[path = "../tests/common/soak.rs"]
mod soak;
#[path = "../tests/common/stunc.rs"]
mod stunc;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "soak-secret";
const REALM: &str = "soak";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let usage = "soak TURND_BINARY ALLOCATIONS MINUTES";
    let (Some(bin), Some(n), Some(minutes)) = (
        args.get(1),
        args.get(2).and_then(|s| s.parse::<usize>().ok()),
        args.get(3).and_then(|s| s.parse::<f64>().ok()),
    ) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let udp = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port());
    let metrics = TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port());
    let (Ok(udp), Ok(metrics)) = (udp, metrics) else {
        eprintln!("no free port");
        return ExitCode::FAILURE;
    };
    let dir = std::env::temp_dir().join(format!("turnd-soak-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let config = format!(
        "realm = \"{REALM}\"\ndata-dir = {dir:?}\nworkers = 2\nlog-level = \"warn\"\n\
         [[listener]]\naddress = \"127.0.0.1\"\nport = {udp}\n\
         [auth]\nstatic-auth-secrets = [\"{SECRET}\"]\nchallenges-per-second = 0\n\
         [relay]\nmin-port = 10000\nmax-port = 30000\ndefault-lifetime = \"2s\"\nmax-allocations-per-user = 1000000\nmax-allocations = 1000000\n\
         [peers]\nallow = [\"127.0.0.0/8\"]\n[http]\nlisten = []\n[metrics]\nlisten = [\"127.0.0.1:{metrics}\"]\n",
        dir = dir.display().to_string()
    );
    let cfg = dir.join("turnd.toml");
    if std::fs::write(&cfg, config).is_err() {
        eprintln!("cannot write {}", cfg.display());
        return ExitCode::FAILURE;
    }
    let mut child = match Command::new(bin).arg("-c").arg(&cfg).stdout(Stdio::null()).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot start {bin}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = run(child.id(), udp, metrics, n, Duration::from_secs_f64(minutes * 60.0));
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    code
}

fn run(pid: u32, udp: u16, metrics: u16, n: usize, length: Duration) -> ExitCode {
    let end = Instant::now() + Duration::from_secs(10);
    while soak::metric(metrics, "turnd_allocations").is_none() {
        if Instant::now() > end {
            eprintln!("turnd does not answer on its metrics port");
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let peer = echo_peer();
    let server = SocketAddr::from(([127, 0, 0, 1], udp));
    println!("| cycle | allocated | refreshed | bound | echoed | took | RSS after | fds after |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let start = Instant::now();
    let mut first: Option<(u64, usize)> = None;
    let mut i = 0;
    let mut failed = false;
    while start.elapsed() < length {
        let c = soak::cycle(server, SECRET.as_bytes(), REALM, peer, n, 2);
        let drained = soak::wait_drained(metrics, Duration::from_secs(60));
        let (rss, fds) = soak::usage(pid);
        println!(
            "| {i} | {} | {} | {} | {} | {:.1} s | {rss} KiB | {fds} |",
            c.allocated,
            c.refreshed,
            c.bound,
            c.echoed,
            c.took.as_secs_f64()
        );
        let (rss0, fds0) = *first.get_or_insert((rss, fds));
        if std::env::var_os("SOAK_REPORT_ONLY").is_none()
            && (!drained || c.allocated < n || rss as f64 > rss0 as f64 * 1.10 || fds > fds0 + (fds0 / 10).max(3))
        {
            println!(
                "FAILED at cycle {i}: drained {drained}, RSS {rss} vs {rss0} KiB, fds {fds} vs {fds0}, \
                 Allocate errors {:?}, unanswered {}",
                c.errors, c.unanswered
            );
            failed = true;
            break;
        }
        i += 1;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        println!(
            "ok: {i} cycles of {n} allocations in {:.0} s",
            start.elapsed().as_secs_f64()
        );
        ExitCode::SUCCESS
    }
}

/// A UDP echo on loopback (127.0.0.2: turnd never relays to its own
/// address), for as long as the process runs.
fn echo_peer() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.2:0").expect("bind");
    let addr = s.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    addr
}
