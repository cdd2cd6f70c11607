//! The short soak (CI): the real binary, three cycles of 1000 allocations
//! created, refreshed, bound, used and left to expire. After each cycle
//! every allocation, relay port and timer is gone, and RSS and open file
//! descriptors are within 10 % of the first cycle's. The long version is
//! `bin/soak` (10 000 allocations a cycle, figures in the README).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::process::{free_tcp_port, free_udp_port, Proc};
use common::server::*;
use common::soak;

#[test]
fn allocations_come_and_go_without_leaking() {
    let udp = free_udp_port();
    let metrics = free_tcp_port();
    let listener = listener_toml("127.0.0.1", udp, "udp");
    let config = format!(
        r#"realm = "{REALM}"
data-dir = "{{dir}}"
workers = 2
log-level = "warn"
{listener}[auth]
static-auth-secrets = ["{SECRET}"]
challenges-per-second = 0
[relay]
default-lifetime = "2s"
max-allocations-per-user = 100000
[peers]
allow = ["127.0.0.0/8"]
[http]
listen = []
[metrics]
listen = ["127.0.0.1:{metrics}"]
"#
    );
    let d = Proc::spawn(&config, &[]);
    d.wait_listening(SocketAddr::from(([127, 0, 0, 1], metrics)));
    let (peer, _echo) = echo_peer();
    let server = SocketAddr::from(([127, 0, 0, 1], udp));
    let mut first = None;
    for i in 0..3 {
        let c = soak::cycle(server, SECRET.as_bytes(), REALM, peer, 1000, 2);
        assert_eq!(
            (c.allocated, c.refreshed, c.bound),
            (1000, 1000, 1000),
            "cycle {i}: {c:?}"
        );
        assert!(c.echoed >= 990, "cycle {i}: {c:?}");
        assert!(
            soak::wait_drained(metrics, Duration::from_secs(20)),
            "cycle {i}: allocations, ports or timers left"
        );
        let (rss, fds) = soak::usage(d.child.id());
        println!("cycle {i}: {c:?}, rss {rss} KiB, {fds} fds");
        let (rss0, fds0) = *first.get_or_insert((rss, fds));
        assert!(
            rss as f64 <= rss0 as f64 * 1.10,
            "cycle {i}: RSS {rss} KiB vs {rss0} KiB"
        );
        // 10 %, but at least 3 descriptors: a scrape's socket may still be
        // closing when they are counted.
        assert!(fds <= fds0 + (fds0 / 10).max(3), "cycle {i}: {fds} fds vs {fds0}");
    }
}
