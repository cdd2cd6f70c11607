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
    let s: std::net::UdpSocket = s.into();
    relay_headers(&s, addr.is_ipv6());
    Ok(s)
}

/// Lets the kernel fragment a datagram too big for the path instead of
/// refusing it. quinn-udp sets DF on every datagram (IP_PMTUDISC_PROBE, for
/// QUIC's path MTU discovery, and IPV6_DONTFRAG); a relay must not: a
/// peer's full-size 1472-byte datagram becomes 1476 bytes of ChannelData,
/// over a 1500-byte link, and was dropped (IPv4; over IPv6 `sendmsg` failed
/// with EMSGSIZE while IPV6_DONTFRAG stayed set). Fragmenting is what a
/// router would do and what coturn does. Also the IPv6 header fields of
/// [`relay_headers`].
pub fn allow_fragments(s: &std::net::UdpSocket, v6: bool) {
    let opts: &[(libc::c_int, libc::c_int, libc::c_int)] = if v6 {
        &[
            (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, libc::IPV6_PMTUDISC_WANT),
            (libc::IPPROTO_IPV6, IPV6_DONTFRAG, 0),
        ]
    } else {
        &[(libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_WANT)]
    };
    for &(level, opt, val) in opts {
        if let Err(e) = set_int(s, level, opt, val) {
            tracing::debug!(error = %e, opt, "cannot allow fragments");
        }
    }
    relay_headers(s, v6);
}

/// The IP header fields a relayed datagram leaves with, the same from a
/// listener or relay socket as from the kernel path (RFC 8656 §14): TOS 0
/// (no cmsg sets one) and, over IPv6, flow label 0 (Linux would otherwise
/// hash one per flow, net.ipv6.auto_flowlabels).
pub fn relay_headers(s: &std::net::UdpSocket, v6: bool) {
    if v6 {
        if let Err(e) = set_int(s, libc::IPPROTO_IPV6, IPV6_AUTOFLOWLABEL, 0) {
            tracing::debug!(error = %e, "cannot turn automatic flow labels off");
        }
    }
}

/// `IPV6_DONTFRAG` and `IPV6_AUTOFLOWLABEL` from linux/in6.h.
const IPV6_DONTFRAG: libc::c_int = 62;
const IPV6_AUTOFLOWLABEL: libc::c_int = 70;

fn set_int(s: &impl std::os::fd::AsRawFd, level: libc::c_int, opt: libc::c_int, val: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid socket descriptor and a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets a buffer size past the sysctl limit (needs CAP_NET_ADMIN); whether
/// it took.
fn force_buffer(s: &Socket, opt: libc::c_int, bytes: libc::c_int) -> bool {
    set_int(s, libc::SOL_SOCKET, opt, bytes).is_ok()
}
