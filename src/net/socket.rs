//! Socket setup: listeners shared between workers with SO_REUSEPORT, IPv6
//! sockets that stay IPv6-only, and relay sockets.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

fn udp_socket(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// A listener copy. Every worker binds the same address with SO_REUSEPORT and
/// the kernel keeps each client 5-tuple on one of them.
pub fn bind_listener(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = udp_socket(addr)?;
    s.set_reuse_port(true)?;
    // Deep enough for a burst of Allocates from many clients, shallow
    // enough that an overloaded worker drops rather than queues live media:
    // 1 MiB is about 1,300 small datagrams, ~25 ms at 50,000 a second (it
    // was 8 MiB: under saturation that queued half a second, where coturn
    // queued 150 ms; `bin/bench-xdp`). SO_RCVBUFFORCE passes
    // net.core.rmem_max when privileged; otherwise ask within it.
    if !force_buffer(&s, libc::SO_RCVBUFFORCE, LISTENER_RCVBUF) {
        let _ = s.set_recv_buffer_size(LISTENER_RCVBUF as usize);
    }
    if !force_buffer(&s, libc::SO_SNDBUFFORCE, 4 << 20) {
        let _ = s.set_send_buffer_size(4 << 20);
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// A listener copy's receive buffer (see `bind_listener`).
const LISTENER_RCVBUF: libc::c_int = 1 << 20;

/// A relay socket at exactly `addr`.
pub fn bind_relay(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = udp_socket(addr)?;
    // One allocation's peers: a call's media is a few hundred datagrams a
    // second; 256 KiB holds ~340 of them, and a deeper queue is only delay.
    let _ = s.set_recv_buffer_size(256 << 10);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Lets the kernel fragment a datagram too big for the path instead of
/// refusing it. quinn-udp sets DF on every datagram (IP_PMTUDISC_PROBE, for
/// QUIC's path MTU discovery); a relay must not: a peer's full-size 1472-byte
/// datagram becomes 1476 bytes of ChannelData, over a 1500-byte link, and was
/// dropped. Fragmenting is what a router would do and what coturn does.
pub fn allow_fragments(s: &std::net::UdpSocket, v6: bool) {
    use std::os::fd::AsRawFd;
    let (level, opt, val) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, libc::IPV6_PMTUDISC_WANT)
    } else {
        (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_WANT)
    };
    // SAFETY: a valid socket descriptor and a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "cannot allow fragments");
    }
}

/// Sets a buffer size past the sysctl limit (needs CAP_NET_ADMIN); whether
/// it took.
fn force_buffer(s: &Socket, opt: libc::c_int, bytes: libc::c_int) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket descriptor and a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}
