//! One soak cycle against a running turnd: `n` clients, each on its own UDP
//! socket, allocate (401 round, then signed), refresh to a short lifetime,
//! bind a channel to an echo peer and relay one message, then go silent so
//! their allocations expire. Shared by `tests/soak.rs` (short, in CI) and
//! `examples/soak.rs` (long, `bin/soak`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use stun::message::*;

use super::stunc::*;

/// What one cycle did.
#[derive(Debug, Default)]
pub struct Cycle {
    pub allocated: usize,
    pub refreshed: usize,
    pub bound: usize,
    pub echoed: usize,
    pub took: Duration,
    /// Error codes of the signed Allocates, and how many had no answer.
    pub errors: std::collections::BTreeMap<u16, usize>,
    pub unanswered: usize,
}

struct Slot {
    sock: UdpSocket,
    cred: Option<Cred>,
    pending: Option<Message>,
}

/// Sends each slot's pending message (again after `resend`) until every one
/// is answered or `tries` rounds pass; returns the answers by slot index.
fn exchange(slots: &mut [Slot], server: SocketAddr, tries: u32) -> HashMap<usize, Message> {
    let mut answers = HashMap::new();
    let mut buf = [0u8; 2048];
    for _ in 0..tries {
        // Paced, so that a burst of thousands does not overflow the
        // server's receive buffer (lost requests are sent again anyway).
        let mut sent = 0;
        for (i, s) in slots.iter().enumerate() {
            if let (Some(m), false) = (&s.pending, answers.contains_key(&i)) {
                let _ = s.sock.send_to(&m.raw, server);
                sent += 1;
                if sent % 200 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
        let end = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < end && answers.len() < slots.iter().filter(|s| s.pending.is_some()).count() {
            let mut got = false;
            for (i, s) in slots.iter().enumerate() {
                while let Ok(n) = s.sock.recv(&mut buf) {
                    got = true;
                    if buf[0] >= 0x40 {
                        continue;
                    }
                    let mut m = Message::new();
                    if m.unmarshal_binary(&buf[..n]).is_ok()
                        && s.pending.as_ref().is_some_and(|p| p.transaction_id == m.transaction_id)
                    {
                        answers.insert(i, m);
                    }
                }
            }
            if !got {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        if answers.len() == slots.iter().filter(|s| s.pending.is_some()).count() {
            break;
        }
    }
    answers
}

/// Runs one cycle of `n` clients against `server` (secret `secret`, realm
/// `realm`), relaying through the UDP echo `peer`; allocations are left to
/// expire after `lifetime` seconds.
pub fn cycle(server: SocketAddr, secret: &[u8], realm: &str, peer: SocketAddr, n: usize, lifetime: u64) -> Cycle {
    let start = Instant::now();
    let mut out = Cycle::default();
    let mut slots: Vec<Slot> = (0..n)
        .map(|_| {
            let sock = UdpSocket::bind("127.0.0.1:0").expect("bind (raise ulimit -n?)");
            sock.set_nonblocking(true).expect("nonblocking");
            Slot {
                sock,
                cred: None,
                pending: Some(build(req(METHOD_ALLOCATE), vec![transport_udp()], None, false)),
            }
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // 401s: the nonce.
    let answers = exchange(&mut slots, server, 5);
    for (i, s) in slots.iter_mut().enumerate() {
        s.pending = None;
        if let Some(nonce) = answers.get(&i).and_then(|r| text(r, stun::attributes::ATTR_NONCE)) {
            let (u, p) = turnd::auth::rest_credentials(
                secret,
                Some(&format!("soak{}", i % 50)),
                Duration::from_secs(3600),
                now,
                ':',
            );
            let cred = Cred {
                user: u,
                realm: realm.into(),
                pass: p,
                nonce,
            };
            s.pending = Some(build(req(METHOD_ALLOCATE), vec![transport_udp()], Some(&cred), false));
            s.cred = Some(cred);
        }
    }
    // Signed Allocates.
    let answers = exchange(&mut slots, server, 5);
    out.allocated = answers.values().filter(|r| is_success(r)).count();
    for r in answers.values() {
        if let Some(c) = error_code(r) {
            *out.errors.entry(c).or_default() += 1;
        }
    }
    out.unanswered = slots.iter().filter(|s| s.cred.is_some()).count() - answers.len();
    let ok = |answers: &HashMap<usize, Message>, i: usize| answers.get(&i).is_some_and(is_success);
    for (i, s) in slots.iter_mut().enumerate() {
        s.pending = match (&s.cred, ok(&answers, i)) {
            (Some(c), true) => Some(build(
                req(METHOD_REFRESH),
                vec![lifetime_attr(lifetime)],
                Some(c),
                false,
            )),
            _ => None,
        };
    }
    let answers = exchange(&mut slots, server, 5);
    out.refreshed = answers.values().filter(|r| is_success(r)).count();
    for (i, s) in slots.iter_mut().enumerate() {
        s.pending = match (&s.cred, ok(&answers, i)) {
            (Some(c), true) => Some(build(
                req(METHOD_CHANNEL_BIND),
                vec![channel(0x4000), super::stunc::peer(peer)],
                Some(c),
                false,
            )),
            _ => None,
        };
    }
    let answers = exchange(&mut slots, server, 5);
    out.bound = answers.values().filter(|r| is_success(r)).count();
    // One message each through the channel, paced (the echo peer is one
    // socket with a default receive buffer); count the echoes.
    for (i, s) in slots.iter().enumerate() {
        if ok(&answers, i) {
            let _ = s.sock.send_to(&channel_data(0x4000, b"soak", false), server);
        }
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let end = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 2048];
    let mut echoed = vec![false; n];
    while Instant::now() < end && out.echoed < out.bound {
        let mut got = false;
        for (i, s) in slots.iter().enumerate() {
            while let Ok(k) = s.sock.recv(&mut buf) {
                got = true;
                if k >= 8 && &buf[4..8] == b"soak" && !echoed[i] {
                    echoed[i] = true;
                    out.echoed += 1;
                }
            }
        }
        if !got {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    out.took = start.elapsed();
    out
}

/// RSS (KiB) and open file descriptors of process `pid`.
pub fn usage(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}

/// A gauge or counter from a scrape of `/metrics` at `port`.
pub fn metric(port: u16, series: &str) -> Option<f64> {
    let text = ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Waits (bounded) until turnd reports no allocation, no relay port in
/// use and no pending timer.
pub fn wait_drained(metrics_port: u16, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        let zero = |s| metric(metrics_port, s) == Some(0.0);
        if zero("turnd_allocations") && zero("turnd_relay_ports_in_use") && zero("turnd_timers") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}
