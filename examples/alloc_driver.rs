//! Allocation load for `bin/bench`, built on the `turn` crate's client:
//! `COUNT` clients, each on its own UDP socket, allocate with TURN REST
//! credentials, `CONCURRENCY` at a time. Prints the allocation rate; with
//! `--hold SECS` keeps every allocation open that long (refreshing them as
//! the client does) before releasing them, for the idle-memory measurement.
//!
//!     alloc_driver SERVER SECRET COUNT CONCURRENCY [--hold SECS] [--local 127.x.y.z]
//!
//! uclient allocates about 35 sessions a second whatever the server does (it
//! paces its own session starts), so it cannot measure allocation speed.

#[path = "../tests/common/turnc.rs"]
mod turnc;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use webrtc_util::Conn;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "alloc_driver SERVER SECRET COUNT CONCURRENCY [--hold SECS] [--local IP]";
    let server: SocketAddr = args.get(1).and_then(|s| s.parse().ok()).expect(usage);
    let secret = args.get(2).expect(usage).clone();
    let count: usize = args.get(3).and_then(|s| s.parse().ok()).expect(usage);
    let concurrency: usize = args.get(4).and_then(|s| s.parse().ok()).expect(usage);
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let hold = flag("--hold").map(|s| Duration::from_secs(s.parse().expect("--hold SECS")));
    let local = flag("--local").unwrap_or_else(|| "127.0.0.1".into());

    let (user, pass) = turnd::auth::rest_credentials(
        secret.as_bytes(),
        Some("bench"),
        Duration::from_secs(3600),
        turnd::serve::unix_now(),
        ':',
    );
    let gate = Arc::new(Semaphore::new(concurrency));
    let failed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let permit = gate.clone().acquire_owned().await.expect("semaphore");
        let (user, pass, local, failed) = (user.clone(), pass.clone(), local.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let held = allocate(server, &local, &user, &pass).await;
            if held.is_none() {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
            held
        }));
    }
    let mut held = Vec::with_capacity(count);
    for t in tasks {
        if let Ok(Some(h)) = t.await {
            held.push(h);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "allocated {} of {count} in {secs:.3} s: {:.0} allocations/s ({} failed)",
        held.len(),
        held.len() as f64 / secs,
        failed.load(Ordering::Relaxed)
    );
    if let Some(h) = hold {
        println!("holding {} allocations for {} s", held.len(), h.as_secs());
        tokio::time::sleep(h).await;
    }
    for (client, relay) in held {
        let _ = relay.close().await;
        let _ = client.close().await;
    }
}

type Held = (turn::client::Client, Box<dyn Conn + Send + Sync>);

async fn allocate(server: SocketAddr, local: &str, user: &str, pass: &str) -> Option<Held> {
    let sock = tokio::net::UdpSocket::bind(format!("{local}:0")).await.ok()?;
    let client = turnc::listening_client(sock, server, user, pass).await.ok()?;
    match tokio::time::timeout(Duration::from_secs(10), client.allocate()).await {
        Ok(Ok(relay)) => Some((client, Box::new(relay))),
        _ => {
            let _ = client.close().await;
            None
        }
    }
}
