//! Prometheus metrics: read on each scrape from the workers' published
//! counters ([`crate::net::Workers::totals`], plain integers the workers
//! copy out once a second, so the data path has no atomics) and the
//! cross-worker state. Encoded by `prometheus-client` (OpenMetrics text).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::TypedMetric;
use prometheus_client::registry::Registry;

use crate::net::tcp::Gate;
use crate::net::xdp::Counter;
use crate::net::Shared;
use crate::net::Workers;
use crate::proto::stats::{AuthFailure, Refusal, TRANSPORTS};
use crate::proto::wire::ErrorCode;

/// Where the numbers come from.
pub struct Source {
    pub workers: Arc<Workers>,
    pub shared: Arc<Shared>,
    pub gate: Option<Arc<Gate>>,
    /// The fleet this node belongs to, when it does.
    pub cluster: Option<Arc<crate::cluster::node::Cluster>>,
    /// The TLS certificate, when a listener serves TLS.
    pub certs: Option<Arc<crate::tls::Certs>>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("metrics::Source")
    }
}

/// The OpenMetrics text of everything turnd counts.
pub fn render(source: &Arc<Source>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(source.clone()));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// The Content-Type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// A family of metrics of one type: one per label set.
fn family<'a, M: EncodeMetric + TypedMetric>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Vec<(&'a str, String)>, M)>,
) -> Result<(), std::fmt::Error> {
    let mut family = e.encode_descriptor(name, help, None, M::TYPE)?;
    for (labels, m) in values {
        m.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A counter family: one value per label set.
fn counters<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Vec<(&'a str, String)>, u64)>,
) -> Result<(), std::fmt::Error> {
    family(
        e,
        name,
        help,
        values.into_iter().map(|(l, v)| (l, ConstCounter::new(v))),
    )
}

impl Source {
    /// The kernel's data path: the mode in force, and what it relayed.
    fn encode_xdp(&self, e: &mut DescriptorEncoder, offloaded: u64) -> Result<(), std::fmt::Error> {
        let mut info = e.encode_descriptor(
            "turnd_xdp",
            "The kernel data path in force (mode: off, native or generic)",
            None,
            prometheus_client::metrics::MetricType::Info,
        )?;
        info.encode_info(&[("mode", self.workers.xdp_in_force.mode())])?;
        let Some(x) = &self.workers.xdp else {
            return Ok(());
        };
        gauge(
            e,
            "turnd_xdp_channels",
            "Channels relayed in the kernel now",
            offloaded as i64,
        )?;
        let c = x.counters();
        let n = |k: Counter| c[k as usize];
        let dir = |d: &str, f: &str| vec![("direction", d.to_string()), ("family", f.to_string())];
        counters(
            e,
            "turnd_xdp_packets",
            "ChannelData packets relayed in the kernel",
            [
                (dir("to_peer", "ipv4"), n(Counter::ToPeerV4)),
                (dir("to_peer", "ipv6"), n(Counter::ToPeerV6)),
                (dir("to_client", "ipv4"), n(Counter::ToClientV4)),
                (dir("to_client", "ipv6"), n(Counter::ToClientV6)),
            ],
        )?;
        let why = |r: &str| vec![("reason", r.to_string())];
        counters(
            e,
            "turnd_xdp_passed",
            "Frames the kernel path left to the socket path, by reason",
            [
                (why("not_udp"), n(Counter::PassNotUdp)),
                (why("other_host"), n(Counter::PassOtherHost)),
                (why("options"), n(Counter::PassOptions)),
                (why("malformed"), n(Counter::PassMalformed)),
                (why("unknown"), n(Counter::PassUnknown)),
                (why("length"), n(Counter::PassLength)),
                (why("expired"), n(Counter::PassExpired)),
                (why("reverse_path"), n(Counter::PassReversePath)),
                (why("checksum"), n(Counter::PassChecksum)),
                (why("no_route"), n(Counter::PassNoRoute)),
                (why("too_big"), n(Counter::PassTooBig)),
            ],
        )?;
        counter(
            e,
            "turnd_xdp_aborted",
            "Frames the kernel path dropped after it had begun to rewrite them (never expected)",
            n(Counter::Aborted),
        )?;
        counter(
            e,
            "turnd_xdp_redirected",
            "Kernel-relayed packets sent out another interface than they came in on",
            n(Counter::Redirected),
        )?;
        counter(
            e,
            "turnd_xdp_map_full",
            "Channels left on the socket path because the kernel maps were full",
            x.full(),
        )
    }
}

impl Collector for Source {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let t = self.workers.totals();
        let s = &t.stats;
        let (active, in_use, range) = {
            let g = self.shared.lock();
            (g.total, g.ports.in_use(), g.ports.capacity())
        };
        let mut info = e.encode_descriptor(
            "turnd_build",
            "turnd's version",
            None,
            prometheus_client::metrics::MetricType::Info,
        )?;
        info.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        gauge(&mut e, "turnd_allocations", "Allocations alive now", i64::from(active))?;
        gauge(
            &mut e,
            "turnd_draining",
            "1 while turnd drains (SIGTERM): new allocations are sent elsewhere",
            i64::from(self.shared.is_draining()),
        )?;
        if let Some(c) = &self.cluster {
            let h = c.health();
            let state = |s: &str, n: u32| (vec![("state", s.to_string())], ConstGauge::new(i64::from(n)));
            family(
                &mut e,
                "turnd_cluster_siblings",
                "Siblings of this node in its fleet, by state (healthy: clients are sent there)",
                [
                    state("healthy", h.healthy),
                    state("draining", h.draining),
                    state("unreachable", h.unreachable),
                ],
            )?;
        }
        if let Some(c) = &self.certs {
            let (_, not_after) = c.validity();
            family(
                &mut e,
                "turnd_certificate_expiry_timestamp_seconds",
                "When the TLS certificate in use expires (Unix time), per DNS name",
                c.names()
                    .into_iter()
                    .map(|n| (vec![("name", n)], ConstGauge::new(not_after))),
            )?;
            let outcome = |o: &str| vec![("outcome", o.to_string())];
            let n = |i: usize| c.orders[i].load(std::sync::atomic::Ordering::Relaxed);
            counters(
                &mut e,
                "turnd_acme_orders",
                "ACME certificate orders, by outcome",
                [(outcome("issued"), n(0)), (outcome("failed"), n(1))],
            )?;
        }
        gauge(
            &mut e,
            "turnd_permissions",
            "Permissions installed now",
            t.permissions as i64,
        )?;
        gauge(
            &mut e,
            "turnd_channels",
            "Channel bindings alive now",
            t.channels as i64,
        )?;
        gauge(
            &mut e,
            "turnd_timers",
            "Expiry timers pending in the workers",
            t.timers as i64,
        )?;
        gauge(
            &mut e,
            "turnd_relay_ports_in_use",
            "Relay ports taken (allocations and reservations)",
            in_use as i64,
        )?;
        gauge(
            &mut e,
            "turnd_relay_ports",
            "Relay ports in the configured range",
            range as i64,
        )?;
        self.encode_xdp(&mut e, t.offloaded)?;
        if let Some(g) = &self.gate {
            gauge(
                &mut e,
                "turnd_stream_connections",
                "Open TCP, TLS and auto connections",
                g.open() as i64,
            )?;
        }
        counter(
            &mut e,
            "turnd_allocations_created",
            "Allocations created",
            s.allocations_created,
        )?;
        counter(
            &mut e,
            "turnd_allocations_expired",
            "Allocations that expired",
            s.allocations_expired,
        )?;
        counter(
            &mut e,
            "turnd_allocations_deleted",
            "Allocations deleted by their client, their connection closing or an operator",
            s.allocations_deleted,
        )?;
        counters(
            &mut e,
            "turnd_allocations_refused",
            "Allocate requests refused, by reason",
            Refusal::ALL
                .iter()
                .map(|r| (vec![("reason", r.label().to_string())], s.refused[*r as usize])),
        )?;
        counters(
            &mut e,
            "turnd_auth_failures",
            "Signed requests that did not authenticate, by reason",
            AuthFailure::ALL
                .iter()
                .map(|r| (vec![("reason", r.label().to_string())], s.auth_failures[*r as usize])),
        )?;
        counters(
            &mut e,
            "turnd_error_responses",
            "Error answers sent, by STUN error code",
            ErrorCode::CODES
                .iter()
                .zip(s.errors)
                .map(|(c, v)| (vec![("code", c.to_string())], v)),
        )?;
        let traffic = |bytes: bool| {
            TRANSPORTS.iter().flat_map(move |tr| {
                let i = *tr as usize;
                [("to_peer", s.to_peer[i]), ("to_client", s.to_client[i])].map(|(dir, c)| {
                    (
                        vec![("direction", dir.to_string()), ("transport", tr.to_string())],
                        if bytes { c.bytes } else { c.packets },
                    )
                })
            })
        };
        counters(
            &mut e,
            "turnd_relayed_packets",
            "Packets relayed, by direction and client transport",
            traffic(false),
        )?;
        counters(
            &mut e,
            "turnd_relayed_bytes",
            "Payload bytes relayed, by direction and client transport",
            traffic(true),
        )?;
        counter(
            &mut e,
            "turnd_relayed_internal_packets",
            "Packets handed from one allocation of this turnd to another inside the process (also in turnd_relayed_packets)",
            s.internal.packets,
        )?;
        counter(
            &mut e,
            "turnd_relayed_internal_bytes",
            "Payload bytes handed from one allocation of this turnd to another inside the process",
            s.internal.bytes,
        )?;
        counter(
            &mut e,
            "turnd_over_bandwidth_packets",
            "Packets dropped because their allocation was over relay.max-bps or their user over relay.max-bps-per-user",
            s.over_bandwidth,
        )?;
        counter(
            &mut e,
            "turnd_challenges_limited",
            "401/438 answers not sent because the source address was over auth.challenges-per-second",
            s.challenges_limited,
        )?;
        counter(
            &mut e,
            "turnd_dropped_packets",
            "Datagrams and messages dropped (malformed, no permission, …)",
            s.dropped,
        )
    }
}
