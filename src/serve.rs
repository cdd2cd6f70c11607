//! Startup: from a [`Config`] to running workers, and the things printed for
//! the operator (generated secret, ready-to-paste `iceServers`).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rand::Rng;

use crate::auth;
use crate::config::{Config, ListenTransport};
use crate::http;
use crate::lifecycle::{Lifecycle, Tasks};
use crate::net::Shared;
use crate::net::{self, Relay, RelaySpec, StreamKind, StreamListener};
use crate::secret::Secret;
use crate::tls::{self, Certs};

/// Where generated state lives: `data-dir`, else systemd's
/// `$STATE_DIRECTORY`, else `$XDG_STATE_HOME/turnd`, else
/// `~/.local/state/turnd`, else `./turnd-data`.
pub fn data_dir(cfg: &Config) -> PathBuf {
    if let Some(d) = &cfg.data_dir {
        return d.clone();
    }
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = env("STATE_DIRECTORY") {
        return d;
    }
    if let Some(d) = env("XDG_STATE_HOME") {
        return d.join("turnd");
    }
    if let Some(h) = env("HOME") {
        return h.join(".local/state/turnd");
    }
    PathBuf::from("turnd-data")
}

/// The path of the generated secret inside `dir`.
pub fn secret_path(dir: &Path) -> PathBuf {
    dir.join("secret")
}

/// Reads the generated secret, creating it (mode 0600) when missing. Returns
/// whether it was created now.
pub fn load_or_create_secret(dir: &Path) -> anyhow::Result<(Secret, bool)> {
    let (s, created) = load_or_create(&secret_path(dir), || {
        let bytes: [u8; 32] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    })?;
    Ok((Secret::new(s), created))
}

/// The trimmed contents of `path`, written first (mode 0600, directory
/// created) with `make()` when the file does not exist. Returns whether it
/// was created now.
pub fn load_or_create(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<(String, bool)> {
    if let Ok(s) = std::fs::read_to_string(path) {
        let s = s.trim();
        anyhow::ensure!(
            !s.is_empty(),
            "{} is empty; delete it to generate a new one",
            path.display()
        );
        return Ok((s.to_string(), false));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create data dir {}", dir.display()))?;
    }
    let value = make();
    crate::secret::write_private(path, &format!("{value}\n"))?;
    Ok((value, true))
}

/// The secrets to run with, and where the generated one lives.
pub struct Secrets {
    pub secrets: Vec<Secret>,
    /// The generated secret's file, when that is the one in use.
    pub generated: Option<PathBuf>,
    /// Whether it was generated just now.
    pub created: bool,
}

/// The secrets to run with: the configured ones, else the generated one,
/// made now if it does not exist yet (unless static users are configured
/// and the call page is off).
pub fn resolve_secrets(cfg: &Config, file: &str) -> anyhow::Result<Secrets> {
    let secrets = cfg.secrets(file)?;
    // Static users alone need no secret, unless the page is on: it mints
    // REST credentials.
    if !secrets.is_empty() || (!cfg.auth.users.is_empty() && !cfg.page_enabled()) {
        return Ok(Secrets {
            secrets,
            generated: None,
            created: false,
        });
    }
    let dir = data_dir(cfg);
    let path = secret_path(&dir);
    let (secret, created) = load_or_create_secret(&dir)?;
    if created {
        tracing::info!(path = %path.display(), "generated a shared secret");
    }
    Ok(Secrets {
        secrets: vec![secret],
        generated: Some(path),
        created,
    })
}

/// First address of each family on a non-loopback, non-link-local interface.
pub fn host_addresses() -> (Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>) {
    let mut v4 = None;
    let mut v6 = None;
    for i in if_addrs::get_if_addrs().unwrap_or_default() {
        match i.ip() {
            IpAddr::V4(a) if !a.is_loopback() && !a.is_link_local() && !a.is_unspecified() => {
                v4.get_or_insert(a);
            }
            IpAddr::V6(a) if !a.is_loopback() && !a.is_unspecified() && (a.segments()[0] & 0xffc0) != 0xfe80 => {
                v6.get_or_insert(a);
            }
            _ => {}
        }
    }
    (v4, v6)
}

/// The host name put in printed URLs: `public-host`, else an external IP,
/// else the listeners' address when they all name one, else the host's first
/// IPv4 address.
pub fn public_host(cfg: &Config) -> String {
    if let Some(h) = &cfg.public_host {
        return h.clone();
    }
    if let Some(ip) = cfg
        .relay
        .external_ip
        .iter()
        .find(|i| i.is_ipv4())
        .or(cfg.relay.external_ip.first())
    {
        return url_host(*ip);
    }
    // Listeners on one specific address: that address is what works.
    let (listeners, _) = cfg.listeners();
    let specific: Vec<IpAddr> = listeners
        .iter()
        .map(|(a, _)| a.ip())
        .filter(|ip| !ip.is_unspecified())
        .collect();
    if let Some(ip) = specific.iter().find(|i| i.is_ipv4()).or(specific.first()) {
        if specific.len() == listeners.len() {
            return url_host(*ip);
        }
    }
    match host_addresses() {
        (Some(v4), _) => v4.to_string(),
        _ => "127.0.0.1".into(),
    }
}

/// A host as written in URLs without the brackets of an IPv6 address: what
/// parses as an address, or goes into a certificate.
pub fn bare_host(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// Where clients reach turnd, for `stun:`/`turn:`/`turns:` URLs.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    pub udp: Vec<SocketAddr>,
    /// TCP, TLS and `auto` listeners, named by [`crate::net::StreamKind::name`].
    pub streams: Vec<(SocketAddr, ListenTransport)>,
    /// A second UDP port answering STUN on the first listener's address
    /// (`stun.other-address`): the check page asks both to see whether
    /// the NAT's mapping depends on the destination.
    pub second_stun_port: Option<u16>,
}

impl Endpoints {
    /// The listeners of `cfg` as configured (port 0 stays 0).
    pub fn configured(cfg: &Config) -> Self {
        let mut e = Self::default();
        for (addr, t) in cfg.listeners().0 {
            match t {
                ListenTransport::Udp => e.udp.push(addr),
                stream => e.streams.push((addr, stream)),
            }
        }
        e
    }

    /// `stun:` URLs (UDP ports) and TURN URLs: UDP, then TCP, then TLS
    /// (`tls` and `auto` listeners), one per distinct port: 0.0.0.0:3478
    /// and [::]:3478 are one `turn:host:3478` to a browser.
    pub fn urls(&self, host: &str) -> (Vec<String>, Vec<String>) {
        let ports = |kinds: &[ListenTransport]| -> BTreeSet<u16> {
            self.streams
                .iter()
                .filter(|(_, k)| kinds.contains(k))
                .map(|(a, _)| a.port())
                .collect()
        };
        let udp: BTreeSet<u16> = self.udp.iter().map(|a| a.port()).collect();
        let stun = udp.iter().map(|p| format!("stun:{host}:{p}")).collect();
        let turn = udp
            .iter()
            .map(|p| format!("turn:{host}:{p}?transport=udp"))
            .chain(
                ports(&[ListenTransport::Tcp])
                    .iter()
                    .map(|p| format!("turn:{host}:{p}?transport=tcp")),
            )
            .chain(
                ports(&[ListenTransport::Tls, ListenTransport::Auto])
                    .iter()
                    .map(|p| format!("turns:{host}:{p}?transport=tcp")),
            )
            .collect();
        (stun, turn)
    }

    /// A ready-to-paste `RTCPeerConnection` configuration with REST
    /// credentials.
    /// What the check page tries, each on its own: the STUN URLs (the
    /// first UDP port, and the second STUN port when there is one) and one
    /// TURN URL per transport (`udp`, `tcp`, `tls`; absent when no
    /// listener offers it), with one credential.
    pub fn check_json(&self, host: &str, username: &str, password: &str) -> serde_json::Value {
        let (stun, turn) = self.urls(host);
        let first = |prefix: &str| turn.iter().find(|u| u.starts_with(prefix)).cloned();
        let second = self.second_stun_port.map(|p| format!("stun:{host}:{p}"));
        serde_json::json!({
            "stun": stun.first(),
            "stun2": second,
            "turn": {
                "udp": first("turn:").filter(|u| u.ends_with("transport=udp")),
                "tcp": turn.iter().find(|u| u.starts_with("turn:") && u.ends_with("transport=tcp")),
                "tls": first("turns:"),
            },
            "username": username,
            "credential": password,
        })
    }

    pub fn ice_servers_json(&self, host: &str, username: &str, password: &str) -> serde_json::Value {
        let (stun, turn) = self.urls(host);
        ice_servers_json(&stun, &turn, username, password)
    }
}

/// `{"iceServers": [...]}` for these STUN and TURN URLs and one credential.
pub fn ice_servers_json(stun: &[String], turn: &[String], username: &str, password: &str) -> serde_json::Value {
    let mut servers = Vec::new();
    if !stun.is_empty() {
        servers.push(serde_json::json!({ "urls": stun }));
    }
    servers.push(serde_json::json!({ "urls": turn, "username": username, "credential": password }));
    serde_json::json!({ "iceServers": servers })
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A running turnd: the relay workers and, when configured, the HTTP side,
/// with the one lifecycle they all stop by.
pub struct Daemon {
    pub lifecycle: Lifecycle,
    pub relay: Relay,
    pub http: Option<http::Page>,
    /// The certificate of every TLS listener, when there is one.
    pub certs: Option<Arc<Certs>>,
    /// The configuration running now.
    pub config: Config,
    /// `/metrics` and the admin API on their own listeners, when configured.
    pub ops: Option<http::ops::Ops>,
    /// This node's view of its fleet (`[cluster]`).
    pub cluster: Option<Arc<crate::cluster::node::Cluster>>,
}

/// What a reload changed, and what it could not.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Sections that changed but only take effect after a restart.
    pub needs_restart: Vec<&'static str>,
    /// The certificate fingerprint now in use, when there are TLS listeners.
    pub fingerprint: Option<String>,
    /// Why the certificate was not reloaded (the old one stays).
    pub certificate_error: Option<String>,
}

impl Daemon {
    /// Reads `file` again and applies it without dropping anything: secrets,
    /// users, peer policy, lifetimes, quotas, `alternate-server` and the
    /// certificate. An invalid file changes nothing. Listeners, the relay
    /// port range, workers, `[http]` and `[tcp]` need a restart (named in
    /// the result). The caller applies `log-level` and `log-format`.
    pub fn reload(&mut self, file: &Path) -> anyhow::Result<Reloaded> {
        let name = file.display().to_string();
        let cfg = Config::load(file)?;
        let secrets = resolve_secrets(&cfg, &name)?.secrets;
        anyhow::ensure!(
            !(cfg.page_enabled() && secrets.is_empty()),
            "the call page needs a shared secret to mint TURN credentials"
        );
        let mut out = Reloaded::default();
        let old = &self.config;
        for (what, changed) in [
            ("listener", old.listeners() != cfg.listeners()),
            (
                "relay.min-port/max-port",
                (old.relay.min_port, old.relay.max_port) != (cfg.relay.min_port, cfg.relay.max_port),
            ),
            ("workers", old.workers != cfg.workers),
            ("log-format", old.log_format != cfg.log_format),
            ("data-dir", old.data_dir != cfg.data_dir),
            ("public-host", old.public_host != cfg.public_host),
            ("http", old.http != cfg.http),
            ("tcp", old.tcp != cfg.tcp),
            ("tls (file names)", old.tls != cfg.tls),
            ("metrics", old.metrics != cfg.metrics),
            ("admin", old.admin != cfg.admin),
            ("xdp", old.xdp != cfg.xdp),
            ("stun", old.stun != cfg.stun),
            ("cluster", old.cluster != cfg.cluster),
            ("acme", old.acme != cfg.acme),
        ] {
            if changed {
                out.needs_restart.push(what);
            }
        }
        let mut core = core_config(&cfg, secrets);
        // RFC 5780 answers name the sockets that are open: those of the
        // running configuration until a restart.
        core.discovery = old.stun_pairs();
        self.relay.set_config(Arc::new(core));
        if let Some(c) = &self.certs {
            match c.reload() {
                Ok(fp) => out.fingerprint = Some(fp),
                Err(e) => {
                    out.fingerprint = Some(c.fingerprint());
                    out.certificate_error = Some(format!("{e:#}"));
                }
            }
        }
        self.config = cfg;
        Ok(out)
    }

    /// Refuses new allocations from now on (SIGTERM); existing ones go on.
    pub fn start_draining(&self) {
        self.relay.shared.start_draining();
    }

    /// Allocations alive now, on every worker.
    pub fn allocations(&self) -> u32 {
        self.relay.shared.lock().total
    }

    /// Where clients reach the relay, as bound.
    pub fn endpoints(&self) -> Endpoints {
        // RFC 5780's extra sockets answer Binding requests; clients are
        // not sent to them.
        let extra = self.config.stun_sockets();
        let (listeners, _) = self.config.listeners();
        let configured = |a: &SocketAddr| listeners.iter().any(|(l, t)| l == a && *t == ListenTransport::Udp);
        Endpoints {
            udp: (self.relay.udp.iter())
                .filter(|a| !extra.contains(a) || configured(a))
                .copied()
                .collect(),
            second_stun_port: self.config.stun_pairs().first().map(|(_, other)| other.port()),
            streams: self.relay.streams.clone(),
        }
    }

    /// Stops every task (connections, the page, the operator endpoints),
    /// then waits for the relay workers, which the same cancellation woke.
    pub fn stop(self) {
        self.lifecycle.stop();
        self.relay.stop();
    }
}

/// What `[acme]` asks for, when it is on.
pub fn acme_spec(cfg: &Config) -> Option<crate::acme::AcmeSpec> {
    let a = &cfg.acme;
    if !a.enabled {
        return None;
    }
    Some(crate::acme::AcmeSpec {
        directory: a.directory.clone(),
        email: a.email.clone(),
        domains: cfg.acme_domains(),
        ca_file: a.ca_file.clone(),
        renew_before: a.renew_before,
        challenge: cfg.acme_challenge()?,
        dir: data_dir(cfg).join("acme"),
    })
}

/// The HTTP-01 listeners and the ACME task.
fn start_acme(cfg: &Config, spec: crate::acme::AcmeSpec, certs: &Arc<Certs>, tasks: &Tasks) -> anyhow::Result<()> {
    let tokens = Arc::new(crate::acme::Tokens::default());
    for addr in &cfg.acme.http_listen {
        let l = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen on http {addr} (acme.http-listen)"))?;
        l.set_nonblocking(true)?;
        let l = {
            let _rt = tasks.handle().enter();
            tokio::net::TcpListener::from_std(l)?
        };
        let router = crate::acme::http01_router(tokens.clone());
        tracing::info!(listen = %addr, "answering ACME HTTP-01 challenges, redirecting the rest to HTTPS");
        tasks.spawn(async move {
            let _ = axum::serve(l, router).await;
        });
    }
    crate::acme::start(spec, certs.clone(), tokens, tasks);
    Ok(())
}

/// The certificate for `cfg`'s TLS listeners: `[tls]` files, else the one
/// ACME issued (self-signed until then), else the self-signed one in the
/// data dir, made for the public host.
pub fn certificate(cfg: &Config) -> anyhow::Result<Arc<Certs>> {
    if let Some(spec) = acme_spec(cfg) {
        let mut names = spec.domains.clone();
        names.push("localhost".into());
        return Certs::acme(&spec.cert_path(), &spec.key_path(), &data_dir(cfg), &names);
    }
    match (&cfg.tls.cert_file, &cfg.tls.key_file) {
        (Some(c), Some(k)) => Certs::load(c, k),
        _ => {
            let host = public_host(cfg);
            let mut names = vec![bare_host(&host).to_string(), "localhost".to_string()];
            names.dedup();
            Certs::self_signed(&data_dir(cfg), &names)
        }
    }
}

/// Caps glibc at two malloc arenas (unless `MALLOC_ARENA_MAX` says
/// otherwise). With one arena per thread (glibc's default, up to 8 per
/// core), memory freed after a wave of allocations stays scattered over
/// the arenas and RSS after each wave creeps up: `bin/soak` measured
/// 16.5 MB after the first cycle of 10 000 allocations and 19.5–25.7 MB
/// after later ones, against 16.5–17.1 MB over 100 cycles with two arenas.
/// The relay's data path does not allocate, so the arenas see only
/// control-path traffic. Call before any thread is started.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes an allocator setting; no thread
        // other than this one exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Threads of the async runtime: TURN over TCP and TLS, the page and the
/// operator endpoints share them (the UDP relay has its own workers).
const ASYNC_THREADS: usize = 2;

/// Starts the relay for `cfg` with the given secrets (see
/// [`resolve_secrets`]), then the HTTP side unless `[http]` has no listener.
/// The page mints credentials with the first secret.
pub fn start(cfg: &Config, secrets: Vec<Secret>) -> anyhow::Result<Daemon> {
    let page_secret = match (cfg.page_enabled(), secrets.first()) {
        (false, _) => None,
        (true, Some(s)) => Some(s.clone()),
        (true, None) => anyhow::bail!("the call page needs a shared secret to mint TURN credentials"),
    };
    let certs = cfg.needs_certificate().then(|| certificate(cfg)).transpose()?;
    // HTTP arriving on `auto` listeners goes to the page.
    let (handoff, handed) = match page_secret {
        Some(_) => {
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let lifecycle = Lifecycle::start(ASYNC_THREADS)?;
    let tasks = lifecycle.tasks().clone();
    let relay = start_relay(cfg, secrets, certs.as_ref(), handoff, &tasks)?;
    let mut daemon = Daemon {
        lifecycle,
        relay,
        http: None,
        certs,
        config: cfg.clone(),
        ops: None,
        cluster: None,
    };
    if !cfg.cluster.nodes.is_empty() {
        match join_cluster(cfg, &daemon) {
            Ok(c) => {
                c.start(&tasks);
                daemon.cluster = Some(c);
            }
            Err(e) => {
                daemon.stop();
                return Err(e);
            }
        }
    }
    let metrics = Arc::new(crate::metrics::Source {
        workers: daemon.relay.workers.clone(),
        shared: daemon.relay.shared.clone(),
        gate: daemon.relay.gate.clone(),
        cluster: daemon.cluster.clone(),
        certs: daemon.certs.clone(),
    });
    if let (Some(spec), Some(certs)) = (acme_spec(cfg), &daemon.certs) {
        if let Err(e) = start_acme(cfg, spec, certs, &tasks) {
            daemon.stop();
            return Err(e);
        }
    }
    if !cfg.metrics.listen.is_empty() || !cfg.admin.listen.is_empty() {
        let spec = http::ops::OpsSpec {
            metrics: cfg.metrics.listen.clone(),
            metrics_token: cfg.metrics.token.clone(),
            admin: cfg.admin.listen.clone(),
            admin_token: cfg.admin.token()?,
            source: metrics.clone(),
            workers: daemon.relay.workers.clone(),
            http: cfg.http.clone(),
        };
        match http::ops::start(spec, &tasks) {
            Ok(o) => daemon.ops = Some(o),
            Err(e) => {
                daemon.stop();
                return Err(e);
            }
        }
    }
    if let (Some(secret), Some(handed)) = (page_secret, handed) {
        let spec = http::PageSpec {
            cfg: cfg.http.clone(),
            data_dir: data_dir(cfg),
            public_host: public_host(cfg),
            endpoints: daemon.endpoints(),
            certs: daemon.certs.clone(),
            handed,
            metrics: cfg
                .metrics
                .on_http
                .then(|| (metrics.clone(), cfg.metrics.token.clone())),
            secret,
            separator: cfg.auth.rest_separator,
            workers: daemon.relay.workers.clone(),
            cluster: daemon.cluster.clone(),
        };
        match http::start(spec, &tasks) {
            Ok(h) => daemon.http = Some(h),
            Err(e) => {
                daemon.stop();
                return Err(e);
            }
        }
    }
    Ok(daemon)
}

/// This node's place in the fleet `cfg.cluster` names (polling starts
/// with [`crate::cluster::node::Cluster::start`]).
fn join_cluster(cfg: &Config, daemon: &Daemon) -> anyhow::Result<Arc<crate::cluster::node::Cluster>> {
    let token = cfg
        .cluster
        .token()?
        .context("a fleet needs cluster.token or cluster.token-file")?;
    let host = public_host(cfg);
    let endpoints = daemon.endpoints();
    Ok(crate::cluster::node::Cluster::new(crate::cluster::node::ClusterSpec {
        cfg: cfg.cluster.clone(),
        token,
        name: cfg.cluster.name.clone().unwrap_or_else(|| host.clone()),
        max_allocations: cfg.relay.max_allocations,
        public_ips: public_ips(cfg, &endpoints, &host),
        endpoints,
        public_host: host,
        shared: daemon.relay.shared.clone(),
        workers: daemon.relay.workers.clone(),
    }))
}

/// The addresses clients reach this node at, one per family at most:
/// `relay.external-ip`, else `public-host` when it is an address, else
/// the listeners' specific addresses, else the host's own.
fn public_ips(cfg: &Config, endpoints: &Endpoints, host: &str) -> Vec<IpAddr> {
    let listeners = endpoints.udp.iter().chain(endpoints.streams.iter().map(|(a, _)| a));
    let (v4, v6) = host_addresses();
    let candidates = cfg
        .relay
        .external_ip
        .iter()
        .copied()
        .chain(bare_host(host).parse::<IpAddr>().ok())
        .chain(listeners.map(|a| a.ip()).filter(|ip| !ip.is_unspecified()))
        .chain(v4.map(IpAddr::V4))
        .chain(v6.map(IpAddr::V6));
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in candidates {
        if !out.iter().any(|o| o.is_ipv4() == ip.is_ipv4()) {
            out.push(ip);
        }
    }
    out
}

/// The core's configuration for `cfg` with `secrets`, with this host's
/// addresses as relay fallbacks.
fn core_config(cfg: &Config, secrets: Vec<Secret>) -> crate::proto::CoreConfig {
    let mut core = cfg.core(cfg.credentials(secrets));
    let (v4, v6) = host_addresses();
    core.fallback_ipv4 = v4;
    core.fallback_ipv6 = v6;
    let interfaces: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .iter()
        .map(|i| i.ip())
        .collect();
    let relays = [
        core.relay_ipv4.map(IpAddr::V4),
        core.relay_ipv6.map(IpAddr::V6),
        v4.map(IpAddr::V4),
        v6.map(IpAddr::V6),
        core.external_ipv4.map(IpAddr::V4),
        core.external_ipv6.map(IpAddr::V6),
    ];
    core.own = crate::proto::policy::OwnAddresses::new(
        cfg.own_addresses().into_iter().chain(relays.into_iter().flatten()),
        &interfaces,
    );
    core
}

/// Starts the relay workers and the TURN side of stream listeners; HTTP on
/// `auto` listeners goes to `http` (closed without it).
pub fn start_relay(
    cfg: &Config,
    secrets: Vec<Secret>,
    certs: Option<&Arc<Certs>>,
    http: Option<tokio::sync::mpsc::Sender<net::stream::HttpConn>>,
    tasks: &Tasks,
) -> anyhow::Result<Relay> {
    let core = core_config(cfg, secrets);
    let (mut listeners, defaults) = cfg.listeners();
    if !net::ipv6_available() {
        listeners.retain(|(a, t)| {
            let skip = a.ip() == IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED);
            if skip && !defaults {
                tracing::warn!(listen = %a, transport = ?t, "no IPv6 on this host: listener skipped");
            }
            !skip
        });
    }
    let tls_config = |alpn: &[&[u8]]| {
        certs
            .map(|c| c.server_config(alpn))
            .context("a TLS listener needs a certificate")
    };
    let mut udp = Vec::new();
    let mut streams = Vec::new();
    for (addr, t) in listeners {
        let kind = match t {
            ListenTransport::Udp => {
                udp.push(addr);
                continue;
            }
            ListenTransport::Tcp => StreamKind::Tcp,
            ListenTransport::Tls => StreamKind::Tls(tls_config(&[tls::ALPN_TURN])?),
            ListenTransport::Auto => StreamKind::Auto {
                tls: tls_config(&[tls::ALPN_HTTP, tls::ALPN_TURN])?,
                http: http.clone(),
            },
        };
        streams.push(StreamListener { addr, kind });
    }
    // RFC 5780: the other combinations of the paired addresses and ports.
    for addr in cfg.stun_sockets() {
        if !udp.contains(&addr) {
            udp.push(addr);
        }
    }
    let workers = match cfg.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let t = &cfg.tcp;
    let mut rng = rand::rng();
    let spec = RelaySpec {
        udp,
        streams,
        limits: net::tcp::Limits {
            max_connections: t.max_connections,
            max_per_address: t.max_connections_per_address,
            handshake_timeout: t.handshake_timeout,
            idle_timeout: t.idle_timeout,
            frame_timeout: t.frame_timeout,
            unallocated_timeout: t.unallocated_timeout,
        },
        workers,
        core: Arc::new(core),
        shared: Arc::new(Shared::new(cfg.relay.min_port, cfg.relay.max_port)),
        nonce_key: rng.random(),
        seed: rng.random(),
        xdp: cfg.xdp.clone(),
    };
    net::start(spec, tasks)
}

/// One credential for printing, valid for `ttl`.
pub fn mint(cfg: &Config, secret: &Secret, user: &str, ttl: Duration) -> (String, String) {
    auth::rest_credentials(secret.as_bytes(), Some(user), ttl, unix_now(), cfg.auth.rest_separator)
}
