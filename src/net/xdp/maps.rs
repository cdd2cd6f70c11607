//! The program's map keys and values, laid out as `turnd.bpf.c` declares
//! them (`#[repr(C)]`, addresses, ports and channel numbers in network byte
//! order, as they are in a packet). A test compares the sizes with the BTF
//! of the object.

use std::net::{SocketAddrV4, SocketAddrV6};

/// The program's counters (`enum counter` in `turnd.bpf.c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    ToPeerV4,
    ToPeerV6,
    ToClientV4,
    ToClientV6,
    PassExpired,
    PassLength,
    PassNoRoute,
    PassTooBig,
    Redirected,
    PassNotUdp,
    PassOptions,
    PassMalformed,
    PassChecksum,
    PassOtherHost,
    PassUnknown,
    PassReversePath,
    Aborted,
}

pub const COUNTERS: usize = Counter::Aborted as usize + 1;

fn v4(a: &SocketAddrV4) -> (u32, u16) {
    (u32::from_ne_bytes(a.ip().octets()), a.port().to_be())
}

fn v6(a: &SocketAddrV6) -> ([u8; 16], u16) {
    (a.ip().octets(), a.port().to_be())
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Out4Key {
    client_ip: u32,
    listener_ip: u32,
    client_port: u16,
    listener_port: u16,
    channel: u16,
    pad: u16,
}

impl Out4Key {
    pub fn new(client: &SocketAddrV4, listener: &SocketAddrV4, channel_be: u16) -> Self {
        let (client_ip, client_port) = v4(client);
        let (listener_ip, listener_port) = v4(listener);
        Self {
            client_ip,
            listener_ip,
            client_port,
            listener_port,
            channel: channel_be,
            pad: 0,
        }
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Out4Val {
    relay_ip: u32,
    peer_ip: u32,
    relay_port: u16,
    peer_port: u16,
    slot: u32,
    until_ns: u64,
    /// This write of the route: the program's per-CPU next-hop cache
    /// (`HOPS`) holds only for the generation it was found for.
    gen: u32,
    pad: u32,
}

impl Out4Val {
    pub fn new(relay: &SocketAddrV4, peer: &SocketAddrV4, slot: u32, gen: u32, until_ns: u64) -> Self {
        let (relay_ip, relay_port) = v4(relay);
        let (peer_ip, peer_port) = v4(peer);
        Self {
            relay_ip,
            peer_ip,
            relay_port,
            peer_port,
            slot,
            until_ns,
            gen,
            pad: 0,
        }
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct In4Key {
    peer_ip: u32,
    relay_ip: u32,
    peer_port: u16,
    relay_port: u16,
}

impl In4Key {
    pub fn new(peer: &SocketAddrV4, relay: &SocketAddrV4) -> Self {
        let (peer_ip, peer_port) = v4(peer);
        let (relay_ip, relay_port) = v4(relay);
        Self {
            peer_ip,
            relay_ip,
            peer_port,
            relay_port,
        }
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct In4Val {
    client_ip: u32,
    listener_ip: u32,
    client_port: u16,
    listener_port: u16,
    channel: u16,
    pad: u16,
    slot: u32,
    /// As in [`Out4Val`].
    gen: u32,
    until_ns: u64,
}

impl In4Val {
    pub fn new(
        client: &SocketAddrV4,
        listener: &SocketAddrV4,
        channel_be: u16,
        slot: u32,
        gen: u32,
        until_ns: u64,
    ) -> Self {
        let (client_ip, client_port) = v4(client);
        let (listener_ip, listener_port) = v4(listener);
        Self {
            client_ip,
            listener_ip,
            client_port,
            listener_port,
            channel: channel_be,
            pad: 0,
            slot,
            gen,
            until_ns,
        }
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Out6Key {
    client_ip: [u8; 16],
    listener_ip: [u8; 16],
    client_port: u16,
    listener_port: u16,
    channel: u16,
    pad: u16,
}

impl Out6Key {
    pub fn new(client: &SocketAddrV6, listener: &SocketAddrV6, channel_be: u16) -> Self {
        let (client_ip, client_port) = v6(client);
        let (listener_ip, listener_port) = v6(listener);
        Self {
            client_ip,
            listener_ip,
            client_port,
            listener_port,
            channel: channel_be,
            pad: 0,
        }
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Out6Val {
    relay_ip: [u8; 16],
    peer_ip: [u8; 16],
    relay_port: u16,
    peer_port: u16,
    slot: u32,
    until_ns: u64,
    /// This write of the route: the program's per-CPU next-hop cache
    /// (`HOPS`) holds only for the generation it was found for.
    gen: u32,
    pad: u32,
}

impl Out6Val {
    pub fn new(relay: &SocketAddrV6, peer: &SocketAddrV6, slot: u32, gen: u32, until_ns: u64) -> Self {
        let (relay_ip, relay_port) = v6(relay);
        let (peer_ip, peer_port) = v6(peer);
        Self {
            relay_ip,
            peer_ip,
            relay_port,
            peer_port,
            slot,
            until_ns,
            gen,
            pad: 0,
        }
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct In6Key {
    peer_ip: [u8; 16],
    relay_ip: [u8; 16],
    peer_port: u16,
    relay_port: u16,
}

impl In6Key {
    pub fn new(peer: &SocketAddrV6, relay: &SocketAddrV6) -> Self {
        let (peer_ip, peer_port) = v6(peer);
        let (relay_ip, relay_port) = v6(relay);
        Self {
            peer_ip,
            relay_ip,
            peer_port,
            relay_port,
        }
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct In6Val {
    client_ip: [u8; 16],
    listener_ip: [u8; 16],
    client_port: u16,
    listener_port: u16,
    channel: u16,
    pad: u16,
    slot: u32,
    /// As in [`Out4Val`].
    gen: u32,
    until_ns: u64,
}

impl In6Val {
    pub fn new(
        client: &SocketAddrV6,
        listener: &SocketAddrV6,
        channel_be: u16,
        slot: u32,
        gen: u32,
        until_ns: u64,
    ) -> Self {
        let (client_ip, client_port) = v6(client);
        let (listener_ip, listener_port) = v6(listener);
        Self {
            client_ip,
            listener_ip,
            client_port,
            listener_port,
            channel: channel_be,
            pad: 0,
            slot,
            gen,
            until_ns,
        }
    }
}

/// An interface the program is attached to (`struct iface`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Iface {
    pub mac: [u8; 6],
    /// IPv4 reverse-path filtering: 0 off, 1 strict, 2 loose.
    pub rp_filter: u8,
    /// The IPv6 hop limit of a datagram sent out of it.
    pub hop_limit: u8,
}

/// Host-wide settings (`struct settings`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    /// net.ipv4.ip_default_ttl.
    pub ttl: u8,
    pub pad: u8,
    /// net.ipv4.route.min_pmtu.
    pub min_pmtu4: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ChanStats {
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
}

// SAFETY: plain #[repr(C)] integers with explicit padding fields, so every
// byte is initialised.
unsafe impl aya::Pod for Out4Key {}
unsafe impl aya::Pod for Out4Val {}
unsafe impl aya::Pod for In4Key {}
unsafe impl aya::Pod for In4Val {}
unsafe impl aya::Pod for Out6Key {}
unsafe impl aya::Pod for Out6Val {}
unsafe impl aya::Pod for In6Key {}
unsafe impl aya::Pod for In6Val {}
unsafe impl aya::Pod for ChanStats {}
unsafe impl aya::Pod for Iface {}
unsafe impl aya::Pod for Settings {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sizes `turnd.bpf.c` declares (the kernel refuses a map access of
    /// any other size).
    #[test]
    fn layouts_match_the_program() {
        assert_eq!(std::mem::size_of::<Out4Key>(), 16);
        assert_eq!(std::mem::size_of::<Out4Val>(), 32);
        assert_eq!(std::mem::size_of::<In4Key>(), 12);
        assert_eq!(std::mem::size_of::<In4Val>(), 32);
        assert_eq!(std::mem::size_of::<Out6Key>(), 40);
        assert_eq!(std::mem::size_of::<Out6Val>(), 56);
        assert_eq!(std::mem::size_of::<In6Key>(), 36);
        assert_eq!(std::mem::size_of::<In6Val>(), 56);
        assert_eq!(std::mem::size_of::<ChanStats>(), 32);
        assert_eq!(std::mem::size_of::<Iface>(), 8);
        assert_eq!(std::mem::size_of::<Settings>(), 4);
    }
}
