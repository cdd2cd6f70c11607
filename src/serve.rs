//! Startup: from a [`Config`] to running workers, and the things printed for
//! the operator (generated secret, ready-to-paste `iceServers`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rand::Rng;

use crate::auth;
use crate::config::Config;
use crate::http;
use crate::net::{self, Running, Spec};
use crate::proto::Shared;

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
pub fn load_or_create_secret(dir: &Path) -> anyhow::Result<(Vec<u8>, bool)> {
    let (s, created) = load_or_create(&secret_path(dir), || {
        let bytes: [u8; 32] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    })?;
    Ok((s.into_bytes(), created))
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
    write_private(path, &format!("{value}\n"))?;
    Ok((value, true))
}

/// Creates `path` with mode 0600 and writes `contents`; fails if it exists.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The secrets to run with: the configured ones, else the generated one
/// (unless static users are configured and the call page is off).
pub fn resolve_secrets(cfg: &Config, file: &str, generate: bool) -> anyhow::Result<(Vec<Vec<u8>>, Option<PathBuf>)> {
    let secrets = cfg.secrets(file)?;
    // Static users alone need no secret, unless the page is on: it mints
    // REST credentials.
    if !secrets.is_empty() || (!cfg.auth.users.is_empty() && !cfg.http.enabled()) {
        return Ok((secrets, None));
    }
    let dir = data_dir(cfg);
    let path = secret_path(&dir);
    if !generate {
        let s = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no secret configured (auth.static-auth-secrets or auth.static-auth-secret-files) and none generated at {}",
                path.display()
            )
        })?;
        return Ok((vec![s.trim().as_bytes().to_vec()], Some(path)));
    }
    let (secret, created) = load_or_create_secret(&dir)?;
    if created {
        tracing::info!(path = %path.display(), "generated a shared secret");
    }
    Ok((vec![secret], Some(path)))
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
        .map(|a| a.ip())
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

fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// A ready-to-paste `RTCPeerConnection` configuration with REST credentials.
pub fn ice_servers_json(host: &str, port: u16, username: &str, password: &str) -> serde_json::Value {
    serde_json::json!({
        "iceServers": [{
            "urls": [format!("stun:{host}:{port}"), format!("turn:{host}:{port}?transport=udp")],
            "username": username,
            "credential": password,
        }]
    })
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A running turnd: the relay workers and, when configured, the HTTP side.
pub struct Daemon {
    pub relay: Running,
    pub http: Option<http::Running>,
}

impl Daemon {
    /// Stops the HTTP side, then the relay.
    pub fn stop(self) {
        if let Some(h) = self.http {
            h.stop();
        }
        self.relay.stop();
    }
}

/// Starts the relay for `cfg` with the given secrets (see
/// [`resolve_secrets`]), then the HTTP side unless `[http]` has no listener.
/// The page mints credentials with the first secret.
pub fn start(cfg: &Config, secrets: Vec<Vec<u8>>) -> anyhow::Result<Daemon> {
    let page_secret = match (cfg.http.enabled(), secrets.first()) {
        (false, _) => None,
        (true, Some(s)) => Some(s.clone()),
        (true, None) => anyhow::bail!("the call page needs a shared secret to mint TURN credentials"),
    };
    let relay = start_relay(cfg, secrets)?;
    let http = match page_secret {
        None => None,
        Some(secret) => {
            let spec = http::Spec {
                cfg: cfg.http.clone(),
                data_dir: data_dir(cfg),
                public_host: public_host(cfg),
                udp: relay.udp.clone(),
                secret,
                separator: cfg.auth.rest_separator,
            };
            match http::start(spec) {
                Ok(h) => Some(h),
                Err(e) => {
                    relay.stop();
                    return Err(e);
                }
            }
        }
    };
    Ok(Daemon { relay, http })
}

/// Starts the relay workers alone.
pub fn start_relay(cfg: &Config, secrets: Vec<Vec<u8>>) -> anyhow::Result<Running> {
    let mut core = cfg.core(cfg.credentials(secrets));
    let (v4, v6) = host_addresses();
    core.fallback_ipv4 = v4;
    core.fallback_ipv6 = v6;
    let (mut udp, defaults) = cfg.listeners();
    if defaults && !net::ipv6_available() {
        udp.retain(|a| a.is_ipv4());
    }
    let workers = match cfg.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut rng = rand::rng();
    let spec = Spec {
        udp,
        workers,
        core: Arc::new(core),
        shared: Arc::new(Shared::new(cfg.relay.min_port, cfg.relay.max_port)),
        nonce_key: rng.random(),
        seed: rng.random(),
    };
    net::start(spec)
}

/// One credential for printing, valid for `ttl`.
pub fn mint(cfg: &Config, secret: &[u8], user: &str, ttl: Duration) -> (String, String) {
    auth::rest_credentials(secret, Some(user), ttl, unix_now(), cfg.auth.rest_separator)
}

/// The first UDP port, for URLs.
pub fn first_port(addrs: &[SocketAddr]) -> u16 {
    addrs.first().map_or(3478, |a| a.port())
}
