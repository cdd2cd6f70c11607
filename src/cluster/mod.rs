//! A fleet of turnd nodes (`[cluster]`). Nodes share nothing but their
//! secrets: credentials minted by one are accepted by all. Each node asks
//! its siblings for their [`Status`] every `poll-interval` and keeps what
//! it heard in a [`Roster`], which decides, without I/O:
//!
//! - which node `/api/ice` sends a client to: the healthy node (itself or a
//!   sibling) with the least load, load being allocations plus credentials
//!   handed out for it in the last few seconds (they become allocations
//!   before the next status shows them), relative to the node's
//!   `max-allocations`; the participants of one room go to the same node
//!   (one relay hop between them) while it stays healthy;
//! - where a draining node sends new Allocates (300 ALTERNATE-SERVER): the
//!   least-loaded live sibling with a listener of the client's transport
//!   and family.
//!
//! A sibling is healthy while its last answer came within `3 × interval +
//! timeout`, the last attempt did not fail, and it is not draining. No
//! consensus, no shared store: siblings are hints, and a node that reaches
//! none of them serves on its own. [`node`] runs the polling.

pub mod node;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::net::pool::Alternates;

/// What a node tells its siblings (`GET /api/cluster`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Random per process: how a node recognises itself behind a name that
    /// resolves to every node.
    pub id: String,
    pub name: String,
    pub draining: bool,
    pub allocations: u32,
    pub max_allocations: u32,
    /// Relayed bits per second, both directions, over the last interval.
    pub bps: u64,
    /// The `stun:` and `turn:`/`turns:` URLs clients sent here are given.
    pub stun: Vec<String>,
    pub turn: Vec<String>,
    /// Where a draining sibling may send clients of each transport.
    pub alternate: AlternateAddrs,
}

/// A node's listeners by transport, with addresses clients reach (public
/// IPs), for ALTERNATE-SERVER.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlternateAddrs {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
}

impl AlternateAddrs {
    fn by_transport(&self) -> [&[SocketAddr]; 3] {
        [&self.udp, &self.tcp, &self.tls]
    }
}

/// A sibling's base URL, `http://host:port` or `https://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUrl {
    pub https: bool,
    /// Host name or address (an IPv6 address without brackets).
    pub host: String,
    pub port: u16,
}

impl NodeUrl {
    /// Parses `http[s]://host[:port][/]`; no path, no query, no user.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (https, rest) = if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else {
            return Err("must start with http:// or https://".into());
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) || rest.contains(char::is_whitespace) {
            return Err("must be a scheme, a host and an optional port, nothing else".into());
        }
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("an IPv6 address needs its closing ]")?;
            h.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("{h} is not an IPv6 address"))?;
            match after.strip_prefix(':') {
                Some(p) => (h, p),
                None if after.is_empty() => (h, ""),
                None => return Err("unexpected text after the IPv6 address".into()),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, p),
                None => (rest, ""),
            }
        };
        let port = match port {
            "" => default_port,
            p => p.parse().ok().filter(|&p| p != 0).ok_or(format!("bad port {p:?}"))?,
        };
        if host.is_empty() {
            return Err("the host is missing".into());
        }
        Ok(Self {
            https,
            host: host.to_string(),
            port,
        })
    }

    /// The URL of the status endpoint on this node, at `ip` instead of
    /// the host name when given.
    pub fn status_url(&self, ip: Option<std::net::IpAddr>) -> String {
        let scheme = if self.https { "https" } else { "http" };
        let host = match ip {
            Some(std::net::IpAddr::V6(a)) => format!("[{a}]"),
            Some(a) => a.to_string(),
            None if self.host.contains(':') => format!("[{}]", self.host),
            None => self.host.clone(),
        };
        format!("{scheme}://{host}:{}{STATUS_PATH}", self.port)
    }
}

/// Where a node answers with its [`Status`], behind the cluster token.
pub const STATUS_PATH: &str = "/api/cluster";

/// Which node: this one or a sibling, by the URL it is polled at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NodeKey {
    Me,
    Sibling(String),
}

/// Where `/api/ice` sends a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Pick {
    Me,
    Sibling {
        name: String,
        stun: Vec<String>,
        turn: Vec<String>,
    },
}

/// What this node knows of a sibling.
#[derive(Debug, Clone)]
struct Sibling {
    /// The last status it sent.
    status: Option<Status>,
    /// When that status came.
    ok_at: Option<Instant>,
    /// Why the last attempt failed (cleared by an answer).
    error: Option<String>,
    /// Its place in the configured (and resolved) list: ties go to the
    /// first.
    order: usize,
}

/// Credentials handed out for one node in the last [`RECENT_SECS`]
/// seconds, in one-second buckets.
#[derive(Debug, Clone, Default)]
struct Recent {
    buckets: [(u64, u32); RECENT_SECS as usize],
}

/// How long a handed-out credential counts as load before its allocation
/// shows in the node's status.
const RECENT_SECS: u64 = 10;
/// Rooms remembered at most; beyond, those unused for longest go.
const MAX_ROOMS: usize = 10_000;
/// A room's node is forgotten after this long without a new participant.
const ROOM_TTL_SECS: u64 = 3600;

impl Recent {
    fn add(&mut self, sec: u64) {
        let b = &mut self.buckets[(sec % RECENT_SECS) as usize];
        if b.0 != sec {
            *b = (sec, 0);
        }
        b.1 = b.1.saturating_add(1);
    }

    fn count(&self, sec: u64) -> u32 {
        self.buckets
            .iter()
            .filter(|(s, _)| *s + RECENT_SECS > sec)
            .map(|(_, n)| *n)
            .sum()
    }
}

/// Health counts for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    pub healthy: u32,
    pub draining: u32,
    pub unreachable: u32,
}

/// What this node knows of the fleet, and the decisions made from it. Pure:
/// every call takes the time.
#[derive(Debug)]
pub struct Roster {
    me: Status,
    siblings: HashMap<String, Sibling>,
    recent: HashMap<NodeKey, Recent>,
    rooms: HashMap<String, (NodeKey, u64)>,
    stale_after: Duration,
    epoch: Instant,
}

impl Roster {
    /// A roster for a node whose status is `me`, polling every `interval`
    /// with `timeout`, started at `now`.
    pub fn new(me: Status, interval: Duration, timeout: Duration, now: Instant) -> Self {
        Self {
            me,
            siblings: HashMap::new(),
            recent: HashMap::new(),
            rooms: HashMap::new(),
            stale_after: interval * 3 + timeout,
            epoch: now,
        }
    }

    /// This node's status as last set.
    pub fn me(&self) -> &Status {
        &self.me
    }

    /// Call whenever this node's own load or draining changes (each poll
    /// round, and before a choice).
    pub fn set_me(&mut self, me: Status) {
        self.me = me;
    }

    /// Call with what polling the sibling at `url` gave at `now`; `order`
    /// is its place in the list of nodes.
    pub fn record(&mut self, url: &str, order: usize, answer: Result<Status, String>, now: Instant) {
        let s = self.siblings.entry(url.to_string()).or_insert(Sibling {
            status: None,
            ok_at: None,
            error: None,
            order,
        });
        s.order = order;
        match answer {
            Ok(status) => {
                if status.id == self.me.id {
                    if s.status.is_none() {
                        tracing::debug!(%url, "fleet: this node is listed among the nodes (left out)");
                    }
                } else if s.error.is_some() || s.status.is_none() {
                    tracing::info!(node = %status.name, %url, draining = status.draining, "sibling reachable");
                }
                s.status = Some(status);
                s.ok_at = Some(now);
                s.error = None;
            }
            Err(e) => {
                if s.error.is_none() {
                    tracing::warn!(%url, error = %e, "sibling unreachable: no clients sent there until it answers");
                }
                s.error = Some(e);
            }
        }
    }

    /// Forgets siblings not in `urls` (a name that resolved to other
    /// addresses this time).
    pub fn retain(&mut self, urls: &[String]) {
        self.siblings.retain(|u, _| urls.contains(u));
    }

    fn is_self(&self, s: &Sibling) -> bool {
        s.status.as_ref().is_some_and(|st| st.id == self.me.id)
    }

    /// Whether `s` answered its last poll, recently enough at `now`.
    fn fresh(&self, s: &Sibling, now: Instant) -> bool {
        s.error.is_none()
            && s.ok_at
                .is_some_and(|t| now.saturating_duration_since(t) <= self.stale_after)
    }

    /// Whether clients may be sent to `s` at `now`.
    fn usable(&self, s: &Sibling, now: Instant) -> bool {
        self.fresh(s, now) && !self.is_self(s) && s.status.as_ref().is_some_and(|st| !st.draining)
    }

    fn sec(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    /// Load relative to capacity: allocations plus recent handouts.
    fn load(&self, key: &NodeKey, st: &Status, sec: u64) -> f64 {
        let recent = self.recent.get(key).map_or(0, |r| r.count(sec));
        f64::from(st.allocations.saturating_add(recent)) / f64::from(st.max_allocations.max(1))
    }

    /// The nodes clients may be sent to, with their load and tie order:
    /// this one unless it drains, and every usable sibling.
    fn candidates(&self, now: Instant) -> Vec<(NodeKey, f64, usize)> {
        let sec = self.sec(now);
        let mut out = Vec::new();
        if !self.me.draining {
            out.push((NodeKey::Me, self.load(&NodeKey::Me, &self.me, sec), 0));
        }
        for (url, s) in &self.siblings {
            if let (true, Some(st)) = (self.usable(s, now), &s.status) {
                let key = NodeKey::Sibling(url.clone());
                let load = self.load(&key, st, sec);
                out.push((key, load, s.order + 1));
            }
        }
        out
    }

    fn is_candidate(&self, key: &NodeKey, now: Instant) -> bool {
        match key {
            NodeKey::Me => !self.me.draining,
            NodeKey::Sibling(u) => self.siblings.get(u).is_some_and(|s| self.usable(s, now)),
        }
    }

    /// Where `/api/ice` sends a client at `now`: the room's node while it
    /// is usable, else the least-loaded usable node (this one on a tie,
    /// else the first in the list); this node when nothing else is known.
    /// The choice counts as load until the next statuses show it.
    pub fn choose(&mut self, room: Option<&str>, now: Instant) -> Pick {
        let sec = self.sec(now);
        let kept = room
            .and_then(|r| self.rooms.get(r))
            .map(|(k, _)| k.clone())
            .filter(|k| self.is_candidate(k, now));
        let key = kept.unwrap_or_else(|| {
            self.candidates(now)
                .into_iter()
                .min_by(|a, b| a.1.total_cmp(&b.1).then(a.2.cmp(&b.2)))
                .map_or(NodeKey::Me, |c| c.0)
        });
        self.recent.entry(key.clone()).or_default().add(sec);
        if let Some(r) = room {
            if self.rooms.len() >= MAX_ROOMS && !self.rooms.contains_key(r) {
                self.rooms.retain(|_, (_, used)| *used + ROOM_TTL_SECS > sec);
                if self.rooms.len() >= MAX_ROOMS {
                    self.rooms.clear();
                }
            }
            self.rooms.insert(r.to_string(), (key.clone(), sec));
        }
        match &key {
            NodeKey::Me => Pick::Me,
            NodeKey::Sibling(u) => match self.siblings.get(u).and_then(|s| s.status.as_ref()) {
                Some(st) => Pick::Sibling {
                    name: st.name.clone(),
                    stun: st.stun.clone(),
                    turn: st.turn.clone(),
                },
                None => Pick::Me,
            },
        }
    }

    /// Where this node, draining, sends new Allocates: for each transport
    /// and family, the least-loaded usable sibling with such a listener.
    pub fn alternates(&self, now: Instant) -> Alternates {
        let sec = self.sec(now);
        let mut out = Alternates::default();
        let mut best: [[f64; 2]; 3] = [[f64::INFINITY; 2]; 3];
        let mut live: Vec<(&String, &Sibling)> = self.siblings.iter().filter(|(_, s)| self.usable(s, now)).collect();
        live.sort_by_key(|(_, s)| s.order);
        for (url, s) in live {
            let Some(st) = &s.status else { continue };
            let load = self.load(&NodeKey::Sibling(url.clone()), st, sec);
            for (t, addrs) in st.alternate.by_transport().into_iter().enumerate() {
                for a in addrs {
                    let f = usize::from(a.is_ipv6());
                    if out[t][f].is_none() || load < best[t][f] {
                        out[t][f] = Some(*a);
                        best[t][f] = load;
                    }
                }
            }
        }
        out
    }

    /// How many siblings are healthy, draining and unreachable at `now`
    /// (this node, found behind a shared name, is not counted).
    pub fn health(&self, now: Instant) -> Health {
        let mut h = Health::default();
        for s in self.siblings.values().filter(|s| !self.is_self(s)) {
            if self.usable(s, now) {
                h.healthy += 1;
            } else if self.fresh(s, now) && s.status.as_ref().is_some_and(|st| st.draining) {
                h.draining += 1;
            } else {
                h.unreachable += 1;
            }
        }
        h
    }
}

#[cfg(test)]
mod tests;
