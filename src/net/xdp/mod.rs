//! The kernel's data path: an XDP program (`turnd.bpf.c`, built into
//! `turnd.bpf.o` beside it) that relays ChannelData ↔ UDP for the channels
//! the core allows it (see [`crate::proto::Event::ChannelBound`]'s
//! `offload`). The maps it reads are written only here, only from the core's
//! events, by the worker whose core emitted them; what the program relayed
//! comes back through per-CPU counters per channel, credited to the core
//! once a second and when a channel ends.

pub mod maps;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aya::maps::{Array, HashMap as KernelHashMap, Map, MapData, PerCpuArray, PerCpuValues};
use aya::programs::{Xdp, XdpMode};
use aya::util::nr_cpus;
use aya::{Ebpf, EbpfLoader};

use crate::config::{XdpConfig, XdpSetting};
use crate::proto::{Offload as Route, RelayId, Relayed};
use maps::{ChanStats, Iface, In4Key, In4Val, In6Key, In6Val, Out4Key, Out4Val, Out6Key, Out6Val, Settings};
pub use maps::{Counter, COUNTERS};

/// The program, compiled from `turnd.bpf.c` (see `src/net/xdp/build`).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!("turnd.bpf.o");

/// The attached program: dropping it detaches it (each attachment is a
/// link owned by this process, so a crash detaches it too).
pub struct Offload {
    _ebpf: Ebpf,
    /// What the program knows of the host's stack (IFACES, SETTINGS).
    host: Mutex<Host>,
    mode: &'static str,
    interfaces: Vec<String>,
    out4: MapData,
    in4: MapData,
    out6: MapData,
    in6: MapData,
    stats: MapData,
    counters: PerCpuArray<MapData, u64>,
    /// Channels left on the socket path because a map or the worker's
    /// share of counter slots was full.
    full: Arc<AtomicU64>,
    slots_per_worker: u32,
}

impl std::fmt::Debug for Offload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offload")
            .field("mode", &self.mode)
            .field("interfaces", &self.interfaces)
            .finish()
    }
}

/// What the data path is, for startup output, check-config and /metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InForce {
    /// Off by configuration.
    Off,
    /// Attached in `mode` ("native" or "generic") to `interfaces`.
    On {
        mode: &'static str,
        interfaces: Vec<String>,
    },
    /// `auto` could not attach: the socket path, and why.
    Fallback(String),
}

impl InForce {
    pub fn mode(&self) -> &'static str {
        match self {
            InForce::Off | InForce::Fallback(_) => "off",
            InForce::On { mode, .. } => mode,
        }
    }
}

impl std::fmt::Display for InForce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InForce::Off => write!(f, "off (socket path)"),
            InForce::On { mode, interfaces } => write!(f, "{mode} on {}", interfaces.join(", ")),
            InForce::Fallback(why) => write!(f, "off (socket path): {why}"),
        }
    }
}

/// The interfaces that carry `addrs` (every non-loopback interface of the
/// family for an unspecified address).
pub fn interfaces_for(addrs: &[IpAddr]) -> Vec<String> {
    let mut names: Vec<String> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| !i.is_loopback())
        .filter(|i| {
            addrs
                .iter()
                .any(|a| *a == i.ip() || (a.is_unspecified() && a.is_ipv4() == i.ip().is_ipv4()))
        })
        .map(|i| i.name)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The interfaces `[xdp]` names, or those that carry the UDP listeners and
/// relay addresses.
pub fn interfaces(cfg: &XdpConfig, udp: &[SocketAddr], relay_ips: &[IpAddr]) -> Vec<String> {
    if !cfg.interfaces.is_empty() {
        return cfg.interfaces.clone();
    }
    let ips: Vec<IpAddr> = udp.iter().map(|a| a.ip()).chain(relay_ips.iter().copied()).collect();
    interfaces_for(&ips)
}

/// What starting with `cfg` would do, for `turnd check-config`: the mode,
/// the interfaces, and what stands in the way (without loading anything).
pub fn preflight(cfg: &XdpConfig, udp: &[SocketAddr], relay_ips: &[IpAddr]) -> String {
    let mode = match cfg.mode {
        XdpSetting::Off => return "off (socket path)".into(),
        XdpSetting::Auto => "auto",
        XdpSetting::Native => "native",
        XdpSetting::Generic => "generic",
    };
    let ifaces = interfaces(cfg, udp, relay_ips);
    let families = Families {
        v4: udp.iter().any(|a| a.is_ipv4()),
        v6: udp.iter().any(|a| a.is_ipv6()),
    };
    let problem = if ifaces.is_empty() {
        Some("no interface carries a UDP listener or relay address (set [xdp] interfaces)".to_string())
    } else {
        forwarding(&ifaces, families).err()
    };
    let outcome = match (problem, cfg.mode) {
        (None, _) => "attached at start (needs CAP_BPF and CAP_NET_ADMIN)".to_string(),
        (Some(p), XdpSetting::Auto) => format!("would fall back to the socket path: {p}"),
        (Some(p), _) => format!("would refuse to start: {p}"),
    };
    format!("{mode} on [{}]: {outcome}", ifaces.join(", "))
}

impl Offload {
    /// Loads the program with maps for `[xdp] max-channels` and attaches it
    /// to `interfaces` as `cfg.mode` says. `Ok(None)` when off; an error
    /// when it must be on and cannot be.
    pub fn start(
        cfg: &XdpConfig,
        interfaces: Vec<String>,
        families: Families,
        workers: usize,
    ) -> Result<(Option<Offload>, InForce), String> {
        let modes: &[(&'static str, XdpMode)] = match cfg.mode {
            XdpSetting::Off => return Ok((None, InForce::Off)),
            XdpSetting::Native => &[("native", XdpMode::Driver)],
            XdpSetting::Generic => &[("generic", XdpMode::Skb)],
            XdpSetting::Auto => &[("native", XdpMode::Driver), ("generic", XdpMode::Skb)],
        };
        let attempt = forwarding(&interfaces, families).and_then(|()| Self::load(cfg, &interfaces, modes, workers));
        match (attempt, cfg.mode) {
            (Ok(o), _) => {
                let on = InForce::On {
                    mode: o.mode,
                    interfaces: o.interfaces.clone(),
                };
                Ok((Some(o), on))
            }
            (Err(why), XdpSetting::Auto) => Ok((None, InForce::Fallback(why))),
            (Err(why), _) => Err(why),
        }
    }

    fn load(
        cfg: &XdpConfig,
        interfaces: &[String],
        modes: &[(&'static str, XdpMode)],
        workers: usize,
    ) -> Result<Offload, String> {
        if interfaces.is_empty() {
            return Err("no interface carries a UDP listener or relay address (set [xdp] interfaces)".into());
        }
        let n = cfg.max_channels.max(workers as u32);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("OUT4", n)
            .map_max_entries("IN4", n)
            .map_max_entries("OUT6", n)
            .map_max_entries("IN6", n)
            .map_max_entries("STATS", n)
            .map_max_entries("HOPS", n)
            .load(OBJECT)
            .map_err(|e| explain(&format!("cannot load the XDP program: {e}")))?;
        let prog: &mut Xdp = ebpf
            .program_mut("turnd_relay")
            .ok_or("the XDP object has no turnd_relay program")?
            .try_into()
            .map_err(|e| format!("turnd_relay is not an XDP program: {e}"))?;
        prog.load()
            .map_err(|e| explain(&format!("the kernel refused the XDP program: {e}")))?;
        let mut chosen = None;
        let mut last = String::new();
        'modes: for (name, mode) in modes {
            let mut links = Vec::new();
            for iface in interfaces {
                match prog.attach(iface, *mode) {
                    Ok(l) => links.push(l),
                    Err(e) => {
                        last = explain(&format!("cannot attach in {name} mode to {iface}: {e}"));
                        for l in links {
                            let _ = prog.detach(l);
                        }
                        continue 'modes;
                    }
                }
            }
            chosen = Some(*name);
            break;
        }
        let mode = chosen.ok_or(last)?;
        let ifaces: KernelHashMap<MapData, u32, Iface> = match ebpf.take_map("IFACES") {
            Some(m) => KernelHashMap::try_from(m).map_err(|e| format!("IFACES: {e}"))?,
            None => return Err("the XDP object has no map IFACES".into()),
        };
        let settings: Array<MapData, Settings> = match ebpf.take_map("SETTINGS") {
            Some(m) => Array::try_from(m).map_err(|e| format!("SETTINGS: {e}"))?,
            None => return Err("the XDP object has no map SETTINGS".into()),
        };
        let mut host = Host {
            interfaces: interfaces.to_vec(),
            ifaces,
            settings,
        };
        host.refresh()?;
        let take = |ebpf: &mut Ebpf, name: &str| -> Result<MapData, String> {
            match ebpf.take_map(name) {
                Some(Map::HashMap(m)) | Some(Map::PerCpuArray(m)) => Ok(m),
                _ => Err(format!("the XDP object has no map {name}")),
            }
        };
        let out4 = take(&mut ebpf, "OUT4")?;
        let in4 = take(&mut ebpf, "IN4")?;
        let out6 = take(&mut ebpf, "OUT6")?;
        let in6 = take(&mut ebpf, "IN6")?;
        let stats = take(&mut ebpf, "STATS")?;
        let counters = PerCpuArray::try_from(Map::PerCpuArray(take(&mut ebpf, "COUNTERS")?))
            .map_err(|e| format!("COUNTERS: {e}"))?;
        Ok(Offload {
            _ebpf: ebpf,
            host: Mutex::new(host),
            mode,
            interfaces: interfaces.to_vec(),
            out4,
            in4,
            out6,
            in6,
            stats,
            counters,
            full: Arc::new(AtomicU64::new(0)),
            slots_per_worker: n / workers.max(1) as u32,
        })
    }

    /// The handle worker `index` writes its channels' routes with (its own
    /// descriptors, its own share of counter slots).
    pub fn routes(&self, index: usize) -> Result<Routes, String> {
        let dup = |m: &MapData| -> Result<MapData, String> {
            let fd = m.fd().as_fd().try_clone_to_owned().map_err(|e| e.to_string())?;
            MapData::from_fd(fd).map_err(|e| e.to_string())
        };
        let hash = |m: &MapData| dup(m).map(Map::HashMap);
        let first = index as u32 * self.slots_per_worker;
        Ok(Routes {
            out4: KernelHashMap::try_from(hash(&self.out4)?).map_err(|e| e.to_string())?,
            in4: KernelHashMap::try_from(hash(&self.in4)?).map_err(|e| e.to_string())?,
            out6: KernelHashMap::try_from(hash(&self.out6)?).map_err(|e| e.to_string())?,
            in6: KernelHashMap::try_from(hash(&self.in6)?).map_err(|e| e.to_string())?,
            stats: PerCpuArray::try_from(Map::PerCpuArray(dup(&self.stats)?)).map_err(|e| e.to_string())?,
            free: (first..first + self.slots_per_worker).rev().collect(),
            live: HashMap::default(),
            full: self.full.clone(),
            cpus: nr_cpus().map_err(|(_, e)| e.to_string())?,
            clock: Clock::new(),
            gen: 0,
        })
    }

    /// Reads again what the program copies from the host's stack (each
    /// interface's MAC, reverse-path filter and IPv6 hop limit, the default
    /// TTL, the smallest path MTU): at start and on reload.
    pub fn refresh(&self) -> Result<(), String> {
        self.host.lock().unwrap_or_else(|p| p.into_inner()).refresh()
    }

    /// The program's own counters, summed over CPUs, by [`Counter`].
    pub fn counters(&self) -> [u64; COUNTERS] {
        let mut out = [0u64; COUNTERS];
        for (i, o) in out.iter_mut().enumerate() {
            if let Ok(v) = self.counters.get(&(i as u32), 0) {
                *o = v.iter().sum();
            }
        }
        out
    }

    /// Channels left on the socket path because the maps were full.
    pub fn full(&self) -> u64 {
        self.full.load(Ordering::Relaxed)
    }
}

/// The program's view of the host: what the stack would apply to a frame
/// it took (the reverse-path filter, the Ethernet destination) and to a
/// datagram a relay socket sent (TTL, hop limit).
struct Host {
    interfaces: Vec<String>,
    ifaces: KernelHashMap<MapData, u32, Iface>,
    settings: Array<MapData, Settings>,
}

impl Host {
    fn refresh(&mut self) -> Result<(), String> {
        let all_rp = sysctl("net/ipv4/conf/all/rp_filter").unwrap_or(0);
        for name in &self.interfaces {
            let index = ifindex(name)?;
            let rp = sysctl(&format!("net/ipv4/conf/{name}/rp_filter"))
                .unwrap_or(0)
                .max(all_rp);
            let hop_limit = sysctl(&format!("net/ipv6/conf/{name}/hop_limit")).unwrap_or(64);
            let value = Iface {
                mac: mac(name)?,
                rp_filter: rp.min(2) as u8,
                hop_limit: hop_limit.clamp(1, 255) as u8,
            };
            self.ifaces
                .insert(index, value, 0)
                .map_err(|e| format!("IFACES: {e}"))?;
        }
        let value = Settings {
            ttl: sysctl("net/ipv4/ip_default_ttl").unwrap_or(64).clamp(1, 255) as u8,
            pad: 0,
            min_pmtu4: sysctl("net/ipv4/route/min_pmtu").unwrap_or(552).clamp(68, 65535) as u16,
        };
        self.settings.set(0, value, 0).map_err(|e| format!("SETTINGS: {e}"))
    }
}

/// A number under /proc/sys (of this process's network namespace).
fn sysctl(key: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/sys/{key}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The hardware address of interface `name` (SIOCGIFHWADDR: this process's
/// network namespace, whatever /sys shows).
fn mac(name: &str) -> Result<[u8; 6], String> {
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(format!("bad interface name {name:?}"));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: a plain datagram socket, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("the MAC of {name}: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: SIOCGIFHWADDR reads the name and writes the address into `req`.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) };
    let err = std::io::Error::last_os_error();
    // SAFETY: `fd` is ours.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return Err(format!("the MAC of {name}: {err}"));
    }
    // SAFETY: SIOCGIFHWADDR filled the hardware-address member of the union.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut out = [0u8; 6];
    for (d, s) in out.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(out)
}

/// The address families turnd listens on over UDP.
#[derive(Debug, Clone, Copy)]
pub struct Families {
    pub v4: bool,
    pub v6: bool,
}

/// The kernel finds the next hop for a rewritten datagram with
/// `bpf_fib_lookup`, which answers only on interfaces that forward: every
/// sysctl that must be 1 and is not, in one error.
fn forwarding(interfaces: &[String], families: Families) -> Result<(), String> {
    let mut off = Vec::new();
    for iface in interfaces {
        for (used, family) in [(families.v4, "ipv4"), (families.v6, "ipv6")] {
            let key = format!("net/{family}/conf/{iface}/forwarding");
            let on = sysctl(&key).is_some_and(|v| v != 0);
            if used && !on {
                off.push(format!("{}=1", key.replace('/', ".")));
            }
        }
    }
    if off.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the kernel finds the next hop only on interfaces that forward: set {} (see the README's kernel data path section)",
            off.join(", ")
        ))
    }
}

fn ifindex(name: &str) -> Result<u32, String> {
    let c = std::ffi::CString::new(name).map_err(|_| format!("bad interface name {name:?}"))?;
    // SAFETY: a NUL-terminated string; if_nametoindex only reads it.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(format!("no interface {name}")),
        i => Ok(i),
    }
}

/// Adds what the kernel said to a failure it commonly has, in words.
fn explain(e: &str) -> String {
    if e.contains("Operation not permitted") || e.contains("EPERM") {
        format!("{e} (needs CAP_BPF and CAP_NET_ADMIN)")
    } else {
        e.to_string()
    }
}

/// `Instant`s as the program's clock (`bpf_ktime_get_coarse_ns`, CLOCK_MONOTONIC
/// read at the last tick: a route lives at most one tick past its expiry).
struct Clock {
    at: Instant,
    ns: u64,
}

impl Clock {
    fn new() -> Self {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let at = Instant::now();
        Self {
            at,
            ns: ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64,
        }
    }

    fn ns(&self, t: Instant) -> u64 {
        match t.checked_duration_since(self.at) {
            Some(d) => self.ns.saturating_add(d.as_nanos() as u64),
            None => self.ns.saturating_sub(self.at.duration_since(t).as_nanos() as u64),
        }
    }
}

/// A channel the program relays.
struct Live {
    slot: u32,
    peer: SocketAddr,
    route: Route,
    /// What its counters held when last credited.
    seen: Relayed,
}

/// One worker's side of the maps.
pub struct Routes {
    out4: KernelHashMap<MapData, Out4Key, Out4Val>,
    in4: KernelHashMap<MapData, In4Key, In4Val>,
    out6: KernelHashMap<MapData, Out6Key, Out6Val>,
    in6: KernelHashMap<MapData, In6Key, In6Val>,
    stats: PerCpuArray<MapData, ChanStats>,
    free: Vec<u32>,
    live: HashMap<(RelayId, u16), Live, ahash::RandomState>,
    full: Arc<AtomicU64>,
    cpus: usize,
    clock: Clock,
    /// The generation of the last route written (see [`maps::Out4Val`]).
    gen: u32,
}

impl Routes {
    /// [`crate::proto::Event::ChannelBound`]: the route written (or its
    /// expiry moved), or taken out when the core no longer allows it.
    /// Returns what the program relayed on a route taken out.
    pub fn bound(
        &mut self,
        relay: RelayId,
        channel: u16,
        peer: SocketAddr,
        until: Instant,
        route: Option<Route>,
    ) -> Option<Relayed> {
        let key = (relay, channel);
        let same = self
            .live
            .get(&key)
            .is_some_and(|l| Some(l.route) == route && l.peer == peer);
        let mut settled = None;
        if !same {
            settled = self.ended(relay, channel);
        }
        let route = route?;
        let slot = match self.live.get(&key) {
            Some(l) => l.slot,
            None => {
                let Some(slot) = self.free.pop() else {
                    self.full.fetch_add(1, Ordering::Relaxed);
                    return settled;
                };
                self.zero(slot);
                slot
            }
        };
        let until_ns = self.clock.ns(until);
        if self.write(channel, peer, &route, slot, until_ns).is_err() {
            self.full.fetch_add(1, Ordering::Relaxed);
            if self.live.contains_key(&key) {
                // A refresh that did not fit: the route leaves the kernel.
                return self.ended(relay, channel);
            }
            self.remove(channel, peer, &route);
            self.free.push(slot);
            return settled;
        }
        self.live.entry(key).or_insert(Live {
            slot,
            peer,
            route,
            seen: Relayed::default(),
        });
        settled
    }

    /// [`crate::proto::Event::ChannelEnded`]: the route taken out; what the
    /// program relayed on it since last credited.
    pub fn ended(&mut self, relay: RelayId, channel: u16) -> Option<Relayed> {
        let l = self.live.remove(&(relay, channel))?;
        self.remove(channel, l.peer, &l.route);
        let r = read(&self.stats, l.slot).since(&l.seen);
        self.free.push(l.slot);
        Some(r)
    }

    /// What each live channel relayed since last credited, by allocation.
    pub fn sync(&mut self, out: &mut Vec<(RelayId, Relayed)>) {
        out.clear();
        for ((relay, _), l) in self.live.iter_mut() {
            let now = read(&self.stats, l.slot);
            let delta = now.since(&l.seen);
            l.seen = now;
            if !delta.is_empty() {
                out.push((*relay, delta));
            }
        }
    }

    /// Channels this worker has in the maps.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    fn write(&mut self, channel: u16, peer: SocketAddr, r: &Route, slot: u32, until_ns: u64) -> Result<(), ()> {
        let ch = channel.to_be();
        // A new generation for every write: a refreshed or re-pointed route
        // looks its next hop and reverse path up again.
        self.gen = self.gen.wrapping_add(1);
        let gen = self.gen;
        match (r.client, r.listener, r.relayed, peer) {
            (SocketAddr::V4(c), SocketAddr::V4(l), SocketAddr::V4(rel), SocketAddr::V4(p)) => {
                let ok = Out4Key::new(&c, &l, ch);
                let ov = Out4Val::new(&rel, &p, slot, gen, until_ns);
                let ik = In4Key::new(&p, &rel);
                let iv = In4Val::new(&c, &l, ch, slot, gen, until_ns);
                self.out4.insert(ok, ov, 0).map_err(drop)?;
                self.in4.insert(ik, iv, 0).map_err(drop)
            }
            (SocketAddr::V6(c), SocketAddr::V6(l), SocketAddr::V6(rel), SocketAddr::V6(p)) => {
                let ok = Out6Key::new(&c, &l, ch);
                let ov = Out6Val::new(&rel, &p, slot, gen, until_ns);
                let ik = In6Key::new(&p, &rel);
                let iv = In6Val::new(&c, &l, ch, slot, gen, until_ns);
                self.out6.insert(ok, ov, 0).map_err(drop)?;
                self.in6.insert(ik, iv, 0).map_err(drop)
            }
            _ => Err(()),
        }
    }

    fn remove(&mut self, channel: u16, peer: SocketAddr, r: &Route) {
        let ch = channel.to_be();
        match (r.client, r.listener, r.relayed, peer) {
            (SocketAddr::V4(c), SocketAddr::V4(l), SocketAddr::V4(rel), SocketAddr::V4(p)) => {
                let _ = self.out4.remove(&Out4Key::new(&c, &l, ch));
                let _ = self.in4.remove(&In4Key::new(&p, &rel));
            }
            (SocketAddr::V6(c), SocketAddr::V6(l), SocketAddr::V6(rel), SocketAddr::V6(p)) => {
                let _ = self.out6.remove(&Out6Key::new(&c, &l, ch));
                let _ = self.in6.remove(&In6Key::new(&p, &rel));
            }
            _ => {}
        }
    }

    fn zero(&mut self, slot: u32) {
        if let Ok(v) = PerCpuValues::try_from(vec![ChanStats::default(); self.cpus]) {
            let _ = self.stats.set(slot, v, 0);
        }
    }
}

/// What the program counted for `slot`, summed over CPUs.
fn read(stats: &PerCpuArray<MapData, ChanStats>, slot: u32) -> Relayed {
    let mut r = Relayed::default();
    if let Ok(v) = stats.get(&slot, 0) {
        for s in v.iter() {
            r.to_peer_packets += s.to_peer_packets;
            r.to_peer_bytes += s.to_peer_bytes;
            r.to_client_packets += s.to_client_packets;
            r.to_client_bytes += s.to_client_bytes;
        }
    }
    r
}
