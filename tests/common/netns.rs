//! A routed namespace topology for the kernel data path tests: a client, a
//! turnd host and a peer, each in its own network namespace, joined by
//! veth pairs to a router namespace (so the next hop of every rewritten
//! datagram is a router, found by the kernel's route and neighbour lookup).
//! Dual stack: 10.N.{1,2,3}.2/24 and fd00:N:{1,2,3}::2/64, the router at .1
//! and ::1. Everything is removed on drop.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::Proc;

pub struct Topo {
    pub tag: String,
    pub n: u8,
    /// turnd's host joined to the client and the peer by a link each
    /// (no router): [`Topo::direct`].
    pub direct: bool,
}

/// Whether this test can build namespaces (root, `ip`, `ethtool`); a
/// visible skip otherwise (a failure under CI=true).
pub fn available() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        super::server::skip("needs root for network namespaces and XDP (sudo, or bin/test as root)");
        return false;
    }
    if !["/usr/sbin/ethtool", "/sbin/ethtool"]
        .iter()
        .any(|p| std::path::Path::new(p).exists())
    {
        super::server::skip("ethtool missing (Debian package ethtool; bin/test installs it)");
        return false;
    }
    true
}

/// Moves the calling thread into network namespace `ns`.
pub fn enter(ns: &str) {
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path).expect("namespace file");
    // SAFETY: a valid namespace descriptor; only this thread moves.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// `/metrics` from namespace `ns`'s loopback at `port` (empty when nothing
/// answers).
pub fn metrics_in(ns: &str, port: u16) -> String {
    within(ns, move || {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
}

/// Runs `f` on a thread inside namespace `ns` (sockets it opens stay in
/// that namespace).
pub fn within<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter(&ns);
        f()
    })
    .join()
    .expect("thread in namespace")
}

/// Runs `script` with `sh -e`; fails the test with its output otherwise.
pub fn sh(script: &str) {
    let out = Command::new("sh").arg("-ec").arg(script).output().expect("sh runs");
    assert!(
        out.status.success(),
        "{script}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Topo {
    /// Namespaces `{tag}c`, `{tag}r`, `{tag}t`, `{tag}p` on subnets 10.`n`.x.
    pub fn new(tag: &str, n: u8) -> Self {
        let t = Topo {
            tag: tag.into(),
            n,
            direct: false,
        };
        t.teardown();
        let obj = concat!(env!("CARGO_MANIFEST_DIR"), "/src/net/xdp/turnd.bpf.o");
        let mut s = String::new();
        for ns in ["c", "r", "t", "p"] {
            s += &format!("ip netns add {tag}{ns}\nip -n {tag}{ns} link set lo up\n");
        }
        for (i, ns) in ["c", "t", "p"].iter().enumerate() {
            let i = i + 1;
            s += &format!(
                "ip link add eth0 netns {tag}{ns} type veth peer name to{ns} netns {tag}r
ip -n {tag}{ns} addr add 10.{n}.{i}.2/24 dev eth0
ip -n {tag}{ns} addr add fd00:{n}:{i}::2/64 dev eth0 nodad
ip -n {tag}r addr add 10.{n}.{i}.1/24 dev to{ns}
ip -n {tag}r addr add fd00:{n}:{i}::1/64 dev to{ns} nodad
ip -n {tag}{ns} link set eth0 up
ip -n {tag}r link set to{ns} up
ip -n {tag}{ns} route add default via 10.{n}.{i}.1
ip -n {tag}{ns} -6 route add default via fd00:{n}:{i}::1
"
            );
        }
        s += &format!(
            "ip netns exec {tag}r sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
ip netns exec {tag}t sysctl -qw net.ipv4.conf.eth0.forwarding=1 net.ipv6.conf.eth0.forwarding=1
ip netns exec {tag}c ethtool -K eth0 tx off >/dev/null
ip netns exec {tag}p ethtool -K eth0 tx off >/dev/null
ip netns exec {tag}t ethtool -K eth0 tx off >/dev/null
ip -n {tag}r link set dev tot xdpdrv obj {obj} sec xdp program turnd_pass
"
        );
        sh(&s);
        t
    }

    /// IPv4 only: turnd's host `{tag}t` with eth0 10.`n`.1.1 toward the
    /// client (10.`n`.1.2) and eth1 10.`n`.3.1 toward the peer
    /// (10.`n`.3.2), forwarding on both, so a rewritten datagram leaves by
    /// the other interface (a redirect). The client's and the peer's ends
    /// carry an XDP program (veth takes redirected frames only then).
    pub fn direct(tag: &str, n: u8) -> Self {
        let t = Topo {
            tag: tag.into(),
            n,
            direct: true,
        };
        t.teardown();
        let obj = concat!(env!("CARGO_MANIFEST_DIR"), "/src/net/xdp/turnd.bpf.o");
        let mut s = String::new();
        for ns in ["c", "t", "p"] {
            s += &format!("ip netns add {tag}{ns}\nip -n {tag}{ns} link set lo up\n");
        }
        for (i, ns, dev) in [(1, "c", "eth0"), (3, "p", "eth1")] {
            s += &format!(
                "ip link add {dev} netns {tag}t type veth peer name eth0 netns {tag}{ns}
ip -n {tag}t addr add 10.{n}.{i}.1/24 dev {dev}
ip -n {tag}{ns} addr add 10.{n}.{i}.2/24 dev eth0
ip -n {tag}t link set {dev} up
ip -n {tag}{ns} link set eth0 up
ip -n {tag}{ns} route add default via 10.{n}.{i}.1
ip netns exec {tag}{ns} ethtool -K eth0 tx off >/dev/null
ip -n {tag}{ns} link set dev eth0 xdpdrv obj {obj} sec xdp program turnd_pass
"
            );
        }
        s += &format!(
            "ip netns exec {tag}t sysctl -qw net.ipv4.conf.eth0.forwarding=1 net.ipv4.conf.eth1.forwarding=1\n"
        );
        sh(&s);
        t
    }

    /// A second link into turnd's host (a [`Topo::new`] one): its eth1
    /// (10.`n`.4.1/24, fd00:`n`:4::1/64, forwarding on) to namespace
    /// `{tag}x` (10.`n`.4.2, fd00:`n`:4::2), from which no route leads to
    /// the client or the peer: a frame sent from there in their name is
    /// spoofed, and the reverse-path filter knows it.
    pub fn second_link(&self) {
        let (tag, n) = (&self.tag, self.n);
        sh(&format!(
            "ip netns add {tag}x
ip -n {tag}x link set lo up
ip link add eth1 netns {tag}t type veth peer name eth0 netns {tag}x
ip -n {tag}t addr add 10.{n}.4.1/24 dev eth1
ip -n {tag}t addr add fd00:{n}:4::1/64 dev eth1 nodad
ip -n {tag}x addr add 10.{n}.4.2/24 dev eth0
ip -n {tag}x addr add fd00:{n}:4::2/64 dev eth0 nodad
ip -n {tag}t link set eth1 up
ip -n {tag}x link set eth0 up
ip netns exec {tag}t sysctl -qw net.ipv4.conf.eth1.forwarding=1 net.ipv6.conf.eth1.forwarding=1
ip netns exec {tag}t ethtool -K eth1 tx off >/dev/null
ip netns exec {tag}x ethtool -K eth0 tx off >/dev/null
"
        ));
    }

    fn teardown(&self) {
        for ns in ["c", "r", "t", "p", "x"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("{}{ns}", self.tag)])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }

    pub fn ns(&self, which: char) -> String {
        format!("{}{which}", self.tag)
    }

    /// The address of `which` ('c', 't', 'p') in `family` (4 or 6).
    pub fn ip(&self, which: char, family: u8) -> IpAddr {
        let i = match which {
            'c' => 1,
            't' => 2,
            'p' => 3,
            _ => panic!("no host {which}"),
        };
        let text = if self.direct && which == 't' {
            format!("10.{}.1.1", self.n)
        } else if family == 4 {
            format!("10.{}.{i}.2", self.n)
        } else {
            format!("fd00:{}:{i}::2", self.n)
        };
        text.parse().expect("an address")
    }

    /// Runs `f` on a thread inside namespace `which` (sockets it opens
    /// stay in that namespace).
    pub fn within<T: Send + 'static>(&self, which: char, f: impl FnOnce() -> T + Send + 'static) -> T {
        within(&self.ns(which), f)
    }

    /// A UDP socket bound in namespace `which` on its address of the family.
    pub fn udp(&self, which: char, family: u8) -> UdpSocket {
        let ip = self.ip(which, family);
        let s = self.within(which, move || UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind"));
        s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        s
    }

    /// turnd in the turnd namespace with `config` (`{dir}` replaced).
    pub fn turnd(&self, config: &str) -> Proc {
        Proc::spawn_netns(&self.ns('t'), config)
    }

    /// turnd's /metrics, from its namespace's loopback at `port`.
    pub fn metrics(&self, port: u16) -> String {
        metrics_in(&self.ns('t'), port)
    }

    /// One series of turnd's /metrics (0 when absent).
    pub fn metric(&self, port: u16, series: &str) -> u64 {
        self.metrics(port)
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    /// Waits (bounded) until `series` reaches `min`; returns its value.
    pub fn wait_metric(&self, port: u16, series: &str, min: u64, limit: Duration) -> u64 {
        let end = Instant::now() + limit;
        loop {
            let v = self.metric(port, series);
            if v >= min || Instant::now() > end {
                return v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `cmd` with `args` inside namespace `which`; its output.
    pub fn run(&self, which: char, cmd: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(which), cmd])
            .args(args)
            .output()
            .expect("command runs")
    }

    /// Starts `cmd` with `args` inside namespace `which`.
    pub fn spawn(&self, which: char, cmd: &str, args: &[&str]) -> std::process::Child {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(which), cmd])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("command starts")
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        self.teardown();
    }
}
