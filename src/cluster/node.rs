//! The fleet at run time: this node's live [`Status`], the poller that asks
//! the siblings for theirs (plain blocking HTTP on the blocking pool, each
//! with `poll-timeout`), and the choices the page and the relay take from
//! the [`Roster`].

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng;

use super::{AlternateAddrs, Health, NodeUrl, Pick, Roster, Status};
use crate::config::ListenTransport;
use crate::lifecycle::Tasks;
use crate::net::{Shared, Workers};
use crate::secret::Secret;
use crate::serve::Endpoints;

/// A node of the fleet.
pub struct Cluster {
    roster: Mutex<Roster>,
    token: Secret,
    nodes: Vec<NodeUrl>,
    interval: Duration,
    timeout: Duration,
    shared: Arc<Shared>,
    workers: Arc<Workers>,
    bps: AtomicU64,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

/// What a node needs to join the fleet.
pub struct ClusterSpec {
    pub cfg: crate::config::Cluster,
    pub token: Secret,
    /// This node's name (`cluster.name`, else the public host).
    pub name: String,
    pub max_allocations: u32,
    /// Where clients reach this node, and the host in its URLs.
    pub endpoints: Endpoints,
    pub public_host: String,
    /// The public addresses of this node (`relay.external-ip`, else
    /// `public-host` when it is an address, else the listeners' or the
    /// host's), for ALTERNATE-SERVER answers that send clients here.
    pub public_ips: Vec<IpAddr>,
    pub shared: Arc<Shared>,
    pub workers: Arc<Workers>,
}

/// Where clients of each transport reach a node whose listeners are
/// `endpoints`, at `ips` (one per family): a listener on a wildcard or on
/// one address of a family is reached at that family's public address.
pub fn alternate_addrs(endpoints: &Endpoints, ips: &[IpAddr]) -> AlternateAddrs {
    let public = |l: &SocketAddr| {
        ips.iter()
            .find(|ip| ip.is_ipv4() == l.is_ipv4())
            .map(|ip| SocketAddr::new(*ip, l.port()))
    };
    let collect = |ls: &mut dyn Iterator<Item = &SocketAddr>| {
        let mut out: Vec<SocketAddr> = Vec::new();
        for a in ls.filter_map(public) {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    };
    let streams = |kinds: &'static [ListenTransport]| {
        endpoints
            .streams
            .iter()
            .filter(move |(_, k)| kinds.contains(k))
            .map(|(a, _)| a)
    };
    AlternateAddrs {
        udp: collect(&mut endpoints.udp.iter()),
        // An auto listener takes plain TURN over TCP too.
        tcp: collect(&mut streams(&[ListenTransport::Tcp]).chain(streams(&[ListenTransport::Auto]))),
        tls: collect(&mut streams(&[ListenTransport::Tls, ListenTransport::Auto])),
    }
}

impl Cluster {
    pub fn new(spec: ClusterSpec) -> Arc<Self> {
        let (stun, turn) = spec.endpoints.urls(&spec.public_host);
        let id: u128 = rand::rng().random();
        let me = Status {
            id: format!("{id:032x}"),
            name: spec.name,
            draining: false,
            allocations: 0,
            max_allocations: spec.max_allocations,
            bps: 0,
            stun,
            turn,
            alternate: alternate_addrs(&spec.endpoints, &spec.public_ips),
        };
        let nodes = spec.cfg.nodes.iter().filter_map(|n| NodeUrl::parse(n).ok()).collect();
        let (interval, timeout) = (spec.cfg.poll_interval, spec.cfg.poll_timeout);
        Arc::new(Self {
            roster: Mutex::new(Roster::new(me, interval, timeout, Instant::now())),
            token: spec.token,
            nodes,
            interval,
            timeout,
            shared: spec.shared,
            workers: spec.workers,
            bps: AtomicU64::new(0),
        })
    }

    fn roster(&self) -> MutexGuard<'_, Roster> {
        self.roster.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This node's status now (what `/api/cluster` answers).
    pub fn status(&self) -> Status {
        let mut me = self.roster().me().clone();
        me.draining = self.shared.is_draining();
        me.allocations = self.shared.lock().total;
        me.bps = self.bps.load(Ordering::Relaxed);
        me
    }

    /// This node's name.
    pub fn name(&self) -> String {
        self.roster().me().name.clone()
    }

    /// Where `/api/ice` sends a client (of `room`, when it names one).
    pub fn choose(&self, room: Option<&str>) -> Pick {
        let me = self.status();
        let mut r = self.roster();
        r.set_me(me);
        r.choose(room, Instant::now())
    }

    /// Siblings by health, for `/metrics`.
    pub fn health(&self) -> Health {
        self.roster().health(Instant::now())
    }

    /// Whether `token` is the fleet's.
    pub fn token_ok(&self, token: &str) -> bool {
        self.token.matches(token)
    }

    /// Starts polling the siblings, until `tasks` stop.
    pub fn start(self: &Arc<Self>, tasks: &Tasks) {
        let me = self.clone();
        tasks.spawn(async move { me.run().await });
    }

    fn relayed_bytes(&self) -> u64 {
        let s = self.workers.totals().stats;
        s.to_peer.iter().chain(&s.to_client).map(|c| c.bytes).sum()
    }

    async fn run(self: Arc<Self>) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(self.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = (self.relayed_bytes(), Instant::now());
        tracing::info!(nodes = self.nodes.len(), interval = ?self.interval, "fleet: polling siblings");
        loop {
            tick.tick().await;
            let now = (self.relayed_bytes(), Instant::now());
            let secs = now.1.saturating_duration_since(last.1).as_secs_f64();
            if secs > 0.0 {
                let bits = now.0.saturating_sub(last.0).saturating_mul(8);
                self.bps.store((bits as f64 / secs) as u64, Ordering::Relaxed);
            }
            last = now;
            let (targets, complete) = self.targets().await;
            let mut asks = Vec::new();
            for (order, url) in targets.iter().enumerate() {
                let (agent, url, token) = (agent.clone(), url.clone(), self.token.clone());
                asks.push(tokio::task::spawn_blocking(move || {
                    let answer = fetch(&agent, &url, &token);
                    (order, url, answer)
                }));
            }
            let mut answers = Vec::new();
            for a in asks {
                if let Ok(a) = a.await {
                    answers.push(a);
                }
            }
            let me = self.status();
            let mut r = self.roster();
            let at = Instant::now();
            for (order, url, answer) in answers {
                r.record(&url, order, answer, at);
            }
            if complete {
                r.retain(&targets);
            }
            r.set_me(me);
            self.shared.set_alternates(r.alternates(at));
        }
    }

    /// The status URLs to ask this round: one per node, or one per address
    /// of a plain-HTTP node given by name. Whether every name resolved.
    async fn targets(&self) -> (Vec<String>, bool) {
        let mut out = Vec::new();
        let mut complete = true;
        for n in &self.nodes {
            if n.https || n.host.parse::<IpAddr>().is_ok() {
                out.push(n.status_url(None));
                continue;
            }
            match tokio::net::lookup_host((n.host.as_str(), n.port)).await {
                Ok(addrs) => {
                    let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                    ips.sort();
                    ips.dedup();
                    out.extend(ips.into_iter().map(|ip| n.status_url(Some(ip))));
                }
                Err(e) => {
                    tracing::debug!(host = %n.host, error = %e, "fleet: cannot resolve a node name");
                    complete = false;
                }
            }
        }
        (out, complete)
    }
}

/// One sibling's status, or why not.
fn fetch(agent: &ureq::Agent, url: &str, token: &Secret) -> Result<Status, String> {
    let mut resp = agent
        .get(url)
        .header("Authorization", &format!("Bearer {}", token.expose()))
        .call()
        .map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        return Err(format!("answered {}", resp.status()));
    }
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&body).map_err(|e| format!("not a turnd status: {e}"))
}
