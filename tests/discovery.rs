//! NAT behaviour discovery (RFC 5780): with `stun.other-address`, Binding
//! answers carry OTHER-ADDRESS and RESPONSE-ORIGIN (while they stay within
//! three times the request) and CHANGE-REQUEST sends the answer from the other IP
//! and/or port; without it, CHANGE-REQUEST gets 420. Raw requests over
//! loopback (127.0.0.1 paired with 127.0.0.2), and coturn's
//! `turnutils_natdiscovery` against the same server.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use common::server::tool;
use common::stunc::*;
use stun::addr::MappedAddress;
use stun::attributes::AttrType;
use stun::message::{Message, METHOD_BINDING};

const CHANGE_REQUEST: u16 = 0x0003;
const PADDING: u16 = 0x0026;
const RESPONSE_ORIGIN: u16 = 0x802B;
const OTHER_ADDRESS: u16 = 0x802C;

/// A Binding request with `attrs`, no integrity, no fingerprint.
fn binding(attrs: Attrs) -> Vec<u8> {
    build(req(METHOD_BINDING), attrs, None, false).raw
}

fn change(ip: bool, port: bool) -> Box<dyn stun::message::Setter> {
    let flags = u32::from(ip) << 2 | u32::from(port) << 1;
    raw(CHANGE_REQUEST, &flags.to_be_bytes())
}

fn padding(n: usize) -> Box<dyn stun::message::Setter> {
    raw(PADDING, &vec![0; n])
}

struct Answer {
    from: SocketAddr,
    len: usize,
    message: Message,
}

impl Answer {
    fn has(&self, t: u16) -> bool {
        self.message.contains(AttrType(t))
    }

    /// A (plain, not XOR-ed) address attribute.
    fn address(&self, t: u16) -> Option<SocketAddr> {
        let mut a = MappedAddress::default();
        a.get_from_as(&self.message, AttrType(t))
            .ok()
            .map(|_| SocketAddr::new(a.ip, a.port))
    }

    fn error(&self) -> Option<u16> {
        error_code(&self.message)
    }
}

fn ask(server: SocketAddr, request: &[u8]) -> Answer {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    let mut buf = [0u8; 2048];
    for _ in 0..10 {
        s.send_to(request, server).expect("send");
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            assert!(
                n <= 3 * request.len(),
                "{n} bytes answer {} bytes: more than three times",
                request.len()
            );
            return Answer {
                from,
                len: n,
                message: decode(&buf[..n]),
            };
        }
    }
    panic!("no answer from {server}");
}

/// turnd on 127.0.0.1:`p1` (UDP) with `other` as its RFC 5780 other
/// address, or none.
fn start(p1: u16, other: Option<SocketAddr>) -> turnd::serve::Daemon {
    let stun = other.map_or(String::new(), |o| format!("[stun]\nother-address = \"{o}\"\n"));
    let toml = format!(
        "log-level = \"warn\"\n[[listener]]\naddress = \"127.0.0.1\"\nport = {p1}\n[auth]\nstatic-auth-secrets = [\"north\"]\n[http]\nlisten = []\n{stun}"
    );
    let cfg = turnd::config::Config::parse(&toml, "t.toml").expect("config");
    let secrets = cfg.secrets("t.toml").expect("secrets");
    turnd::serve::start(&cfg, secrets).expect("turnd starts")
}

/// Two ports free on both 127.0.0.1 and 127.0.0.2.
fn ports() -> (u16, u16) {
    loop {
        let a = common::process::free_udp_port();
        let b = common::process::free_udp_port();
        let free = |ip: &str, p: u16| UdpSocket::bind((ip, p)).is_ok();
        if a != b && [a, b].iter().all(|p| free("127.0.0.1", *p) && free("127.0.0.2", *p)) {
            return (a, b);
        }
    }
}

#[test]
fn change_request_is_answered_from_the_other_address_and_port() {
    let (p1, p2) = ports();
    let primary = SocketAddr::from(([127, 0, 0, 1], p1));
    let other = SocketAddr::from(([127, 0, 0, 2], p2));
    let daemon = start(p1, Some(other));
    // The other three combinations listen too; none is handed out in URLs.
    assert_eq!(daemon.endpoints().udp, vec![primary]);

    // A bare request: all three addresses in 56 bytes (2.8 times the 20),
    // as the discovery tools expect without padding.
    let a = ask(primary, &binding(vec![]));
    assert_eq!(a.len, 56);
    assert!(mapped(&a.message).is_some());
    assert_eq!(a.address(OTHER_ADDRESS), Some(other));
    assert_eq!(a.address(RESPONSE_ORIGIN), Some(primary));

    // Room for them: both attributes, from where it was sent.
    let a = ask(primary, &binding(vec![padding(20)]));
    assert_eq!(a.from, primary);
    assert_eq!(a.address(RESPONSE_ORIGIN).expect("RESPONSE-ORIGIN"), primary);
    assert_eq!(a.address(OTHER_ADDRESS).expect("OTHER-ADDRESS"), other);

    // CHANGE-REQUEST, 28 bytes: exactly twice fits all three addresses.
    for (ip, port, from) in [
        (false, false, primary),
        (false, true, SocketAddr::from(([127, 0, 0, 1], p2))),
        (true, false, SocketAddr::from(([127, 0, 0, 2], p1))),
        (true, true, other),
    ] {
        let a = ask(primary, &binding(vec![change(ip, port)]));
        assert_eq!(a.error(), None, "change ip {ip} port {port}");
        assert_eq!(a.from, from, "change ip {ip} port {port}");
        assert_eq!(a.address(RESPONSE_ORIGIN).expect("RESPONSE-ORIGIN"), from);
        // OTHER-ADDRESS differs from the answer's source in both.
        let o = a.address(OTHER_ADDRESS).expect("OTHER-ADDRESS");
        assert!(o.ip() != from.ip() && o.port() != from.port(), "{o} against {from}");
    }
    // Asked at the other address: OTHER-ADDRESS is the primary.
    let a = ask(other, &binding(vec![change(false, false)]));
    assert_eq!(a.address(OTHER_ADDRESS).expect("OTHER-ADDRESS"), primary);
    // A malformed CHANGE-REQUEST: 400.
    let a = ask(primary, &binding(vec![raw(CHANGE_REQUEST, &[0, 0, 4])]));
    assert_eq!(a.error(), Some(400));
    daemon.stop();
}

#[test]
fn without_other_address_change_request_gets_420() {
    let (p1, _) = ports();
    let primary = SocketAddr::from(([127, 0, 0, 1], p1));
    let daemon = start(p1, None);
    let a = ask(primary, &binding(vec![change(true, true)]));
    assert_eq!(a.error(), Some(420));
    assert!(!a.has(OTHER_ADDRESS));
    let a = ask(primary, &binding(vec![padding(40)]));
    assert_eq!(a.error(), Some(420));
    let a = ask(primary, &binding(vec![]));
    assert!(!a.has(OTHER_ADDRESS) && !a.has(RESPONSE_ORIGIN));
    daemon.stop();
}

#[test]
fn one_address_changes_the_port_only() {
    let (p1, p2) = ports();
    let primary = SocketAddr::from(([127, 0, 0, 1], p1));
    let second = SocketAddr::from(([127, 0, 0, 1], p2));
    let daemon = start(p1, Some(second));
    let a = ask(primary, &binding(vec![change(false, true)]));
    assert_eq!(a.from, second);
    assert_eq!(a.address(OTHER_ADDRESS).expect("OTHER-ADDRESS"), primary);
    let a = ask(primary, &binding(vec![change(true, false)]));
    assert_eq!(a.error(), Some(420));
    daemon.stop();
}

#[test]
fn other_address_must_pair_with_a_specific_listener() {
    let e = turnd::config::Config::parse(
        "[[listener]]\naddress = \"0.0.0.0\"\n[stun]\nother-address = \"127.0.0.2:3479\"\n",
        "t.toml",
    )
    .expect_err("a wildcard listener cannot pair");
    assert!(e.to_string().contains("stun.other-address"), "{e}");
    let e = turnd::config::Config::parse(
        "[[listener]]\naddress = \"127.0.0.1\"\n[stun]\nother-address = \"127.0.0.2:3478\"\n",
        "t.toml",
    )
    .expect_err("another address needs another port");
    assert!(e.to_string().contains("another port"), "{e}");
}

/// coturn's NAT behaviour discovery against turnd, over loopback (no NAT
/// in between: endpoint-independent mapping and filtering), with its
/// bare 20-byte Bindings (no `-P`) and padded ones.
#[test]
fn natdiscovery_reports_no_nat_over_loopback() {
    let Some(bin) = tool("turnutils_natdiscovery") else {
        return;
    };
    let (p1, p2) = ports();
    let daemon = start(p1, Some(SocketAddr::from(([127, 0, 0, 2], p2))));
    for pad in [None, Some("-P")] {
        let out = Command::new("timeout")
            .args(["30".as_ref(), bin.as_os_str()])
            .args(["-m", "-f", "-p", &p1.to_string()])
            .args(pad)
            .arg("127.0.0.1")
            .output()
            .expect("natdiscovery runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("NAT with Endpoint Independent Mapping"),
            "{pad:?}: {text}"
        );
        assert!(
            text.contains("NAT with Endpoint Independent Filtering"),
            "{pad:?}: {text}"
        );
    }
    daemon.stop();
}
