//! Crafted Ethernet frames for the kernel-path parity tests (tests/xdp.rs):
//! UDP over IPv4 and IPv6 built with valid checksums and then bent one field
//! at a time, sent onto a link from inside a namespace with an AF_PACKET
//! socket, and every frame arriving on another link read off it, whatever
//! its checksums say (a socket would never see a datagram whose checksum
//! fails: a capture does).

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::netns::{enter, Topo};

/// Offsets in an IPv4 frame (Ethernet, a 20-byte IP header, UDP).
pub mod v4 {
    pub const VERSION: usize = 14;
    pub const TOS: usize = 15;
    pub const ID: usize = 18;
    pub const FRAG: usize = 20;
    pub const TTL: usize = 22;
    pub const IP_SUM: usize = 24;
    pub const UDP: usize = 34;
    pub const UDP_SUM: usize = 40;
}

/// Offsets in an IPv6 frame (Ethernet, the fixed header, UDP).
pub mod v6 {
    pub const VERSION: usize = 14;
    pub const HOP_LIMIT: usize = 21;
    pub const UDP: usize = 54;
    pub const UDP_SUM: usize = 60;
}

const ETH_P_ALL: u16 = 0x0003;
const PACKET_OUTGOING: u8 = 4;

fn sum16(data: &[u8], mut sum: u32) -> u32 {
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The UDP pseudo-header sum of a frame (IPv4 or IPv6).
fn pseudo(f: &[u8], udp: usize) -> u32 {
    let ulen = &f[udp + 4..udp + 6];
    if f[12..14] == [0x08, 0x00] {
        let s = sum16(&f[26..34], 0);
        sum16(ulen, s + 17)
    } else {
        let s = sum16(&f[22..54], 0);
        sum16(ulen, s + 17)
    }
}

/// Sets the IPv4 header checksum and the UDP checksum of `f` right.
pub fn fix(f: &mut [u8]) {
    let (udp, sum_at) = if f[12..14] == [0x08, 0x00] {
        f[v4::IP_SUM..v4::IP_SUM + 2].copy_from_slice(&[0, 0]);
        let c = !fold(sum16(&f[14..34], 0));
        f[v4::IP_SUM..v4::IP_SUM + 2].copy_from_slice(&c.to_be_bytes());
        (v4::UDP, v4::UDP_SUM)
    } else {
        (v6::UDP, v6::UDP_SUM)
    };
    f[sum_at..sum_at + 2].copy_from_slice(&[0, 0]);
    let ulen = u16::from_be_bytes([f[udp + 4], f[udp + 5]]) as usize;
    let c = !fold(sum16(&f[udp..udp + ulen], pseudo(f, udp)));
    let c = if c == 0 { 0xffff } else { c };
    f[sum_at..sum_at + 2].copy_from_slice(&c.to_be_bytes());
}

/// A UDP datagram from `src` to `dst` in an Ethernet frame with valid
/// checksums: IPv4 with TOS 0, identification 0x1111, DF clear, TTL 64;
/// IPv6 with traffic class 0, flow label 0, hop limit 64.
pub fn udp(smac: [u8; 6], dmac: [u8; 6], src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let ulen = (8 + payload.len()) as u16;
    let mut f = Vec::with_capacity(62 + payload.len());
    f.extend_from_slice(&dmac);
    f.extend_from_slice(&smac);
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
            f.extend_from_slice(&(20 + ulen).to_be_bytes());
            f.extend_from_slice(&[0x11, 0x11, 0, 0, 64, 17, 0, 0]);
            f.extend_from_slice(&s.ip().octets());
            f.extend_from_slice(&d.ip().octets());
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&ulen.to_be_bytes());
            f.extend_from_slice(&[17, 64]);
            f.extend_from_slice(&s.ip().octets());
            f.extend_from_slice(&d.ip().octets());
        }
        _ => panic!("one family: {src} {dst}"),
    }
    f.extend_from_slice(&src.port().to_be_bytes());
    f.extend_from_slice(&dst.port().to_be_bytes());
    f.extend_from_slice(&ulen.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    fix(&mut f);
    f
}

/// The MAC of `dev` in namespace `ns`.
pub fn mac(ns: &str, dev: &str) -> [u8; 6] {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "link", "show", dev])
        .output()
        .expect("ip runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC for {dev} in {ns}: {text}"));
    let mut m = [0u8; 6];
    for (b, h) in m.iter_mut().zip(hex.split(':')) {
        *b = u8::from_str_radix(h, 16).expect("hex");
    }
    m
}

/// An AF_PACKET socket on `dev` in the calling thread's namespace.
fn packet_socket(dev: &str, protocol: u16) -> OwnedFd {
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol.to_be()));
        assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let name = std::ffi::CString::new(dev).expect("name");
        let index = libc::if_nametoindex(name.as_ptr());
        assert!(index > 0, "no interface {dev}");
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = protocol.to_be();
        sll.sll_ifindex = index as i32;
        let rc = libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(rc, 0, "bind to {dev}: {}", std::io::Error::last_os_error());
        fd
    }
}

/// Sends `frames` as they are out of `dev` in namespace `which`.
pub fn inject(t: &Topo, which: char, dev: &str, frames: &[Vec<u8>]) {
    let dev = dev.to_string();
    let frames = frames.to_vec();
    let ns = t.ns(which);
    std::thread::spawn(move || {
        enter(&ns);
        let fd = packet_socket(&dev, 0);
        for f in frames {
            // SAFETY: sends `f.len()` bytes from a live buffer.
            let n = unsafe { libc::send(fd.as_raw_fd(), f.as_ptr().cast(), f.len(), 0) };
            assert_eq!(n, f.len() as isize, "send: {}", std::io::Error::last_os_error());
        }
    })
    .join()
    .expect("inject");
}

/// A datagram as it crossed a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// IPv4 TOS or IPv6 traffic class.
    pub tos: u8,
    /// TTL or hop limit.
    pub ttl: u8,
    /// IPv4 identification (0 for IPv6).
    pub id: u16,
    pub df: bool,
    /// IPv6 flow label (0 for IPv4).
    pub flow: u32,
    /// The IPv4 header checksum holds (always for IPv6).
    pub ip_ok: bool,
    /// The UDP checksum holds (or is absent over IPv4).
    pub udp_ok: bool,
    pub payload: Vec<u8>,
}

/// A fragment (no UDP header to read), by its IP addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    pub src: IpAddr,
    pub dst: IpAddr,
}

fn parse(f: &[u8]) -> Option<Result<Seen, Fragment>> {
    if f.len() < 14 {
        return None;
    }
    let (ip4, hdr) = match f[12..14] {
        [0x08, 0x00] => (true, 20),
        [0x86, 0xdd] => (false, 40),
        _ => return None,
    };
    if f.len() < 14 + hdr + 8 {
        return None;
    }
    let ip = &f[14..];
    let (src, dst, tos, ttl, id, df, flow, proto, frag, ip_ok) = if ip4 {
        let s = IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]));
        let d = IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]));
        let fo = u16::from_be_bytes([ip[6], ip[7]]);
        let ok = fold(sum16(&ip[..20], 0)) == 0xffff;
        (
            s,
            d,
            ip[1],
            ip[8],
            u16::from_be_bytes([ip[4], ip[5]]),
            fo & 0x4000 != 0,
            0,
            ip[9],
            fo & 0x3fff != 0,
            ok,
        )
    } else {
        let s = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).ok()?));
        let d = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).ok()?));
        let word = u32::from_be_bytes([ip[0], ip[1], ip[2], ip[3]]);
        (
            s,
            d,
            ((word >> 20) & 0xff) as u8,
            ip[7],
            0,
            false,
            word & 0xfffff,
            ip[6],
            ip[6] == 44,
            true,
        )
    };
    if frag {
        return Some(Err(Fragment { src, dst }));
    }
    if proto != 17 {
        return None;
    }
    let u = 14 + hdr;
    let sport = u16::from_be_bytes([f[u], f[u + 1]]);
    let dport = u16::from_be_bytes([f[u + 2], f[u + 3]]);
    let ulen = u16::from_be_bytes([f[u + 4], f[u + 5]]) as usize;
    if ulen < 8 || u + ulen > f.len() {
        return None;
    }
    let check = u16::from_be_bytes([f[u + 6], f[u + 7]]);
    let udp_ok = (ip4 && check == 0) || fold(sum16(&f[u..u + ulen], pseudo(f, u))) == 0xffff;
    Some(Ok(Seen {
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        tos,
        ttl,
        id,
        df,
        flow,
        ip_ok,
        udp_ok,
        payload: f[u + 8..u + ulen].to_vec(),
    }))
}

/// Every frame arriving on a link, from [`Capture::start`] until
/// [`Capture::stop`] (frames the namespace sends are left out).
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Vec<u8>>>>,
}

/// What a capture saw: whole datagrams and fragments.
#[derive(Debug, Default)]
pub struct Seens {
    pub datagrams: Vec<Seen>,
    pub fragments: Vec<Fragment>,
}

impl Seens {
    /// The datagrams sent to `dst`.
    pub fn to(&self, dst: SocketAddr) -> Vec<&Seen> {
        self.datagrams.iter().filter(|s| s.dst == dst).collect()
    }

    /// The fragments sent to `dst`.
    pub fn fragments_to(&self, dst: IpAddr) -> usize {
        self.fragments.iter().filter(|f| f.dst == dst).count()
    }
}

impl Capture {
    /// Starts reading `dev` in namespace `which`; returns once it reads.
    pub fn start(t: &Topo, which: char, dev: &str) -> Capture {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (dev, flag) = (dev.to_string(), stop.clone());
        let ns = t.ns(which);
        let thread = std::thread::spawn(move || {
            enter(&ns);
            let fd = packet_socket(&dev, ETH_P_ALL);
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 50_000,
            };
            // SAFETY: a timeval option of the right size.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            let _ = ready_tx.send(());
            let mut frames = Vec::new();
            let end = Instant::now() + Duration::from_secs(60);
            let mut buf = vec![0u8; 65536];
            while !flag.load(Ordering::Relaxed) && Instant::now() < end {
                // SAFETY: recvfrom into a live buffer and a sockaddr_ll.
                let (n, from) = unsafe {
                    let mut from: libc::sockaddr_ll = std::mem::zeroed();
                    let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                    let n = libc::recvfrom(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&mut from as *mut libc::sockaddr_ll).cast(),
                        &mut len,
                    );
                    (n, from)
                };
                if n > 0 && from.sll_pkttype != PACKET_OUTGOING {
                    frames.push(buf[..n as usize].to_vec());
                }
            }
            frames
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("capture ready");
        Capture {
            stop,
            thread: Some(thread),
        }
    }

    /// What crossed the link, after a moment for frames still in flight.
    pub fn stop(mut self) -> Seens {
        std::thread::sleep(Duration::from_millis(300));
        self.stop.store(true, Ordering::Relaxed);
        let frames = self
            .thread
            .take()
            .map(|t| t.join().expect("capture"))
            .unwrap_or_default();
        let mut out = Seens::default();
        for f in frames {
            match parse(&f) {
                Some(Ok(s)) => out.datagrams.push(s),
                Some(Err(frag)) => out.fragments.push(frag),
                None => {}
            }
        }
        out
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
