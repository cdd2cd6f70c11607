//! Which peers a relay may talk to.
//!
//! Relaying into loopback, private, link-local, metadata and other special
//! ranges turns a TURN server into an open proxy into its own network (coturn
//! CVE-2020-26262, CVE-2026-27624). The default list follows eturnal's
//! `recommended` set; IPv6 spellings that embed an IPv4 address (mapped,
//! compatible, NAT64, 6to4, Teredo) are judged by the IPv4 address inside.
//!
//! Decision: the most specific matching range among the operator's `allow`
//! list and the deny list (built-in plus the operator's `deny`) wins; a tie goes
//! to `allow`; an address no range matches is permitted. Besides ranges,
//! `allow` may name ports on one address ([`PortRule`]): exactly those
//! ports are admitted there, even on turnd's own addresses (a media server
//! beside it), whatever the ranges say.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// Ranges denied unless the operator allows them.
pub const DEFAULT_DENY: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
    "2001:db8::/32",
    // RFC 8215 local-use NAT64: a translator on the operator's own network,
    // with any RFC 6052 prefix length inside it.
    "64:ff9b:1::/48",
];

#[derive(Debug, Clone)]
pub struct PeerPolicy {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    ports: Vec<PortRule>,
}

/// Ports `first..=last` on `ip`: `"203.0.113.10:10000"`,
/// `"203.0.113.10:10000-20000"`, `"[2001:db8::10]:10000"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRule {
    pub ip: IpAddr,
    pub first: u16,
    pub last: u16,
}

impl PortRule {
    /// Whether `peer` is one of the rule's ports on its address.
    pub fn admits(&self, peer: SocketAddr) -> bool {
        peer.ip() == self.ip && (self.first..=self.last).contains(&peer.port())
    }

    /// Whether the rule and `first..=last` share a port.
    pub fn overlaps(&self, first: u16, last: u16) -> bool {
        self.first <= last && first <= self.last
    }
}

impl std::str::FromStr for PortRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (host, ports) = s
            .rsplit_once(':')
            .ok_or("neither a range (a.b.c.d/n) nor an address with ports (a.b.c.d:port)")?;
        let ip: IpAddr = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
            // Unbracketed, an IPv6 address could end in what reads as a port.
            None => host.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        }
        .ok_or("not an address with ports (a.b.c.d:port, [2001:db8::10]:port)")?;
        let port = |p: &str| -> Result<u16, String> {
            match p.trim().parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{p:?} is not a port (1-65535)")),
            }
        };
        let (first, last) = match ports.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(ports)?, port(ports)?),
        };
        if first > last {
            return Err(format!("the range {first}-{last} is empty"));
        }
        Ok(PortRule { ip, first, last })
    }
}

impl std::fmt::Display for PortRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let a = SocketAddr::new(self.ip, self.first);
        if self.first == self.last {
            write!(f, "{a}")
        } else {
            write!(f, "{a}-{}", self.last)
        }
    }
}

impl Default for PeerPolicy {
    fn default() -> Self {
        Self::new(Vec::new(), Vec::new())
    }
}

impl PeerPolicy {
    /// The built-in deny list plus the operator's `deny`, overridden where the
    /// operator's `allow` is at least as specific.
    pub fn new(allow: Vec<IpNet>, extra_deny: Vec<IpNet>) -> Self {
        let mut deny: Vec<IpNet> = DEFAULT_DENY
            .iter()
            .map(|s| s.parse().expect("built-in ranges parse"))
            .collect();
        deny.extend(extra_deny);
        Self {
            allow,
            deny,
            ports: Vec::new(),
        }
    }

    /// The same, also admitting `ports`.
    pub fn with_ports(mut self, ports: Vec<PortRule>) -> Self {
        self.ports = ports;
        self
    }

    /// Whether a port entry names `ip`.
    #[inline]
    pub fn names_ports_of(&self, ip: IpAddr) -> bool {
        !self.ports.is_empty() && self.ports.iter().any(|r| r.ip == ip)
    }

    /// Whether a port entry admits `peer`.
    #[inline]
    pub fn admits_port(&self, peer: SocketAddr) -> bool {
        !self.ports.is_empty() && self.ports.iter().any(|r| r.admits(peer))
    }

    /// Whether data may be relayed to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if !self.permits_one(ip) {
            return false;
        }
        match ip {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => embedded_ipv4(v6)
                .into_iter()
                .flatten()
                .all(|v4| self.permits_one(IpAddr::V4(v4))),
        }
    }

    fn permits_one(&self, ip: IpAddr) -> bool {
        let best = |nets: &[IpNet]| nets.iter().filter(|n| n.contains(&ip)).map(|n| n.prefix_len()).max();
        match (best(&self.allow), best(&self.deny)) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(a), Some(d)) => a >= d,
        }
    }
}

/// The addresses turnd itself uses on this host: its listeners', its
/// relays' and the advertised (external) ones. A peer there is either one of
/// turnd's own live relays, reached inside the process, or something turnd
/// must not send to whatever the peer policy says: its own listeners (a
/// loop) or another service of the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnAddresses {
    ips: Vec<IpAddr>,
    /// A listener on 0.0.0.0 (or `::`) answers on every loopback address
    /// of that family, not only on the one the interface list names.
    any_loopback_v4: bool,
    any_loopback_v6: bool,
}

impl OwnAddresses {
    /// `ips` as bound (a wildcard stands for `interfaces`, the host's
    /// addresses, and every loopback address of its family).
    pub fn new(ips: impl IntoIterator<Item = IpAddr>, interfaces: &[IpAddr]) -> Self {
        let mut own = Self::default();
        for ip in ips {
            if ip.is_unspecified() {
                own.any_loopback_v4 |= ip.is_ipv4();
                own.any_loopback_v6 |= ip.is_ipv6();
                own.ips
                    .extend(interfaces.iter().filter(|i| i.is_ipv4() == ip.is_ipv4()));
            } else {
                own.ips.push(ip.to_canonical());
            }
        }
        own.ips.sort_unstable();
        own.ips.dedup();
        own
    }

    /// Whether `ip` (in any IPv4-mapped spelling) is one of them.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.ips.contains(&ip)
            || (ip.is_loopback()
                && if ip.is_ipv4() {
                    self.any_loopback_v4
                } else {
                    self.any_loopback_v6
                })
    }
}

/// The IPv4 addresses an IPv6 address carries, in the spellings that routers
/// or the host may act on: IPv4-mapped `::ffff:0:0/96`, IPv4-compatible
/// `::/96`, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16` and
/// Teredo `2001::/32` (server and obfuscated client address).
///
/// The local-use NAT64 prefix ([RFC 8215](https://www.rfc-editor.org/rfc/rfc8215))
/// may be any of the [RFC 6052 §2.2](https://www.rfc-editor.org/rfc/rfc6052#section-2.2)
/// lengths that fit inside it (/48, /56, /64, /96), each placing the IPv4
/// address elsewhere (around the reserved octet 8): every reading is
/// returned, and an address is permitted only when all of them are.
pub fn embedded_ipv4(ip: Ipv6Addr) -> [Option<Ipv4Addr>; 4] {
    let o = ip.octets();
    let seg = ip.segments();
    let v4 = |a: u8, b: u8, c: u8, d: u8| Some(Ipv4Addr::new(a, b, c, d));
    let last32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if seg[..5] == [0, 0, 0, 0, 0] && seg[5] == 0xffff {
        return [Some(last32), None, None, None];
    }
    // IPv4-compatible, but `::` and `::1` are themselves (RFC 4291 §2.5.5.1);
    // both are on the deny list by their own right.
    if seg[..6] == [0, 0, 0, 0, 0, 0] && u32::from(last32) > 1 {
        return [Some(last32), None, None, None];
    }
    // The well-known prefix is only ever /96 (RFC 6052 §2.1).
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return [Some(last32), None, None, None];
    }
    if seg[..3] == [0x64, 0xff9b, 1] {
        return [
            v4(o[6], o[7], o[9], o[10]),   // /48
            v4(o[7], o[9], o[10], o[11]),  // /56
            v4(o[9], o[10], o[11], o[12]), // /64
            Some(last32),                  // /96
        ];
    }
    if seg[0] == 0x2002 {
        return [v4(o[2], o[3], o[4], o[5]), None, None, None];
    }
    if seg[0] == 0x2001 && seg[1] == 0 {
        let server = Ipv4Addr::new(o[4], o[5], o[6], o[7]);
        let client = Ipv4Addr::new(!o[12], !o[13], !o[14], !o[15]);
        return [Some(server), Some(client), None, None];
    }
    [None; 4]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn default_denies_special_ranges_in_every_spelling() {
        let pol = PeerPolicy::default();
        for a in [
            "0.0.0.0",
            "127.0.0.1",
            "10.1.2.3",
            "100.64.0.1",
            "169.254.169.254",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.19.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.1.1.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fd12::1",
            "fc00::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a00:1",
            // Local-use NAT64 in the RFC 6052 /64 layout: 127.0.0.1,
            // 192.168.1.1 and 10.0.0.1 around the reserved octet.
            "64:ff9b:1:0:7f:0:100:0",
            "64:ff9b:1:0:c0:a801:100:0",
            "64:ff9b:1:0:a:0:100:0",
            // … and a public address in the /96 layout: the prefix itself is
            // local-use, denied unless allowed.
            "64:ff9b:1::808:808",
            "2002:7f00:1::1",
            "2002:a00:1::1",
            // Teredo: server 127.0.0.1; client 10.0.0.1 obfuscated (~0a000001 = f5fffffe)
            "2001:0:7f00:1::1",
            "2001:0:4136:e378:8000:63bf:f5ff:fffe",
        ] {
            assert!(!pol.permits(p(a)), "{a} must be denied");
        }
        for a in [
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "1.1.1.1",
        ] {
            assert!(pol.permits(p(a)), "{a} must be allowed");
        }
    }

    #[test]
    fn own_addresses() {
        let ifs = [p("192.0.2.7"), p("127.0.0.1"), p("2001:db8::7")];
        let own = OwnAddresses::new([p("0.0.0.0"), p("198.51.100.1")], &ifs);
        for a in [
            "192.0.2.7",
            "127.0.0.1",
            "127.0.0.2",
            "::ffff:127.0.0.3",
            "198.51.100.1",
        ] {
            assert!(own.contains(p(a)), "{a}");
        }
        for a in ["2001:db8::7", "::1", "192.0.2.8", "10.0.0.1"] {
            assert!(!own.contains(p(a)), "{a}");
        }
        let specific = OwnAddresses::new([p("127.0.0.1"), p("::1")], &ifs);
        assert!(specific.contains(p("127.0.0.1")) && specific.contains(p("::1")));
        assert!(!specific.contains(p("127.0.0.2")) && !specific.contains(p("192.0.2.7")));
    }

    #[test]
    fn operator_allow_wins_where_at_least_as_specific() {
        let pol = PeerPolicy::new(
            vec!["127.0.0.0/8".parse().expect("net")],
            vec!["8.8.8.0/24".parse().expect("net")],
        );
        assert!(pol.permits(p("127.0.0.1")));
        assert!(pol.permits(p("::ffff:127.0.0.1")));
        assert!(!pol.permits(p("::1")));
        assert!(!pol.permits(p("10.0.0.1")));
        let v6 = PeerPolicy::new(vec!["::1/128".parse().expect("net")], vec![]);
        assert!(v6.permits(p("::1")));
        assert!(!v6.permits(p("::")));
        assert!(!v6.permits(p("::127.0.0.1")));
        assert!(!pol.permits(p("8.8.8.8")));
        // Allowing the local-use NAT64 prefix still judges every RFC 6052
        // reading of the address inside it.
        let nat64 = PeerPolicy::new(vec!["64:ff9b:1::/48".parse().expect("net")], vec![]);
        assert!(
            !nat64.permits(p("64:ff9b:1:0:7f:0:100:0")),
            "127.0.0.1 in the /64 layout"
        );
        assert!(
            !nat64.permits(p("64:ff9b:1:7f00:0:100::")),
            "127.0.0.1 in the /48 layout"
        );
        assert!(!nat64.permits(p("64:ff9b:1:7f:0:1::")), "127.0.0.1 in the /56 layout");
        assert!(
            nat64.permits(p("64:ff9b:1:808:8:808:808:808")),
            "8.8.8.8 in every layout"
        );
        // A broad allow does not undo a more specific default deny.
        let broad = PeerPolicy::new(vec!["0.0.0.0/0".parse().expect("net")], vec![]);
        assert!(!broad.permits(p("10.0.0.1")));
        assert!(broad.permits(p("8.8.8.8")));
    }
}
