//! The XDP program alone, timed by the kernel (`BPF_PROG_TEST_RUN`, as
//! `bpftool prog run` does): nanoseconds per packet for each direction and
//! family at 100, 500 and 1200 bytes of payload, against a bare reflector
//! (swap addresses and ports, XDP_TX) as the floor. Root only.
//!
//! The program runs in a namespace of its own (`xpb-t`, a veth to `xpb-r`)
//! with forwarding on and the router's neighbour entry resolved, and each
//! test frame names that veth as its ingress interface, so every run goes
//! the whole way: parse, route lookup, expiry check, `bpf_fib_lookup`,
//! rewrite, XDP_TX (the run checks the action). Transmission itself is not
//! timed, for the program nor the reflector.
//!
//!     sudo target/release/examples/xdp_prog_bench [runs per case, default 200000]
//!
//! Each case runs in five rounds, the program and the reflector
//! alternating; the table gives the medians.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::process::Command;

use aya::maps::{HashMap as KernelMap, MapData};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use turnd::net::xdp::maps::{Iface, In4Key, In4Val, In6Key, In6Val, Out4Key, Out4Val, Out6Key, Out6Val, Settings};

const XDP_TX: u32 = 3;

fn sh(script: &str) {
    let ok = Command::new("sh").arg("-ec").arg(script).status().expect("sh");
    assert!(ok.success(), "{script}");
}

fn teardown() {
    for n in ["xpb-t", "xpb-r"] {
        let _ = Command::new("ip")
            .args(["netns", "del", n])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// An Ethernet frame with UDP from `src` to `dst` carrying `payload`.
fn frame(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let ulen = (8 + payload.len()) as u16;
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00]);
            let tot = 20 + ulen;
            f.extend_from_slice(&[0x45, 0, (tot >> 8) as u8, tot as u8, 0, 0, 0x40, 0, 64, 17, 0, 0]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd]);
            f.extend_from_slice(&[0x60, 0, 0, 0, (ulen >> 8) as u8, ulen as u8, 17, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => panic!("one family"),
    }
    f.extend_from_slice(&src.port().to_be_bytes());
    f.extend_from_slice(&dst.port().to_be_bytes());
    f.extend_from_slice(&ulen.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    checksums(&mut f);
    f
}

/// Sets the IPv4 header checksum and the UDP checksum (the program relays
/// only datagrams whose checksums hold, as the stack would take them).
fn checksums(f: &mut [u8]) {
    let sum = |data: &[u8], mut s: u32| -> u32 {
        for c in data.chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        s
    };
    let fold = |mut s: u32| -> u16 {
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    };
    let (udp, addrs) = if f[12..14] == [0x08, 0x00] {
        let c = !fold(sum(&f[14..34], 0));
        f[24..26].copy_from_slice(&c.to_be_bytes());
        (34, 26..34)
    } else {
        (54, 22..54)
    };
    let ulen = u16::from_be_bytes([f[udp + 4], f[udp + 5]]);
    let pseudo = sum(&f[addrs], 17 + u32::from(ulen));
    let c = !fold(sum(&f[udp..], pseudo));
    f[udp + 6..udp + 8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
}

fn channel_data(n: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = n.to_be_bytes().to_vec();
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("v4"),
    }
}

fn v6(a: SocketAddr) -> SocketAddrV6 {
    match a {
        SocketAddr::V6(a) => a,
        SocketAddr::V4(_) => panic!("v6"),
    }
}

fn main() {
    let reps: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("xdp_prog_bench: needs root (namespaces, BPF)");
        std::process::exit(2);
    }
    teardown();
    sh("ip netns add xpb-t
ip netns add xpb-r
ip link add eth0 netns xpb-t type veth peer name to netns xpb-r
ip -n xpb-t addr add 10.250.0.2/24 dev eth0
ip -n xpb-t addr add fd00:250::2/64 dev eth0 nodad
ip -n xpb-r addr add 10.250.0.1/24 dev to
ip -n xpb-r addr add fd00:250::1/64 dev to nodad
ip -n xpb-t link set eth0 up
ip -n xpb-r link set to up
ip -n xpb-t link set lo up
ip -n xpb-t route add default via 10.250.0.1
ip -n xpb-t -6 route add default via fd00:250::1
ip netns exec xpb-t sysctl -qw net.ipv4.conf.eth0.forwarding=1 net.ipv6.conf.eth0.forwarding=1
ip netns exec xpb-t ping -c1 -W2 10.250.0.1 >/dev/null
ip netns exec xpb-t ping -6 -c1 -W2 fd00:250::1 >/dev/null");
    let rows = std::thread::spawn(move || {
        let ns = std::fs::File::open("/var/run/netns/xpb-t").expect("namespace");
        // SAFETY: a valid namespace descriptor; only this thread moves.
        assert_eq!(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
        run(reps)
    })
    .join();
    teardown();
    let rows = rows.expect("the benchmark ran");
    println!("| direction | family | payload | turnd_relay ns/packet | reflector ns/packet | ratio |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for (dir, fam, size, prog, refl) in rows {
        println!(
            "| {dir} | {fam} | {size} B | {prog:.1} | {refl:.1} | {:.2}× |",
            prog / refl
        );
    }
}

type Row = (&'static str, &'static str, usize, f64, f64);

const ROUNDS: u32 = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run(reps: u32) -> Vec<Row> {
    // XDP_OBJECT: another build of the program to time (an experiment).
    let other = std::env::var_os("XDP_OBJECT").map(|p| std::fs::read(p).expect("XDP_OBJECT reads"));
    let mut ebpf = aya::EbpfLoader::new()
        .load(other.as_deref().unwrap_or(turnd::net::xdp::OBJECT))
        .expect("the object loads");
    let mut out4: KernelMap<MapData, Out4Key, Out4Val> =
        KernelMap::try_from(ebpf.take_map("OUT4").expect("OUT4")).expect("map");
    let mut in4: KernelMap<MapData, In4Key, In4Val> =
        KernelMap::try_from(ebpf.take_map("IN4").expect("IN4")).expect("map");
    let mut out6: KernelMap<MapData, Out6Key, Out6Val> =
        KernelMap::try_from(ebpf.take_map("OUT6").expect("OUT6")).expect("map");
    let mut in6: KernelMap<MapData, In6Key, In6Val> =
        KernelMap::try_from(ebpf.take_map("IN6").expect("IN6")).expect("map");
    let counters: aya::maps::PerCpuArray<MapData, u64> =
        aya::maps::PerCpuArray::try_from(ebpf.take_map("COUNTERS").expect("COUNTERS")).expect("map");
    for name in ["turnd_relay", "turnd_reflect"] {
        let p: &mut Xdp = ebpf.program_mut(name).expect("program").try_into().expect("xdp");
        p.load().expect("the kernel takes it");
    }
    let forever = u64::MAX;
    let ch = 0x4000u16;
    // turnd at .2 of the veth's subnet; client and peer beyond the router.
    let v4s = |ip: [u8; 4], port: u16| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port);
    let v6s = |ip: &str, port: u16| SocketAddr::new(IpAddr::V6(ip.parse::<Ipv6Addr>().expect("v6")), port);
    let addrs = [
        (
            "ipv4",
            v4s([10, 252, 0, 2], 40000),
            v4s([10, 250, 0, 2], 3478),
            v4s([10, 250, 0, 2], 50000),
            v4s([10, 251, 0, 2], 3480),
        ),
        (
            "ipv6",
            v6s("fd00:252::2", 40000),
            v6s("fd00:250::2", 3478),
            v6s("fd00:250::2", 50000),
            v6s("fd00:251::2", 3480),
        ),
    ];
    for (fam, client, listener, relay, peer) in addrs {
        if fam == "ipv4" {
            let (c, l, r, p) = (v4(client), v4(listener), v4(relay), v4(peer));
            out4.insert(Out4Key::new(&c, &l, ch.to_be()), Out4Val::new(&r, &p, 0, 1, forever), 0)
                .expect("route");
            in4.insert(In4Key::new(&p, &r), In4Val::new(&c, &l, ch.to_be(), 0, 1, forever), 0)
                .expect("route");
        } else {
            let (c, l, r, p) = (v6(client), v6(listener), v6(relay), v6(peer));
            out6.insert(Out6Key::new(&c, &l, ch.to_be()), Out6Val::new(&r, &p, 0, 1, forever), 0)
                .expect("route");
            in6.insert(In6Key::new(&p, &r), In6Val::new(&c, &l, ch.to_be(), 0, 1, forever), 0)
                .expect("route");
        }
    }
    let ifindex = {
        let name = std::ffi::CString::new("eth0").expect("name");
        // SAFETY: a NUL-terminated name.
        unsafe { libc::if_nametoindex(name.as_ptr()) }
    };
    // What turnd writes at start: the interface as the frames address it
    // (their destination MAC), the host's TTL and smallest path MTU.
    let mut ifaces: KernelMap<MapData, u32, Iface> =
        KernelMap::try_from(ebpf.take_map("IFACES").expect("IFACES")).expect("map");
    let iface = Iface {
        mac: [2, 0, 0, 0, 0, 1],
        rp_filter: 0,
        hop_limit: 64,
    };
    ifaces.insert(ifindex, iface, 0).expect("interface");
    let mut settings: aya::maps::Array<MapData, Settings> =
        aya::maps::Array::try_from(ebpf.take_map("SETTINGS").expect("SETTINGS")).expect("map");
    let host = Settings {
        ttl: 64,
        pad: 0,
        min_pmtu4: 552,
    };
    settings.set(0, host, 0).expect("settings");
    let time = |ebpf: &mut aya::Ebpf, prog: &str, f: &[u8]| -> f64 {
        let p: &mut Xdp = ebpf.program_mut(prog).expect("program").try_into().expect("xdp");
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex.
        let ctx: Vec<u8> = [0u32, f.len() as u32, 0, ifindex, 0, 0]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        // One run per call: a repeated run would see the frame as the
        // previous run left it (the kernel resets neither the data nor, in
        // live-frame mode, the contents of recycled pages). The kernel
        // times the run alone; the mean over `reps` calls is reported.
        let mut total = std::time::Duration::ZERO;
        let mut r = None;
        for _ in 0..reps / ROUNDS {
            let opts = TestRunOptions {
                data_in: Some(f),
                ctx_in: Some(&ctx),
                ..TestRunOptions::new()
            };
            let run = p.test_run(opts).expect("test run");
            total += run.duration;
            r = Some(run);
        }
        let r = r.expect("at least one run");
        if r.return_value != XDP_TX {
            let c: Vec<u64> = (0..turnd::net::xdp::COUNTERS as u32)
                .map(|i| counters.get(&i, 0).map_or(0, |v| v.iter().sum()))
                .collect();
            panic!(
                "{prog} gave action {} for a {}-byte frame (counters {c:?})",
                r.return_value,
                f.len()
            );
        }
        total.as_nanos() as f64 / f64::from(reps / ROUNDS)
    };
    let mut rows = Vec::new();
    for (fam, client, listener, relay, peer) in addrs {
        for size in [100usize, 500, 1200] {
            let payload = vec![0x5a; size];
            let to_peer = frame(client, listener, &channel_data(ch, &payload));
            let to_client = frame(peer, relay, &payload);
            for (dir, f) in [("client → peer", to_peer), ("peer → client", to_client)] {
                // Five rounds, program and reflector alternating; medians.
                let mut prog = Vec::new();
                let mut refl = Vec::new();
                for _ in 0..ROUNDS {
                    prog.push(time(&mut ebpf, "turnd_relay", &f));
                    refl.push(time(&mut ebpf, "turnd_reflect", &f));
                }
                rows.push((dir, fam, size, median(prog), median(refl)));
            }
        }
    }
    rows
}
