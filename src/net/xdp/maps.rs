//! The program's map keys and values, laid out as `turnd.bpf.c` declares
//! them (`#[repr(C)]`, addresses, ports and channel numbers in network byte
//! order, as they are in a packet). A test reads the committed object's BTF
//! and checks every struct's size and member offsets against these, and
//! [`Counter`] against the source's `enum counter`.

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
    use std::collections::HashMap;

    /// A struct as the object's BTF describes it: its size and its
    /// members' names and byte offsets, in order.
    #[derive(Debug, PartialEq)]
    struct Layout {
        size: usize,
        members: Vec<(String, usize)>,
    }

    fn u16_at(b: &[u8], at: usize) -> usize {
        usize::from(u16::from_le_bytes([b[at], b[at + 1]]))
    }

    fn u32_at(b: &[u8], at: usize) -> usize {
        u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
    }

    /// The `.BTF` section of a little-endian ELF64 object.
    fn btf_section(elf: &[u8]) -> &[u8] {
        assert_eq!(&elf[..6], b"\x7fELF\x02\x01", "a little-endian ELF64 object");
        let shoff = u32_at(elf, 0x28) | (u32_at(elf, 0x2c) << 32);
        let (shentsize, shnum, shstrndx) = (u16_at(elf, 0x3a), u16_at(elf, 0x3c), u16_at(elf, 0x3e));
        let section = |i: usize| {
            let h = shoff + i * shentsize;
            let off = u32_at(elf, h + 0x18) | (u32_at(elf, h + 0x1c) << 32);
            let size = u32_at(elf, h + 0x20) | (u32_at(elf, h + 0x24) << 32);
            (u32_at(elf, h), &elf[off..off + size])
        };
        let names = section(shstrndx).1;
        (0..shnum)
            .map(section)
            .find(|(name, _)| names[*name..].starts_with(b".BTF\0"))
            .map(|(_, data)| data)
            .expect("the object has a .BTF section")
    }

    /// Every named struct in the BTF (kernel's btf.h layout: a header,
    /// then 12-byte types each followed by its kind's extra data, then
    /// the strings).
    fn btf_structs(btf: &[u8]) -> HashMap<String, Layout> {
        assert_eq!(u16_at(btf, 0), 0xeb9f, "BTF magic");
        let hdr = u32_at(btf, 4);
        let (types, types_len) = (hdr + u32_at(btf, 8), u32_at(btf, 12));
        let strings = hdr + u32_at(btf, 16);
        let name = |off: usize| {
            let s = &btf[strings + off..];
            String::from_utf8_lossy(&s[..s.iter().position(|&c| c == 0).unwrap_or(0)]).into_owned()
        };
        let mut structs = HashMap::new();
        let mut at = types;
        while at < types + types_len {
            let (name_off, info, size) = (u32_at(btf, at), u32_at(btf, at + 4), u32_at(btf, at + 8));
            let (kind, vlen) = ((info >> 24) & 0x1f, info & 0xffff);
            at += 12;
            let extra = match kind {
                1 | 14 | 17 => 4,             // int, var, decl_tag
                3 => 12,                      // array
                4 | 5 | 15 | 19 => 12 * vlen, // struct, union, datasec, enum64
                6 | 13 => 8 * vlen,           // enum, func_proto
                _ => 0,
            };
            if kind == 4 && name_off != 0 {
                let members = (0..vlen)
                    .map(|i| {
                        let m = at + 12 * i;
                        (name(u32_at(btf, m)), (u32_at(btf, m + 8) & 0xff_ffff) / 8)
                    })
                    .collect();
                structs.insert(name(name_off), Layout { size, members });
            }
            at += extra;
        }
        structs
    }

    /// The Rust side of a struct, from `offset_of!` on the named fields.
    macro_rules! layout {
        ($t:ty, $($f:ident),+) => {
            Layout {
                size: std::mem::size_of::<$t>(),
                members: vec![$((stringify!($f).to_string(), std::mem::offset_of!($t, $f))),+],
            }
        };
    }

    /// Every key and value the daemon shares with the program has the
    /// layout the committed object's BTF gives its C struct: the same size
    /// and the same members at the same offsets (the kernel refuses a map
    /// access of another size; a member out of place would be read as
    /// another). The counters number as `enum counter` does.
    #[test]
    fn layouts_match_the_programs_btf() {
        let structs = btf_structs(btf_section(super::super::OBJECT));
        let ours = [
            (
                "out4_key",
                layout!(
                    Out4Key,
                    client_ip,
                    listener_ip,
                    client_port,
                    listener_port,
                    channel,
                    pad
                ),
            ),
            (
                "out4_val",
                layout!(Out4Val, relay_ip, peer_ip, relay_port, peer_port, slot, until_ns, gen, pad),
            ),
            ("in4_key", layout!(In4Key, peer_ip, relay_ip, peer_port, relay_port)),
            (
                "in4_val",
                layout!(
                    In4Val,
                    client_ip,
                    listener_ip,
                    client_port,
                    listener_port,
                    channel,
                    pad,
                    slot,
                    gen,
                    until_ns
                ),
            ),
            (
                "out6_key",
                layout!(
                    Out6Key,
                    client_ip,
                    listener_ip,
                    client_port,
                    listener_port,
                    channel,
                    pad
                ),
            ),
            (
                "out6_val",
                layout!(Out6Val, relay_ip, peer_ip, relay_port, peer_port, slot, until_ns, gen, pad),
            ),
            ("in6_key", layout!(In6Key, peer_ip, relay_ip, peer_port, relay_port)),
            (
                "in6_val",
                layout!(
                    In6Val,
                    client_ip,
                    listener_ip,
                    client_port,
                    listener_port,
                    channel,
                    pad,
                    slot,
                    gen,
                    until_ns
                ),
            ),
            (
                "chan_stats",
                layout!(
                    ChanStats,
                    to_peer_packets,
                    to_peer_bytes,
                    to_client_packets,
                    to_client_bytes
                ),
            ),
            ("iface", layout!(Iface, mac, rp_filter, hop_limit)),
            ("settings", layout!(Settings, ttl, pad, min_pmtu4)),
        ];
        for (c, rust) in ours {
            assert_eq!(structs.get(c), Some(&rust), "struct {c} in turnd.bpf.o against maps.rs");
        }
        // `enum counter` is no type of the object (only its values are
        // used), so it is read from the source `src/net/xdp/build --check`
        // proves the object is built from.
        let source = include_str!("turnd.bpf.c");
        let body = source
            .split("enum counter {")
            .nth(1)
            .and_then(|b| b.split("};").next())
            .expect("enum counter");
        let enumerators: HashMap<String, usize> = body
            .split(',')
            .map(|e| {
                e.lines()
                    .map(|l| l.split("//").next().unwrap_or(""))
                    .collect::<String>()
                    .trim()
                    .to_string()
            })
            .filter(|e| !e.is_empty())
            .enumerate()
            .map(|(i, e)| (e, i))
            .collect();
        assert_eq!(
            enumerators.get("C_COUNTERS"),
            Some(&COUNTERS),
            "enum counter has COUNTERS entries"
        );
        use Counter::*;
        let all = [
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
        ];
        assert_eq!(all.len(), COUNTERS);
        for c in all {
            // ToPeerV4 is C_TO_PEER_V4.
            let name = format!("{c:?}").chars().fold(String::from("C"), |mut n, ch| {
                if ch.is_ascii_uppercase() {
                    n.push('_');
                }
                n.push(ch.to_ascii_uppercase());
                n
            });
            assert_eq!(
                enumerators.get(&name),
                Some(&(c as usize)),
                "{name} against Counter::{c:?}"
            );
        }
    }
}
