//! The TOML configuration. Keys are kebab-case, unknown keys are errors, and
//! every default lives here (and, commented, in `conf/turnd.toml`, which a
//! test loads). Errors name the file and the key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::auth::{Credentials, StaticSecret};
use crate::proto::policy::PeerPolicy;
use crate::proto::CoreConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// REALM sent in challenges and part of every long-term key.
    #[serde(default = "defaults::realm")]
    pub realm: String,
    /// Where turnd keeps what it generates (the shared secret when none is
    /// configured).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Worker threads; 0 means one per available core.
    #[serde(default)]
    pub workers: usize,
    /// `tracing` filter, e.g. "info" or "turnd=debug".
    #[serde(default = "defaults::log_level")]
    pub log_level: String,
    /// "text" (one line per event) or "json" (one JSON object per line).
    #[serde(default = "defaults::log_format")]
    pub log_format: LogFormat,
    /// On SIGTERM, how long existing allocations may go on (new ones are
    /// refused) before turnd exits.
    #[serde(default = "defaults::drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Where new clients are sent (300 ALTERNATE-SERVER) while draining.
    #[serde(default)]
    pub alternate_server: Option<SocketAddr>,
    /// Host name or address put in printed `turn:` URLs.
    #[serde(default)]
    pub public_host: Option<String>,
    /// Listeners; when absent, UDP and TCP on 0.0.0.0:3478 and [::]:3478.
    #[serde(default)]
    pub listener: Option<Vec<Listener>>,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default)]
    pub relay: Relay,
    #[serde(default)]
    pub peers: Peers,
    #[serde(default)]
    pub http: Http,
    #[serde(default)]
    pub tls: Tls,
    #[serde(default)]
    pub tcp: Tcp,
    #[serde(default)]
    pub metrics: Metrics,
    #[serde(default)]
    pub admin: Admin,
}

/// Prometheus `/metrics`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Metrics {
    /// Plain HTTP listeners serving only `/metrics`, e.g. ["127.0.0.1:9478"].
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// Also serve `/metrics` on the page's listeners (HTTP, HTTPS, auto).
    #[serde(default)]
    pub on_http: bool,
    /// When set, scrapes need `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token: Option<String>,
}

/// The admin API: list sessions, kill a user's sessions. Off unless a
/// listener and a token are configured.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Admin {
    /// Plain HTTP listeners, e.g. ["127.0.0.1:9479"]; keep them private.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// The bearer token every request needs (or `token-file`).
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl Admin {
    /// The token, read from `token-file` when that is how it is given.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        match (&self.token, &self.token_file) {
            (Some(t), _) => Ok(Some(t.clone())),
            (None, Some(f)) => {
                let t = std::fs::read_to_string(f)
                    .map_err(|e| anyhow::anyhow!("cannot read admin.token-file {}: {e}", f.display()))?;
                Ok(Some(t.trim().to_string()))
            }
            (None, None) => Ok(None),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenTransport {
    Udp,
    /// TURN over TCP.
    Tcp,
    /// TURN over TLS.
    Tls,
    /// TLS or plain TCP, and inside either TURN or HTTP (the page), told
    /// apart by the first bytes: one port (443) for everything.
    Auto,
}

impl ListenTransport {
    /// The port when none is given: 3478 for UDP and TCP, 5349 for TLS,
    /// 443 for `auto`.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Udp | Self::Tcp => 3478,
            Self::Tls => 5349,
            Self::Auto => 443,
        }
    }

    /// Whether the listener needs a certificate.
    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Tls | Self::Auto)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Listener {
    pub address: IpAddr,
    /// Default: [`ListenTransport::default_port`].
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "defaults::transport")]
    pub transport: ListenTransport,
}

impl Listener {
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port.unwrap_or(self.transport.default_port()))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Auth {
    /// TURN REST API shared secrets (coturn `static-auth-secret`). Several
    /// are accepted at once, for rotation; the first mints new credentials.
    #[serde(default)]
    pub static_auth_secrets: Vec<String>,
    /// Files each holding one secret (whitespace trimmed), so this file can
    /// stay world-readable.
    #[serde(default)]
    pub static_auth_secret_files: Vec<PathBuf>,
    /// Static users: name = password, or "0x" + hex MD5(name:realm:password).
    #[serde(default)]
    pub users: BTreeMap<String, String>,
    /// Between expiry and user name in REST usernames.
    #[serde(default = "defaults::separator")]
    pub rest_separator: char,
    /// 401/438 answers per second to one source address (bursts of twice
    /// that); beyond, requests get no answer. 0 turns the limit off.
    #[serde(default = "defaults::challenges_per_second")]
    pub challenges_per_second: u32,
    /// How long a nonce stays valid before 438 Stale Nonce.
    #[serde(default = "defaults::nonce_lifetime", with = "humantime_serde")]
    pub nonce_lifetime: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Relay {
    #[serde(default = "defaults::min_port")]
    pub min_port: u16,
    #[serde(default = "defaults::max_port")]
    pub max_port: u16,
    /// Bind IPv4 relays here (default: the address the client reached).
    #[serde(default)]
    pub relay_ipv4: Option<Ipv4Addr>,
    #[serde(default)]
    pub relay_ipv6: Option<Ipv6Addr>,
    /// Relayed addresses advertised instead of the bound ones (turnd behind
    /// NAT): at most one IPv4 and one IPv6 address.
    #[serde(default)]
    pub external_ip: Vec<IpAddr>,
    #[serde(default = "defaults::default_lifetime", with = "humantime_serde")]
    pub default_lifetime: Duration,
    #[serde(default = "defaults::max_lifetime", with = "humantime_serde")]
    pub max_lifetime: Duration,
    #[serde(default = "defaults::max_per_user")]
    pub max_allocations_per_user: u32,
    #[serde(default = "defaults::max_total")]
    pub max_allocations: u32,
    /// Bytes per second one allocation may relay in each direction
    /// (coturn's `max-bps`); beyond, packets are dropped. 0: no limit.
    #[serde(default)]
    pub max_bps: u64,
    /// Bytes per second all of one user's allocations together may relay in
    /// each direction, across workers; beyond, packets are dropped. 0: no
    /// limit.
    #[serde(default)]
    pub max_bps_per_user: u64,
    /// Also accept channel numbers 0x5000–0x7FFF, which RFC 8656 reserves
    /// but RFC 5766 clients (coturn's `turnutils_uclient`, older pjnath)
    /// still pick. Browsers never need it.
    #[serde(default)]
    pub rfc5766_channels: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Peers {
    /// Ranges to relay to even though the built-in list denies them.
    #[serde(default)]
    pub allow: Vec<IpNet>,
    /// Ranges to deny on top of the built-in list.
    #[serde(default)]
    pub deny: Vec<IpNet>,
}

/// Who may use the page, `/api/ice` and the WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Only holders of the access key (the join link carries it).
    Key,
    /// Anyone who can reach the HTTP listener.
    Open,
}

/// The signaling page, its credential endpoint and WebSocket rooms.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Http {
    /// Plain HTTP listeners; `[]` turns them off. Browsers treat
    /// http://127.0.0.1 as a secure context (camera allowed), other plain
    /// HTTP origins not: use `https-listen` for them.
    #[serde(default = "defaults::http_listen")]
    pub listen: Vec<SocketAddr>,
    /// HTTPS listeners, e.g. ["0.0.0.0:8443"] (certificate from `[tls]`).
    #[serde(default)]
    pub https_listen: Vec<SocketAddr>,
    #[serde(default = "defaults::access")]
    pub access: Access,
    /// The access key; without it one is generated in the data dir.
    #[serde(default)]
    pub access_key: Option<String>,
    /// Lifetime of the TURN credentials `/api/ice` hands out.
    #[serde(default = "defaults::ice_ttl", with = "humantime_serde")]
    pub ice_ttl: Duration,
    /// `/api/ice` requests per minute per client address.
    #[serde(default = "defaults::ice_rate")]
    pub ice_requests_per_minute: u32,
    /// Signaling messages per second per WebSocket (bursts of 10× allowed).
    #[serde(default = "defaults::ws_rate")]
    pub ws_messages_per_second: u32,
    /// People per room (full mesh, so keep it small).
    #[serde(default = "defaults::room_size")]
    pub room_size: usize,
    /// Open HTTP connections (WebSockets included), in total.
    #[serde(default = "defaults::http_connections")]
    pub max_connections: usize,
}

/// The certificate of every TLS listener: HTTPS, `tls` and `auto`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Tls {
    /// PEM certificate chain and private key, read again on SIGHUP; without
    /// them a self-signed certificate is generated in the data dir.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// Limits on TURN connections over `tcp`, `tls` and `auto` listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Tcp {
    /// Open connections in total; beyond, new ones are closed at once.
    #[serde(default = "defaults::tcp_connections")]
    pub max_connections: usize,
    /// Open connections from one IP address.
    #[serde(default = "defaults::tcp_per_address")]
    pub max_connections_per_address: usize,
    /// Time to finish the TLS handshake (and, on `auto`, to send a first
    /// byte).
    #[serde(default = "defaults::handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A connection without an allocation that sends nothing for this long
    /// is closed.
    #[serde(default = "defaults::tcp_idle", with = "humantime_serde")]
    pub idle_timeout: Duration,
}

mod defaults {
    use std::time::Duration;

    use std::net::SocketAddr;

    use super::{Access, ListenTransport};

    pub fn http_listen() -> Vec<SocketAddr> {
        vec![SocketAddr::from(([127, 0, 0, 1], 8080))]
    }
    pub fn access() -> Access {
        Access::Key
    }
    pub fn ice_ttl() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn ice_rate() -> u32 {
        20
    }
    pub fn ws_rate() -> u32 {
        20
    }
    pub fn room_size() -> usize {
        4
    }
    pub fn http_connections() -> usize {
        1024
    }

    pub fn realm() -> String {
        "turnd".into()
    }
    pub fn log_level() -> String {
        "info".into()
    }
    pub fn log_format() -> super::LogFormat {
        super::LogFormat::Text
    }
    pub fn drain_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn tcp_connections() -> usize {
        10_000
    }
    pub fn tcp_per_address() -> usize {
        256
    }
    pub fn handshake_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn tcp_idle() -> Duration {
        Duration::from_secs(30)
    }
    pub fn transport() -> ListenTransport {
        ListenTransport::Udp
    }
    pub fn separator() -> char {
        ':'
    }
    pub fn challenges_per_second() -> u32 {
        100
    }
    pub fn nonce_lifetime() -> Duration {
        Duration::from_secs(600)
    }
    pub fn min_port() -> u16 {
        49152
    }
    pub fn max_port() -> u16 {
        65535
    }
    pub fn default_lifetime() -> Duration {
        Duration::from_secs(600)
    }
    pub fn max_lifetime() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn max_per_user() -> u32 {
        64
    }
    pub fn max_total() -> u32 {
        30_000
    }
}

/// Every section's default is what serde fills in for an empty table, so
/// the defaults stay in one place (the `#[serde(default = …)]` attributes).
fn from_empty<T: serde::de::DeserializeOwned>() -> T {
    toml::from_str("").expect("an empty table takes every default")
}

impl Default for Auth {
    fn default() -> Self {
        from_empty()
    }
}

impl Default for Relay {
    fn default() -> Self {
        from_empty()
    }
}

impl Default for Http {
    fn default() -> Self {
        from_empty()
    }
}

impl Default for Tcp {
    fn default() -> Self {
        from_empty()
    }
}

impl Default for Config {
    fn default() -> Self {
        from_empty()
    }
}

/// A config problem, naming the file and, where there is one, the key.
#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(k) => write!(f, "{}: key `{}`: {}", self.file, k, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Http {
    /// Whether any HTTP or HTTPS listener is configured.
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty() || !self.https_listen.is_empty()
    }
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &file)
    }

    /// Parses and validates a document; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::new(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let line = inner
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            let mut message = inner.message().to_string();
            if let Some(l) = line {
                message = format!("{message} (line {l})");
            }
            ConfigError {
                file: file.to_string(),
                key: (path != "." && !path.is_empty()).then_some(path),
                message,
            }
        })?;
        cfg.validate().map_err(|(key, message)| ConfigError {
            file: file.to_string(),
            key: Some(key.to_string()),
            message,
        })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        let r = &self.relay;
        if r.min_port == 0 || r.min_port > r.max_port {
            return Err((
                "relay.min-port",
                format!("range {}-{} is empty or starts at 0", r.min_port, r.max_port),
            ));
        }
        if r.default_lifetime.as_secs() < 1 {
            return Err(("relay.default-lifetime", "must be at least 1s".into()));
        }
        if r.max_lifetime < r.default_lifetime {
            return Err((
                "relay.max-lifetime",
                "must not be shorter than relay.default-lifetime".into(),
            ));
        }
        if r.max_lifetime.as_secs() > u32::MAX as u64 {
            return Err(("relay.max-lifetime", "too long".into()));
        }
        if r.external_ip.iter().filter(|i| i.is_ipv4()).count() > 1
            || r.external_ip.iter().filter(|i| i.is_ipv6()).count() > 1
        {
            return Err(("relay.external-ip", "at most one IPv4 and one IPv6 address".into()));
        }
        if r.max_allocations == 0 {
            return Err(("relay.max-allocations", "must be at least 1".into()));
        }
        if self.realm.is_empty() || self.realm.len() > 127 {
            return Err(("realm", "must be 1 to 127 characters".into()));
        }
        if self.auth.nonce_lifetime.as_secs() < 10 {
            return Err(("auth.nonce-lifetime", "must be at least 10s".into()));
        }
        if self.auth.rest_separator.is_ascii_digit() {
            return Err(("auth.rest-separator", "must not be a digit".into()));
        }
        if let Some(ls) = &self.listener {
            if ls.is_empty() {
                return Err(("listener", "at least one listener is needed".into()));
            }
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(("tls.cert-file", "cert-file and key-file go together".into()));
        }
        let t = &self.tcp;
        if t.max_connections == 0 || t.max_connections_per_address == 0 {
            return Err(("tcp.max-connections", "limits must be at least 1".into()));
        }
        if t.handshake_timeout.is_zero() || t.idle_timeout.is_zero() {
            return Err(("tcp.idle-timeout", "timeouts must be longer than 0s".into()));
        }
        for (key, t) in [
            ("metrics.token", &self.metrics.token),
            ("admin.token", &self.admin.token),
        ] {
            if t.as_ref().is_some_and(|t| t.len() < 16) {
                return Err((key, "must be at least 16 characters".into()));
            }
        }
        if !self.admin.listen.is_empty() && self.admin.token.is_none() && self.admin.token_file.is_none() {
            return Err((
                "admin.listen",
                "the admin API needs admin.token or admin.token-file".into(),
            ));
        }
        let h = &self.http;
        if let Some(k) = &h.access_key {
            if k.len() < 12 || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err((
                    "http.access-key",
                    "must be at least 12 characters of A-Z a-z 0-9 - _ (it travels in links)".into(),
                ));
            }
        }
        if h.ice_ttl.as_secs() < 60 || h.ice_ttl.as_secs() > 7 * 86400 {
            return Err(("http.ice-ttl", "must be between 1m and 7d".into()));
        }
        if h.ice_requests_per_minute == 0 {
            return Err(("http.ice-requests-per-minute", "must be at least 1".into()));
        }
        if h.ws_messages_per_second == 0 {
            return Err(("http.ws-messages-per-second", "must be at least 1".into()));
        }
        if !(2..=16).contains(&h.room_size) {
            return Err(("http.room-size", "must be between 2 and 16".into()));
        }
        if h.max_connections < 4 {
            return Err(("http.max-connections", "must be at least 4".into()));
        }
        if self.log_level.parse::<tracing_subscriber::EnvFilter>().is_err() {
            return Err(("log-level", format!("`{}` is not a log filter", self.log_level)));
        }
        Ok(())
    }

    /// The secrets from `static-auth-secrets` and `static-auth-secret-files`.
    pub fn secrets(&self, file: &str) -> Result<Vec<Vec<u8>>, ConfigError> {
        let mut out: Vec<Vec<u8>> = self
            .auth
            .static_auth_secrets
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        for p in &self.auth.static_auth_secret_files {
            let s = std::fs::read_to_string(p).map_err(|e| ConfigError {
                file: file.to_string(),
                key: Some("auth.static-auth-secret-files".into()),
                message: format!("cannot read {}: {e}", p.display()),
            })?;
            let s = s.trim();
            if s.is_empty() {
                return Err(ConfigError {
                    file: file.to_string(),
                    key: Some("auth.static-auth-secret-files".into()),
                    message: format!("{} is empty", p.display()),
                });
            }
            out.push(s.as_bytes().to_vec());
        }
        Ok(out)
    }

    /// The credentials, given the secrets to use.
    pub fn credentials(&self, secrets: Vec<Vec<u8>>) -> Credentials {
        let mut c = Credentials::new(self.realm.clone());
        c.secrets = secrets;
        c.separator = self.auth.rest_separator;
        c.users = self
            .auth
            .users
            .iter()
            .map(|(u, p)| (u.clone(), StaticSecret::parse(p)))
            .collect();
        c
    }

    /// The core's view of this configuration.
    pub fn core(&self, credentials: Credentials) -> CoreConfig {
        let r = &self.relay;
        let mut c = CoreConfig::new(credentials);
        c.policy = PeerPolicy::new(self.peers.allow.clone(), self.peers.deny.clone());
        c.default_lifetime = r.default_lifetime;
        c.max_lifetime = r.max_lifetime;
        c.nonce_lifetime = self.auth.nonce_lifetime;
        c.challenges_per_second = self.auth.challenges_per_second;
        c.max_bps = r.max_bps;
        c.max_bps_per_user = r.max_bps_per_user;
        c.rfc5766_channels = r.rfc5766_channels;
        c.max_allocations_per_user = r.max_allocations_per_user;
        c.max_allocations = r.max_allocations;
        c.relay_ipv4 = r.relay_ipv4;
        c.relay_ipv6 = r.relay_ipv6;
        c.alternate_server = self.alternate_server;
        for ip in &r.external_ip {
            match ip {
                IpAddr::V4(v4) => c.external_ipv4 = Some(*v4),
                IpAddr::V6(v6) => c.external_ipv6 = Some(*v6),
            }
        }
        c
    }

    /// Listener addresses with their transports, and whether they are the
    /// built-in defaults (an IPv6 default is skipped on hosts without IPv6).
    pub fn listeners(&self) -> (Vec<(SocketAddr, ListenTransport)>, bool) {
        match &self.listener {
            Some(ls) => (ls.iter().map(|l| (l.socket_addr(), l.transport)).collect(), false),
            None => {
                let any: [IpAddr; 2] = [Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into()];
                let all = [ListenTransport::Udp, ListenTransport::Tcp]
                    .into_iter()
                    .flat_map(|t| any.map(|ip| (SocketAddr::new(ip, t.default_port()), t)))
                    .collect();
                (all, true)
            }
        }
    }

    /// The IP of every socket turnd listens on: TURN, HTTP, HTTPS, metrics
    /// and admin (a wildcard stands for all of the host's addresses).
    pub fn own_addresses(&self) -> Vec<IpAddr> {
        let (turn, _) = self.listeners();
        turn.iter()
            .map(|(a, _)| a)
            .chain(&self.http.listen)
            .chain(&self.http.https_listen)
            .chain(&self.metrics.listen)
            .chain(&self.admin.listen)
            .map(|a| a.ip())
            .collect()
    }

    /// Whether the page is served: on an HTTP or HTTPS listener, or on an
    /// `auto` listener.
    pub fn page_enabled(&self) -> bool {
        self.http.enabled() || self.listeners().0.iter().any(|(_, t)| *t == ListenTransport::Auto)
    }

    /// Whether some listener serves TLS (HTTPS, `tls` or `auto`).
    pub fn needs_certificate(&self) -> bool {
        !self.http.https_listen.is_empty() || self.listeners().0.iter().any(|(_, t)| t.uses_tls())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, "t.toml").expect_err("must fail").to_string()
    }

    #[test]
    fn empty_config_has_defaults() {
        let c = Config::parse("", "t.toml").expect("valid");
        assert_eq!(c.relay.min_port, 49152);
        assert_eq!(c.relay.max_port, 65535);
        assert_eq!(c.relay.default_lifetime, Duration::from_secs(600));
        assert_eq!(c.relay.max_lifetime, Duration::from_secs(3600));
        assert_eq!(c.listeners().0.len(), 4);
        let c = Config::parse(
            "[[listener]]\naddress = \"0.0.0.0\"\ntransport = \"auto\"\n[[listener]]\naddress = \"::\"\ntransport = \"tls\"\n",
            "t.toml",
        )
        .expect("valid");
        let ports: Vec<u16> = c.listeners().0.iter().map(|(a, _)| a.port()).collect();
        assert_eq!(ports, [443, 5349]);
        assert!(c.needs_certificate());
        assert!(!Config::default().needs_certificate());
    }

    #[test]
    fn http_section_is_checked() {
        let c = Config::parse("", "t.toml").expect("valid");
        assert_eq!(c.http.listen, vec![SocketAddr::from(([127, 0, 0, 1], 8080))]);
        assert_eq!((c.http.access, c.http.room_size), (Access::Key, 4));
        for (text, key) in [
            ("[http]\naccess-key = \"short\"\n", "http.access-key"),
            ("[http]\naccess-key = \"has spaces in it ok\"\n", "http.access-key"),
            ("[tls]\ncert-file = \"/c.pem\"\n", "tls.cert-file"),
            ("[http]\ncert-file = \"/c.pem\"\n", "http.cert-file"),
            ("[tcp]\nidle-timeout = \"0s\"\n", "tcp.idle-timeout"),
            ("[tcp]\nmax-connections-per-address = 0\n", "tcp.max-connections"),
            ("[http]\nroom-size = 1\n", "http.room-size"),
            ("[http]\nice-ttl = \"10s\"\n", "http.ice-ttl"),
            ("[http]\naccess = \"public\"\n", "http.access"),
        ] {
            let e = err(text);
            assert!(e.contains(&format!("key `{key}`")), "{text}: {e}");
        }
    }

    #[test]
    fn errors_name_file_and_key() {
        let e = err("[relay]\nmax-prot = 5\n");
        assert!(e.starts_with("t.toml: key `relay.max-prot`: unknown field"), "{e}");
        let e = err("[relay]\nmax-lifetime = \"forever\"\n");
        assert!(e.contains("t.toml: key `relay.max-lifetime`"), "{e}");
        let e = err("[relay]\nmin-port = 70000\n");
        assert!(e.contains("key `relay.min-port`") && e.ends_with("(line 2)"), "{e}");
        let e = err("[peers]\nallow = [\"10.0.0.0/33\"]\n");
        assert!(e.contains("key `peers.allow"), "{e}");
        let e = err("[relay]\nmin-port = 6000\nmax-port = 5000\n");
        assert!(e.contains("key `relay.min-port`"), "{e}");
        let e = err("[relay]\ndefault-lifetime = \"2h\"\n");
        assert!(e.contains("key `relay.max-lifetime`"), "{e}");
        let e = err("bogus = 1\n");
        assert!(e.contains("bogus"), "{e}");
        let e = err("[[listener]]\naddress = \"0.0.0.0\"\ntransport = \"sctp\"\n");
        assert!(e.contains("listener[0].transport"), "{e}");
    }
}
