//! ChannelData load for `bin/bench-xdp`, fast enough not to be the
//! bottleneck: batched system calls (sendmmsg/recvmmsg) on both sides.
//!
//!     loadgen echo PEER_ADDR SECONDS
//!         echo every datagram back to its sender, in batches, for SECONDS
//!     loadgen client SERVER SECRET PEER_ADDR ALLOCATIONS RATE SECONDS SIZE
//!         ALLOCATIONS allocations (REST credentials), each with channel
//!         0x4000 bound to PEER_ADDR, then RATE ChannelData messages a
//!         second of SIZE bytes in all for SECONDS; prints one line of
//!         JSON: offered and sent rates, echoed messages, loss, round-trip
//!         p50 and p99 in microseconds.
//!
//! Each message carries a sequence number and its send time; an echo is
//! counted once, late or not, if it comes back before the end plus 300 ms.

#[path = "../tests/common/stunc.rs"]
mod stunc;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use stun::message::*;
use stunc::*;

const BATCH: usize = 64;
const CHANNEL: u16 = 0x4000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "loadgen echo PEER SECONDS | loadgen client SERVER SECRET PEER ALLOCATIONS RATE SECONDS SIZE";
    match args.get(1).map(String::as_str) {
        Some("echo") => {
            let peer: SocketAddr = args.get(2).and_then(|s| s.parse().ok()).expect(usage);
            let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).expect(usage);
            echo(peer, Duration::from_secs(secs));
        }
        Some("client") => {
            let server: SocketAddr = args.get(2).and_then(|s| s.parse().ok()).expect(usage);
            let secret = args.get(3).expect(usage);
            let peer: SocketAddr = args.get(4).and_then(|s| s.parse().ok()).expect(usage);
            let n: usize = args.get(5).and_then(|s| s.parse().ok()).expect(usage);
            let rate: u64 = args.get(6).and_then(|s| s.parse().ok()).expect(usage);
            let secs: u64 = args.get(7).and_then(|s| s.parse().ok()).expect(usage);
            let size: usize = args.get(8).and_then(|s| s.parse().ok()).expect(usage);
            client(server, secret, peer, n, rate, Duration::from_secs(secs), size.max(16));
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}

fn now_ns(t0: Instant) -> u64 {
    t0.elapsed().as_nanos() as u64
}

/// One recvmmsg into `bufs`: the lengths and sources.
fn recv_batch(fd: i32, bufs: &mut [[u8; 2048]], out: &mut Vec<(usize, libc::sockaddr_storage)>, flags: i32) -> usize {
    out.clear();
    // SAFETY: zeroed sockaddr_storage and msghdrs are valid initial values.
    let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; bufs.len()];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: as above.
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; bufs.len()];
    for (i, m) in msgs.iter_mut().enumerate() {
        m.msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
        m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        m.msg_hdr.msg_iov = &mut iovs[i];
        m.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: msgs, iovs and addrs outlive the call and describe valid buffers.
    let n = unsafe { libc::recvmmsg(fd, msgs.as_mut_ptr(), msgs.len() as u32, flags, std::ptr::null_mut()) };
    if n <= 0 {
        return 0;
    }
    for i in 0..n as usize {
        out.push((msgs[i].msg_len as usize, addrs[i]));
    }
    n as usize
}

/// One sendmmsg of `msgs` (buffer, length, destination), unconnected when
/// a destination is given.
fn send_batch(fd: i32, msgs: &mut [(&[u8], Option<libc::sockaddr_storage>)]) -> usize {
    let mut iovs: Vec<libc::iovec> = msgs
        .iter()
        .map(|(b, _)| libc::iovec {
            iov_base: b.as_ptr() as *mut _,
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: zeroed mmsghdrs are valid initial values.
    let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; msgs.len()];
    for (i, h) in hdrs.iter_mut().enumerate() {
        if let Some(a) = msgs[i].1.as_mut() {
            h.msg_hdr.msg_name = (a as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        }
        h.msg_hdr.msg_iov = &mut iovs[i];
        h.msg_hdr.msg_iovlen = 1;
    }
    let mut done = 0;
    while done < hdrs.len() {
        // SAFETY: the headers point at live buffers and addresses.
        let n = unsafe { libc::sendmmsg(fd, hdrs[done..].as_mut_ptr(), (hdrs.len() - done) as u32, 0) };
        if n <= 0 {
            break;
        }
        done += n as usize;
    }
    done
}

fn echo(addr: SocketAddr, limit: Duration) {
    let s = UdpSocket::bind(addr).expect("bind the peer");
    s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    set_buffers(&s);
    let fd = s.as_raw_fd();
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut got = Vec::with_capacity(BATCH);
    let end = Instant::now() + limit;
    let mut echoed = 0u64;
    while Instant::now() < end {
        // Blocks for the first datagram only (and the read timeout).
        let n = recv_batch(fd, &mut bufs, &mut got, libc::MSG_WAITFORONE);
        if n == 0 {
            continue;
        }
        let mut out: Vec<(&[u8], Option<libc::sockaddr_storage>)> = got
            .iter()
            .zip(bufs.iter())
            .map(|((len, a), b)| (&b[..*len], Some(*a)))
            .collect();
        echoed += send_batch(fd, &mut out) as u64;
    }
    println!("{{\"echoed\":{echoed}}}");
}

fn set_buffers(s: &UdpSocket) {
    let sock = socket2::SockRef::from(s);
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
}

/// An allocation with channel 0x4000 bound to `peer`, on its own socket
/// connected to `server`.
fn allocate(server: SocketAddr, user: &str, pass: &str, peer: SocketAddr, local: std::net::IpAddr) -> UdpSocket {
    let s = UdpSocket::bind(SocketAddr::new(local, 0)).expect("bind");
    s.connect(server).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    set_buffers(&s);
    let ask = |m: &Message| -> Message {
        for _ in 0..5 {
            s.send(&m.raw).expect("send");
            let mut buf = [0u8; 2048];
            while let Ok(n) = s.recv(&mut buf) {
                if buf[0] < 0x40 {
                    let r = decode(&buf[..n]);
                    if r.transaction_id == m.transaction_id {
                        return r;
                    }
                }
            }
        }
        panic!("no answer from {server}");
    };
    let r = ask(&build(req(METHOD_ALLOCATE), vec![transport_udp()], None, true));
    let cred = Cred {
        user: user.into(),
        realm: text(&r, stun::attributes::ATTR_REALM).expect("realm"),
        pass: pass.into(),
        nonce: text(&r, stun::attributes::ATTR_NONCE).expect("nonce"),
    };
    let r = ask(&build(
        req(METHOD_ALLOCATE),
        vec![transport_udp(), lifetime_attr(600)],
        Some(&cred),
        true,
    ));
    assert!(is_success(&r), "allocate: {r}");
    let r = ask(&build(
        req(METHOD_CHANNEL_BIND),
        vec![channel(CHANNEL), stunc::peer(peer)],
        Some(&cred),
        true,
    ));
    assert!(is_success(&r), "channel bind: {r}");
    s.set_nonblocking(true).expect("nonblocking");
    s
}

#[allow(clippy::too_many_arguments)]
fn client(server: SocketAddr, secret: &str, peer: SocketAddr, n: usize, rate: u64, limit: Duration, size: usize) {
    let (user, pass) = turnd::auth::rest_credentials(
        secret.as_bytes(),
        Some("loadgen"),
        Duration::from_secs(3600),
        turnd::serve::unix_now(),
        ':',
    );
    let local = {
        let probe = UdpSocket::bind("0.0.0.0:0").expect("probe");
        probe.connect(server).expect("route");
        probe.local_addr().expect("addr").ip()
    };
    let socks: Vec<UdpSocket> = (0..n).map(|_| allocate(server, &user, &pass, peer, local)).collect();
    let fds: Vec<i32> = socks.iter().map(|s| s.as_raw_fd()).collect();
    let t0 = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The receiver: every socket, round robin, until told to stop.
    let rx = {
        let fds = fds.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut bufs = vec![[0u8; 2048]; BATCH];
            let mut got = Vec::with_capacity(BATCH);
            let mut rtts: Vec<u32> = Vec::new();
            let mut seen = 0u64;
            let mut pfds: Vec<libc::pollfd> = fds
                .iter()
                .map(|fd| libc::pollfd {
                    fd: *fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: pfds is a valid array of pollfd.
                let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 50) };
                if r <= 0 {
                    continue;
                }
                for p in pfds.iter_mut() {
                    if p.revents & libc::POLLIN == 0 {
                        continue;
                    }
                    loop {
                        let k = recv_batch(p.fd, &mut bufs, &mut got, 0);
                        let now = now_ns(t0);
                        for ((len, _), b) in got.iter().zip(bufs.iter()) {
                            if *len >= 4 + 16 && b[0] >> 6 == 1 {
                                let sent = u64::from_be_bytes(b[12..20].try_into().expect("8 bytes"));
                                rtts.push((now.saturating_sub(sent) / 1000) as u32);
                                seen += 1;
                            }
                        }
                        if k < BATCH {
                            break;
                        }
                    }
                }
            }
            (seen, rtts)
        })
    };
    // The sender: every millisecond, the messages due by now, spread over
    // the allocations, one sendmmsg per socket.
    let mut payload = vec![0u8; 4 + size];
    payload[..2].copy_from_slice(&CHANNEL.to_be_bytes());
    payload[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    let mut sent = 0u64;
    let mut seq = 0u64;
    let start = Instant::now();
    let mut per_sock: Vec<Vec<Vec<u8>>> = vec![Vec::new(); n];
    while start.elapsed() < limit {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        if due <= seq {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        // At most 50 ms of backlog at once: a sender that falls behind
        // offers less, and says so (sent rate below offered).
        let take = (due - seq).min(rate / 20 + 1);
        for v in per_sock.iter_mut() {
            v.clear();
        }
        let stamp = now_ns(t0);
        for k in 0..take {
            let mut m = payload.clone();
            m[4..12].copy_from_slice(&(seq + k).to_be_bytes());
            m[12..20].copy_from_slice(&stamp.to_be_bytes());
            per_sock[((seq + k) as usize) % n].push(m);
        }
        seq = due;
        for (i, v) in per_sock.iter().enumerate() {
            if v.is_empty() {
                continue;
            }
            let mut batch: Vec<(&[u8], Option<libc::sockaddr_storage>)> = v.iter().map(|m| (&m[..], None)).collect();
            sent += send_batch(fds[i], &mut batch) as u64;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (seen, mut rtts) = rx.join().expect("receiver");
    rtts.sort_unstable();
    let pct = |p: f64| {
        rtts.get(((rtts.len() as f64 * p) as usize).min(rtts.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let loss = if sent == 0 {
        100.0
    } else {
        100.0 * (1.0 - seen as f64 / sent as f64)
    };
    println!(
        "{{\"offered\":{rate},\"sent_rate\":{:.0},\"echoed_rate\":{:.0},\"sent\":{sent},\"echoed\":{seen},\"loss\":{loss:.3},\"p50_us\":{},\"p99_us\":{}}}",
        sent as f64 / elapsed,
        seen as f64 / elapsed,
        pct(0.5),
        pct(0.99)
    );
    drop(socks);
}
