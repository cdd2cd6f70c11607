//! What a configuration that deserialized may still get wrong: every rule
//! checked, every broken one reported under the key it is about.

use std::net::{IpAddr, SocketAddr};

use super::{AcmeChallenge, Config, ListenTransport};

/// A broken rule: the key (dotted path) and why.
type Broken = (&'static str, String);

impl Config {
    /// Every rule this configuration breaks.
    pub(super) fn validate(&self) -> Vec<Broken> {
        let mut rules = Rules(Vec::new());
        let r = &self.relay;
        rules.check(r.min_port != 0, "relay.min-port", || "must be at least 1".into());
        rules.check(r.min_port <= r.max_port, "relay.max-port", || {
            format!(
                "must not be below relay.min-port ({}): the range {}-{} is empty",
                r.min_port, r.min_port, r.max_port
            )
        });
        rules.check(r.default_lifetime.as_secs() >= 1, "relay.default-lifetime", || {
            "must be at least 1s".into()
        });
        rules.check(r.max_lifetime >= r.default_lifetime, "relay.max-lifetime", || {
            format!(
                "must not be shorter than relay.default-lifetime ({})",
                humantime::format_duration(r.default_lifetime)
            )
        });
        rules.check(
            r.max_lifetime.as_secs() <= u64::from(u32::MAX),
            "relay.max-lifetime",
            || "too long".into(),
        );
        rules.check(
            r.external_ip.iter().filter(|i| i.is_ipv4()).count() <= 1
                && r.external_ip.iter().filter(|i| i.is_ipv6()).count() <= 1,
            "relay.external-ip",
            || "at most one IPv4 and one IPv6 address".into(),
        );
        rules.check(r.max_allocations >= 1, "relay.max-allocations", || {
            "must be at least 1".into()
        });
        rules.check(!self.realm.is_empty() && self.realm.len() <= 127, "realm", || {
            "must be 1 to 127 characters".into()
        });
        rules.check(self.auth.nonce_lifetime.as_secs() >= 10, "auth.nonce-lifetime", || {
            "must be at least 10s".into()
        });
        rules.check(
            !self.auth.rest_separator.is_ascii_digit(),
            "auth.rest-separator",
            || "must not be a digit".into(),
        );
        rules.check(self.listener.as_ref().is_none_or(|l| !l.is_empty()), "listener", || {
            "at least one listener is needed".into()
        });
        let pairs = self.stun_pairs();
        for other in &self.stun.other_address {
            let family = if other.is_ipv4() { "IPv4" } else { "IPv6" };
            let pair = pairs.iter().find(|(_, o)| o == other).map(|(p, _)| *p);
            rules.check(pair.is_some(), "stun.other-address", || {
                format!(
                    "{other} needs a UDP listener on a specific {family} address with a fixed port to pair with (not a wildcard, not port 0)"
                )
            });
            rules.check(pair != Some(*other), "stun.other-address", || {
                format!("{other} is the UDP listener itself: give another address or port")
            });
            rules.check(
                other.port() != 0 && !other.ip().is_unspecified(),
                "stun.other-address",
                || format!("{other}: a specific address and port"),
            );
            rules.check(
                pair.is_none_or(|p| p.ip() == other.ip() || p.port() != other.port()),
                "stun.other-address",
                || format!("{other}: with another address, use another port as well (RFC 5780 needs both to differ)"),
            );
        }
        rules.check(
            self.stun.other_address.iter().filter(|a| a.is_ipv4()).count() <= 1
                && self.stun.other_address.iter().filter(|a| a.is_ipv6()).count() <= 1,
            "stun.other-address",
            || "at most one IPv4 and one IPv6 address".into(),
        );
        self.check_port_entries(&mut rules);
        self.check_acme(&mut rules);
        rules.check(
            self.tls.cert_file.is_some() == self.tls.key_file.is_some(),
            "tls.cert-file",
            || "cert-file and key-file go together".into(),
        );
        let t = &self.tcp;
        for (key, n) in [
            ("tcp.max-connections", t.max_connections),
            ("tcp.max-connections-per-address", t.max_connections_per_address),
        ] {
            rules.check(n >= 1, key, || "must be at least 1".into());
        }
        for (key, d) in [
            ("tcp.handshake-timeout", t.handshake_timeout),
            ("tcp.idle-timeout", t.idle_timeout),
            ("tcp.frame-timeout", t.frame_timeout),
            ("tcp.unallocated-timeout", t.unallocated_timeout),
        ] {
            rules.check(!d.is_zero(), key, || "must be longer than 0s".into());
        }
        for (key, tok) in [
            ("metrics.token", &self.metrics.token),
            ("admin.token", &self.admin.token),
            ("cluster.token", &self.cluster.token),
        ] {
            rules.check(tok.as_ref().is_none_or(|t| t.len() >= 16), key, || {
                "must be at least 16 characters".into()
            });
        }
        rules.check(
            self.admin.listen.is_empty() || self.admin.token.is_some() || self.admin.token_file.is_some(),
            "admin.listen",
            || "the admin API needs admin.token or admin.token-file".into(),
        );
        let c = &self.cluster;
        if !c.nodes.is_empty() {
            rules.check(c.token.is_some() || c.token_file.is_some(), "cluster.nodes", || {
                "a fleet needs cluster.token or cluster.token-file (the same on every node)".into()
            });
            rules.check(self.page_enabled(), "cluster.nodes", || {
                "siblings read this node's status from its page listeners: configure http.listen, \
                 http.https-listen or an auto listener"
                    .into()
            });
        }
        for n in &c.nodes {
            if let Err(why) = crate::cluster::NodeUrl::parse(n) {
                rules.0.push(("cluster.nodes", format!("{n:?}: {why}")));
            }
        }
        rules.check(
            c.poll_interval >= std::time::Duration::from_millis(100),
            "cluster.poll-interval",
            || "must be at least 100ms".into(),
        );
        rules.check(!c.poll_timeout.is_zero(), "cluster.poll-timeout", || {
            "must be longer than 0s".into()
        });
        let m = &self.metrics;
        if m.token.is_none() && !m.public {
            if let Some(a) = m.listen.iter().find(|a| !a.ip().is_loopback()) {
                rules.0.push((
                    "metrics.listen",
                    format!(
                        "{a} is reachable from other machines, and /metrics names users and addresses: set \
                         metrics.token, or metrics.public = true to serve it to anyone"
                    ),
                ));
            }
            if m.on_http {
                if let Some(a) = self.page_addresses().into_iter().find(|a| !a.ip().is_loopback()) {
                    rules.0.push((
                        "metrics.on-http",
                        format!(
                            "the page listener {a} is reachable from other machines: set metrics.token, or \
                             metrics.public = true to serve /metrics there to anyone"
                        ),
                    ));
                }
            }
        }
        let h = &self.http;
        if let Some(k) = &h.access_key {
            rules.check(
                k.len() >= 12
                    && k.as_bytes()
                        .iter()
                        .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "http.access-key",
                || "must be at least 12 characters of A-Z a-z 0-9 - _ (it travels in links)".into(),
            );
        }
        rules.check((60..=7 * 86400).contains(&h.ice_ttl.as_secs()), "http.ice-ttl", || {
            "must be between 1m and 7d".into()
        });
        rules.check(h.ice_requests_per_minute >= 1, "http.ice-requests-per-minute", || {
            "must be at least 1".into()
        });
        rules.check(h.ws_messages_per_second >= 1, "http.ws-messages-per-second", || {
            "must be at least 1".into()
        });
        rules.check((2..=16).contains(&h.room_size), "http.room-size", || {
            "must be between 2 and 16".into()
        });
        rules.check(h.max_connections >= 4, "http.max-connections", || {
            "must be at least 4".into()
        });
        rules.check(
            h.max_connections_per_address >= 1,
            "http.max-connections-per-address",
            || "must be at least 1".into(),
        );
        rules.check(!h.header_timeout.is_zero(), "http.header-timeout", || {
            "must be longer than 0s".into()
        });
        rules.check(h.idle_timeout.as_secs() >= 2, "http.idle-timeout", || {
            "must be at least 2s".into()
        });
        rules.check(
            h.allowed_origins.iter().all(|o| valid_origin(o)),
            "http.allowed-origins",
            || "each must be scheme://host[:port], e.g. \"https://app.example.org\"".into(),
        );
        rules.check(
            self.log_level.parse::<tracing_subscriber::EnvFilter>().is_ok(),
            "log-level",
            || format!("`{}` is not a log filter", self.log_level),
        );
        rules.0
    }

    /// Where the page is served: HTTP, HTTPS and `auto` listeners.
    pub fn page_addresses(&self) -> Vec<std::net::SocketAddr> {
        let auto = self
            .listeners()
            .0
            .into_iter()
            .filter(|(_, t)| *t == ListenTransport::Auto)
            .map(|(a, _)| a);
        self.http
            .listen
            .iter()
            .chain(&self.http.https_listen)
            .copied()
            .chain(auto)
            .collect()
    }
}

/// The rules broken so far.
struct Rules(Vec<Broken>);

impl Rules {
    fn check(&mut self, ok: bool, key: &'static str, why: impl FnOnce() -> String) {
        if !ok {
            self.0.push((key, why()));
        }
    }
}

impl Config {
    /// `[acme]`: names to ask for, a way to answer the CA, no `[tls]` files
    /// beside it.
    fn check_acme(&self, rules: &mut Rules) {
        let a = &self.acme;
        if !a.enabled {
            return;
        }
        let domains = self.acme_domains();
        rules.check(!domains.is_empty(), "acme.domains", || {
            "ACME needs a DNS name: set public-host to one (not an IP address) or list acme.domains".into()
        });
        for d in &domains {
            rules.check(
                d.parse::<IpAddr>().is_err() && d.contains('.') && !d.contains(['/', ':', ' ', '*']),
                "acme.domains",
                || format!("{d:?} is not a DNS name a CA can validate here (no IP addresses, no wildcards)"),
            );
        }
        rules.check(
            a.directory.starts_with("https://") || a.directory.starts_with("http://"),
            "acme.directory",
            || format!("{:?} is not a URL", a.directory),
        );
        rules.check(self.tls.cert_file.is_none(), "acme.enabled", || {
            "tls.cert-file and ACME both name the certificate: remove one".into()
        });
        rules.check(self.acme_challenge().is_some(), "acme.challenge", || {
            match a.challenge {
                Some(AcmeChallenge::TlsAlpn01) => "tls-alpn-01 needs a `tls` or `auto` listener (port 443)".into(),
                Some(AcmeChallenge::Http01) => "http-01 needs acme.http-listen (port 80)".into(),
                None => {
                    "nothing can answer the CA: add a `tls` or `auto` listener on 443, or acme.http-listen on 80".into()
                }
            }
        });
        rules.check(
            self.needs_certificate() || !a.http_listen.is_empty(),
            "acme.enabled",
            || "no listener serves TLS: nothing would use the certificate".into(),
        );
    }

    /// A `[peers] allow` entry with ports never admits turnd's own sockets:
    /// on an address that may be turnd's (a listener's, a relay's, an
    /// advertised one, or any address of a family a wildcard listener
    /// covers), its listener ports (TURN, RFC 5780, page, metrics, admin)
    /// and the relay port range stay closed.
    fn check_port_entries(&self, rules: &mut Rules) {
        let (listeners, _) = self.listeners();
        let sockets: Vec<(SocketAddr, &str)> = (listeners.iter().map(|(a, _)| (*a, "listener")))
            .chain(self.stun_sockets().into_iter().map(|a| (a, "RFC 5780 socket")))
            .chain(self.http.listen.iter().map(|a| (*a, "http.listen")))
            .chain(self.http.https_listen.iter().map(|a| (*a, "http.https-listen")))
            .chain(self.metrics.listen.iter().map(|a| (*a, "metrics.listen")))
            .chain(self.admin.listen.iter().map(|a| (*a, "admin.listen")))
            .collect();
        let covers =
            |bound: IpAddr, ip: IpAddr| bound == ip || (bound.is_unspecified() && bound.is_ipv4() == ip.is_ipv4());
        let r = &self.relay;
        let relay_ips: Vec<IpAddr> = (r.relay_ipv4.map(IpAddr::from).into_iter())
            .chain(r.relay_ipv6.map(IpAddr::from))
            .chain(r.external_ip.iter().copied())
            .collect();
        for rule in self.peers.ports() {
            for (a, what) in &sockets {
                rules.check(
                    !(covers(a.ip(), rule.ip) && rule.overlaps(a.port(), a.port())),
                    "peers.allow",
                    || format!("{rule} admits turnd's own {what} {a}: a port entry never may"),
                );
            }
            let own = sockets.iter().any(|(a, _)| covers(a.ip(), rule.ip)) || relay_ips.contains(&rule.ip);
            rules.check(!(own && rule.overlaps(r.min_port, r.max_port)), "peers.allow", || {
                format!(
                    "{rule} overlaps the relay port range {}-{} on an address of turnd's: a port entry never may",
                    r.min_port, r.max_port
                )
            });
        }
    }
}

/// `https://host[:port]` or `http://…`, nothing after the authority.
fn valid_origin(o: &str) -> bool {
    let Some(rest) = o.strip_prefix("https://").or_else(|| o.strip_prefix("http://")) else {
        return false;
    };
    let rest = rest.trim_end_matches('/');
    !rest.is_empty() && !rest.contains(['/', ' ', '?', '#'])
}
