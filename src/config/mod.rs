//! The TOML configuration. Keys are kebab-case, unknown keys are errors, and
//! every default lives here (and, commented, in `conf/turnd.toml`, which a
//! test loads). Errors name the file and the key.

mod errors;
mod validate;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::auth::{Credentials, StaticSecret};
use crate::proto::policy::{PeerPolicy, PortRule};
use crate::proto::CoreConfig;
use crate::secret::Secret;

use errors::Located;
pub use errors::{ConfigError, Problem};

#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    #[serde(default)]
    pub xdp: XdpConfig,
    #[serde(default)]
    pub stun: Stun,
    #[serde(default)]
    pub cluster: Cluster,
    #[serde(default)]
    pub acme: Acme,
}

/// Certificates by ACME (RFC 8555) for the TLS listeners, obtained and
/// renewed by turnd itself.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Acme {
    #[serde(default)]
    pub enabled: bool,
    /// A contact for the CA's expiry notices.
    #[serde(default)]
    pub email: Option<String>,
    /// The CA's directory URL.
    #[serde(default = "defaults::acme_directory")]
    pub directory: String,
    /// The names the certificate covers (default: `public-host`).
    #[serde(default)]
    pub domains: Vec<String>,
    /// A PEM root to trust for the directory's own HTTPS (a private or test
    /// CA); the system's roots otherwise.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Renew this long before expiry (default: when a third of the
    /// lifetime is left).
    #[serde(default, with = "humantime_serde")]
    pub renew_before: Option<Duration>,
    /// `tls-alpn-01` (answered by a TLS listener, RFC 8737) or `http-01`
    /// (answered on `http-listen`); default: TLS-ALPN-01 when there is a
    /// `tls` or `auto` listener, else HTTP-01.
    #[serde(default)]
    pub challenge: Option<AcmeChallenge>,
    /// Plain-HTTP listeners (port 80) that answer HTTP-01 challenges and
    /// redirect everything else to HTTPS.
    #[serde(default)]
    pub http_listen: Vec<SocketAddr>,
}

impl Default for Acme {
    fn default() -> Self {
        Self {
            enabled: false,
            email: None,
            directory: defaults::acme_directory(),
            domains: Vec::new(),
            ca_file: None,
            renew_before: None,
            challenge: None,
            http_listen: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AcmeChallenge {
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    #[serde(rename = "http-01")]
    Http01,
}

impl std::fmt::Display for AcmeChallenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
            AcmeChallenge::Http01 => "http-01",
        })
    }
}

/// A fleet of turnd nodes that share only their secrets: each polls its
/// siblings' status so `/api/ice` sends clients to a healthy, least-loaded
/// node and draining sends them to a live one ([`crate::cluster`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Cluster {
    /// The siblings' page URLs (`http://10.0.0.2:8080`), or one name that
    /// resolves to all of them (every address is a node; this node finds
    /// and skips itself). Empty: no fleet.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// This node's name in statuses, logs and `/api/ice` (default: the
    /// public host).
    #[serde(default)]
    pub name: Option<String>,
    /// The bearer token siblings present to `/api/cluster` (or
    /// `token-file`); the same on every node.
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// How often each sibling is asked.
    #[serde(default = "defaults::cluster_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long an answer may take; a sibling that does not answer is left
    /// out until it does again.
    #[serde(default = "defaults::cluster_timeout", with = "humantime_serde")]
    pub poll_timeout: Duration,
}

impl Default for Cluster {
    fn default() -> Self {
        from_empty()
    }
}

impl Cluster {
    /// The token, read from `token-file` when that is how it is given.
    pub fn token(&self) -> anyhow::Result<Option<Secret>> {
        read_token(&self.token, &self.token_file, "cluster.token-file")
    }
}

/// `text` with every `${NAME}` (NAME of A-Z, 0-9 and _) replaced by the
/// environment variable's value, as `lookup` finds it: one configuration
/// for many nodes (Kubernetes puts the node's address and name in the
/// environment). An unset variable is an error naming it and its line.
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, Problem> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        // Comment lines stay as written: commenting a line out never needs
        // its variables.
        if line.trim_start().starts_with('#') {
            out.push_str(line);
        } else {
            out.push_str(&expand_line(line, i + 1, &lookup)?);
        }
    }
    Ok(out)
}

fn expand_line(text: &str, line: usize, lookup: &impl Fn(&str) -> Option<String>) -> Result<String, Problem> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..name_len];
        if name.is_empty() || !after[name_len..].starts_with('}') || name.starts_with(|c: char| c.is_ascii_digit()) {
            out.push_str("${");
            rest = after;
            continue;
        }
        let value = lookup(name).ok_or_else(|| Problem {
            key: None,
            line: Some(line),
            value: Some(format!("${{{name}}}")),
            message: format!("the environment variable {name} is not set"),
        })?;
        out.push_str(&value);
        rest = &after[name_len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// An inline token, else the trimmed contents of `file` (`key` names it in
/// errors), else none.
fn read_token(token: &Option<Secret>, file: &Option<PathBuf>, key: &str) -> anyhow::Result<Option<Secret>> {
    match (token, file) {
        (Some(t), _) => Ok(Some(t.clone())),
        (None, Some(f)) => {
            let t =
                std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("cannot read {key} {}: {e}", f.display()))?;
            Ok(Some(Secret::new(t.trim())))
        }
        (None, None) => Ok(None),
    }
}

/// STUN beyond Binding: NAT behaviour discovery (RFC 5780).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Stun {
    /// A second address and port per family (one string or a list), for
    /// RFC 5780: Binding answers then carry OTHER-ADDRESS and
    /// RESPONSE-ORIGIN, and CHANGE-REQUEST is honoured. Paired with the UDP
    /// listener on a specific address of the same family; turnd also
    /// listens on the other two combinations of the two addresses and
    /// ports. Same address, other port: change-port only.
    #[serde(default, deserialize_with = "one_or_many")]
    pub other_address: Vec<SocketAddr>,
}

/// One value or a list of them.
fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(v) => vec![v],
        OneOrMany::Many(v) => v,
    })
}

/// The kernel's data path for ChannelData over UDP (`src/net/xdp`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct XdpConfig {
    /// "off", "auto" (native, else generic, else the socket path with a
    /// log line saying why), "native" or "generic" (refuse to start when
    /// that mode cannot attach).
    #[serde(default)]
    pub mode: XdpSetting,
    /// Interfaces to attach to; by default those that carry the UDP
    /// listener and relay addresses (every non-loopback interface for a
    /// wildcard listener).
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Channels the kernel relays at once (each map's size); beyond, a
    /// channel stays on the socket path.
    #[serde(default = "defaults::xdp_max_channels")]
    pub max_channels: u32,
}

impl Default for XdpConfig {
    fn default() -> Self {
        Self {
            mode: XdpSetting::Off,
            interfaces: Vec::new(),
            max_channels: defaults::xdp_max_channels(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum XdpSetting {
    #[default]
    Off,
    Auto,
    Native,
    Generic,
}

/// Prometheus `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
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
    pub token: Option<Secret>,
    /// Serve `/metrics` without a token on addresses others can reach
    /// (a non-loopback `listen`, or `on-http` with a public page listener);
    /// refused unless set.
    #[serde(default)]
    pub public: bool,
}

/// The admin API: list sessions, kill a user's sessions. Off unless a
/// listener and a token are configured.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Admin {
    /// Plain HTTP listeners, e.g. ["127.0.0.1:9479"]; keep them private.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// The bearer token every request needs (or `token-file`).
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl Admin {
    /// The token, read from `token-file` when that is how it is given.
    pub fn token(&self) -> anyhow::Result<Option<Secret>> {
        read_token(&self.token, &self.token_file, "admin.token-file")
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

impl std::fmt::Display for ListenTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Auto => "auto",
        })
    }
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

#[derive(Debug, Clone, PartialEq, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Auth {
    /// TURN REST API shared secrets (coturn `static-auth-secret`). Several
    /// are accepted at once, for rotation; the first mints new credentials.
    #[serde(default)]
    pub static_auth_secrets: Vec<Secret>,
    /// Files each holding one secret (whitespace trimmed), so this file can
    /// stay world-readable.
    #[serde(default)]
    pub static_auth_secret_files: Vec<PathBuf>,
    /// Static users: name = password, or "0x" + hex MD5(name:realm:password).
    #[serde(default)]
    pub users: BTreeMap<String, Secret>,
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

#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// An allocation whose client has sent nothing for this long may be
    /// replaced by a new one of the same user when its quota is full (a
    /// phone that changed networks allocates again from its new address).
    /// "0s": never.
    #[serde(default = "defaults::replace_idle_after", with = "humantime_serde")]
    pub replace_idle_after: Duration,
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

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Peers {
    /// Ranges to relay to even though the built-in list denies them, and
    /// ports on one address (also turnd's own: a media server beside it).
    #[serde(default)]
    pub allow: Vec<AllowEntry>,
    /// Ranges to deny on top of the built-in list.
    #[serde(default)]
    pub deny: Vec<IpNet>,
}

/// One `[peers] allow` entry: a range (`"10.8.0.0/16"`) or ports on one
/// address (`"203.0.113.10:10000-20000"`, `"[2001:db8::10]:10000"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum AllowEntry {
    Range(IpNet),
    Ports(PortRule),
}

impl TryFrom<String> for AllowEntry {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.parse::<IpNet>() {
            Ok(net) => Ok(AllowEntry::Range(net)),
            Err(e) if s.contains('/') => Err(format!("{e} (a range: a.b.c.d/n)")),
            Err(_) => s.parse::<PortRule>().map(AllowEntry::Ports),
        }
    }
}

impl Peers {
    /// The ranges of `allow`.
    pub fn ranges(&self) -> Vec<IpNet> {
        (self.allow.iter())
            .filter_map(|a| match a {
                AllowEntry::Range(n) => Some(*n),
                AllowEntry::Ports(_) => None,
            })
            .collect()
    }

    /// The port entries of `allow`.
    pub fn ports(&self) -> Vec<PortRule> {
        (self.allow.iter())
            .filter_map(|a| match a {
                AllowEntry::Ports(p) => Some(*p),
                AllowEntry::Range(_) => None,
            })
            .collect()
    }
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    pub access_key: Option<Secret>,
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
    /// Open HTTP connections (WebSockets included), in total; beyond, new
    /// ones are closed at once.
    #[serde(default = "defaults::http_connections")]
    pub max_connections: usize,
    /// Open HTTP connections from one IP address.
    #[serde(default = "defaults::http_per_address")]
    pub max_connections_per_address: usize,
    /// Time a client has to send a request's headers, from the moment the
    /// connection is ready for one (so also how long an idle keep-alive
    /// connection stays open).
    #[serde(default = "defaults::http_header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A connection on which nothing moves either way for this long is
    /// closed (WebSockets stay up: turnd pings them every 25 s).
    #[serde(default = "defaults::http_idle", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Origins (e.g. "https://app.example.org") whose pages may open `/ws`
    /// besides the page's own; other cross-origin WebSocket upgrades get
    /// 403.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

/// The certificate of every TLS listener: HTTPS, `tls` and `auto`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// Time to send the rest of a message once its first byte came: a
    /// client trickling a frame byte by byte is closed.
    #[serde(default = "defaults::frame_timeout", with = "humantime_serde")]
    pub frame_timeout: Duration,
    /// How long a connection may stay without an allocation in total,
    /// whatever it sends (STUN Bindings included).
    #[serde(default = "defaults::unallocated_timeout", with = "humantime_serde")]
    pub unallocated_timeout: Duration,
}

mod defaults {
    use std::time::Duration;

    /// Let's Encrypt's production directory.
    pub fn acme_directory() -> String {
        "https://acme-v02.api.letsencrypt.org/directory".into()
    }

    pub fn xdp_max_channels() -> u32 {
        65536
    }

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
    pub fn http_per_address() -> usize {
        64
    }
    pub fn http_header_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn http_idle() -> Duration {
        Duration::from_secs(60)
    }
    pub fn frame_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn unallocated_timeout() -> Duration {
        Duration::from_secs(60)
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
    pub fn cluster_poll() -> Duration {
        Duration::from_secs(1)
    }
    pub fn cluster_timeout() -> Duration {
        Duration::from_secs(1)
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
    pub fn replace_idle_after() -> Duration {
        Duration::from_secs(10)
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
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::whole(&file, format!("cannot read: {e}")))?;
        Self::parse(&text, &file)
    }

    /// Parses and validates a document; `file` names it in errors, which
    /// list every problem found, each with its key, line and value.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        Self::parse_checking(text, file, false)
    }

    /// [`Config::load`], then the files the configuration names are read
    /// as turnd would at start (secrets, admin token, certificate), so a
    /// check finds what would stop it. Every problem at once.
    pub fn check(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::whole(&file, format!("cannot read: {e}")))?;
        Self::parse_checking(&text, &file, true)
    }

    fn parse_checking(text: &str, file: &str, files: bool) -> Result<Self, ConfigError> {
        let fail = |problems| ConfigError {
            file: file.to_string(),
            problems,
        };
        let text = &expand_env(text, |k| std::env::var(k).ok()).map_err(|p| fail(vec![p]))?;
        let located = Located::parse(text).map_err(|p| fail(vec![p]))?;
        // What did not deserialize, and the rest (when it did).
        let (mut problems, cfg) = match errors::deserialize_all::<Config>(text, &located) {
            Ok(cfg) => (Vec::new(), Some(cfg)),
            Err((problems, rest)) => (problems, rest),
        };
        if let Some(cfg) = &cfg {
            let mut broken: Vec<(String, String)> =
                cfg.validate().into_iter().map(|(k, m)| (k.to_string(), m)).collect();
            if files {
                broken.extend(cfg.file_problems());
            }
            problems.extend(broken.into_iter().map(|(key, message)| located.problem(&key, message)));
        }
        match cfg {
            Some(cfg) if problems.is_empty() => Ok(cfg),
            _ => Err(fail(problems)),
        }
    }

    /// Files named by the configuration that cannot be used.
    fn file_problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, p) in self.auth.static_auth_secret_files.iter().enumerate() {
            let key = format!("auth.static-auth-secret-files[{i}]");
            match std::fs::read_to_string(p) {
                Ok(s) if s.trim().is_empty() => out.push((key, format!("{} is empty", p.display()))),
                Ok(_) => {}
                Err(e) => out.push((key, format!("cannot read {}: {e}", p.display()))),
            }
        }
        // Inline tokens are checked with the rest of the values; these read
        // their files.
        for (key, token, file) in [
            ("admin.token-file", &self.admin.token, &self.admin.token_file),
            ("cluster.token-file", &self.cluster.token, &self.cluster.token_file),
        ] {
            if token.is_some() {
                continue;
            }
            match read_token(token, file, key) {
                Err(e) => out.push((key.into(), format!("{e:#}"))),
                Ok(Some(t)) if t.len() < 16 => {
                    out.push((key.into(), "the token in it must be at least 16 characters".into()))
                }
                Ok(_) => {}
            }
        }
        if let (Some(c), Some(k)) = (&self.tls.cert_file, &self.tls.key_file) {
            if let Err(e) = crate::tls::Certs::load(c, k) {
                out.push(("tls.cert-file".into(), format!("{e:#}")));
            }
        }
        if let (true, Some(f)) = (self.acme.enabled, &self.acme.ca_file) {
            let root = std::fs::read(f).map_err(|e| e.to_string()).and_then(|pem| {
                use rustls::pki_types::pem::PemObject;
                rustls::pki_types::CertificateDer::from_pem_slice(&pem).map_err(|e| e.to_string())
            });
            if let Err(e) = root {
                out.push((
                    "acme.ca-file".into(),
                    format!("cannot read a PEM certificate from {}: {e}", f.display()),
                ));
            }
        }
        out
    }

    /// The secrets from `static-auth-secrets` and `static-auth-secret-files`.
    pub fn secrets(&self, file: &str) -> Result<Vec<Secret>, ConfigError> {
        let mut out: Vec<Secret> = self.auth.static_auth_secrets.clone();
        let mut problems = Vec::new();
        for (i, p) in self.auth.static_auth_secret_files.iter().enumerate() {
            let problem = |message| Problem {
                key: Some(format!("auth.static-auth-secret-files[{i}]")),
                line: None,
                value: Some(format!("{:?}", p.display().to_string())),
                message,
            };
            match std::fs::read_to_string(p) {
                Ok(s) if !s.trim().is_empty() => out.push(Secret::new(s.trim())),
                Ok(_) => problems.push(problem(format!("{} is empty", p.display()))),
                Err(e) => problems.push(problem(format!("cannot read {}: {e}", p.display()))),
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError {
                file: file.to_string(),
                problems,
            });
        }
        Ok(out)
    }

    /// The credentials, given the secrets to use.
    pub fn credentials(&self, secrets: Vec<Secret>) -> Credentials {
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
        c.policy = PeerPolicy::new(self.peers.ranges(), self.peers.deny.clone()).with_ports(self.peers.ports());
        c.default_lifetime = r.default_lifetime;
        c.max_lifetime = r.max_lifetime;
        c.nonce_lifetime = self.auth.nonce_lifetime;
        c.challenges_per_second = self.auth.challenges_per_second;
        c.max_bps = r.max_bps;
        c.max_bps_per_user = r.max_bps_per_user;
        c.rfc5766_channels = r.rfc5766_channels;
        c.max_allocations_per_user = r.max_allocations_per_user;
        c.max_allocations = r.max_allocations;
        c.replace_idle_after = r.replace_idle_after;
        c.relay_ipv4 = r.relay_ipv4;
        c.relay_ipv6 = r.relay_ipv6;
        c.alternate_server = self.alternate_server;
        c.discovery = self.stun_pairs();
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

    /// RFC 5780 pairs: each UDP listener that `stun.other-address` pairs
    /// with (the first UDP listener on a specific address of its family,
    /// with a fixed port), and its other address. Validation makes sure
    /// every other address has one.
    pub fn stun_pairs(&self) -> Vec<(SocketAddr, SocketAddr)> {
        let (listeners, _) = self.listeners();
        self.stun
            .other_address
            .iter()
            .filter_map(|other| {
                listeners
                    .iter()
                    .find(|(a, t)| {
                        *t == ListenTransport::Udp
                            && a.is_ipv4() == other.is_ipv4()
                            && !a.ip().is_unspecified()
                            && a.port() != 0
                    })
                    .map(|(a, _)| (*a, *other))
            })
            .collect()
    }

    /// The sockets RFC 5780 needs beyond the UDP listeners it pairs with:
    /// the other combinations of each pair's addresses and ports.
    pub fn stun_sockets(&self) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for (a, b) in self.stun_pairs() {
            for ip in [a.ip(), b.ip()] {
                for port in [a.port(), b.port()] {
                    let s = SocketAddr::new(ip, port);
                    if s != a && !out.contains(&s) {
                        out.push(s);
                    }
                }
            }
        }
        out
    }

    /// The IP of every socket turnd listens on: TURN, HTTP, HTTPS, metrics
    /// and admin (a wildcard stands for all of the host's addresses), and
    /// RFC 5780's other addresses.
    pub fn own_addresses(&self) -> Vec<IpAddr> {
        let (turn, _) = self.listeners();
        turn.iter()
            .map(|(a, _)| a)
            .chain(&self.stun.other_address)
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

    /// The names an ACME certificate covers: `acme.domains`, else
    /// `public-host` when it is a DNS name.
    pub fn acme_domains(&self) -> Vec<String> {
        if !self.acme.domains.is_empty() {
            return self.acme.domains.clone();
        }
        (self.public_host.iter())
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
            .filter(|h| h.parse::<IpAddr>().is_err() && !h.is_empty())
            .collect()
    }

    /// How the CA's challenges are answered: as configured, else
    /// TLS-ALPN-01 on a `tls`/`auto` listener, else HTTP-01 on
    /// `acme.http-listen`; `None` when neither can be.
    pub fn acme_challenge(&self) -> Option<AcmeChallenge> {
        let tls = self.listeners().0.iter().any(|(_, t)| t.uses_tls()) || !self.http.https_listen.is_empty();
        let http = !self.acme.http_listen.is_empty();
        match self.acme.challenge {
            Some(AcmeChallenge::TlsAlpn01) => tls.then_some(AcmeChallenge::TlsAlpn01),
            Some(AcmeChallenge::Http01) => http.then_some(AcmeChallenge::Http01),
            None if tls => Some(AcmeChallenge::TlsAlpn01),
            None if http => Some(AcmeChallenge::Http01),
            None => None,
        }
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
            ("[tcp]\nhandshake-timeout = \"0s\"\n", "tcp.handshake-timeout"),
            (
                "[tcp]\nmax-connections-per-address = 0\n",
                "tcp.max-connections-per-address",
            ),
            ("[http]\nroom-size = 1\n", "http.room-size"),
            ("[http]\nice-ttl = \"10s\"\n", "http.ice-ttl"),
            ("[http]\naccess = \"public\"\n", "http.access"),
            (
                "[http]\nallowed-origins = [\"app.example.org\"]\n",
                "http.allowed-origins",
            ),
        ] {
            let e = err(text);
            assert!(e.starts_with(&format!("t.toml:2: key `{key}`")), "{text}: {e}");
        }
    }

    #[test]
    fn errors_name_file_line_key_and_value() {
        let e = err("[relay]\nmax-prot = 5\n");
        assert!(
            e.starts_with("t.toml:2: key `relay.max-prot` = 5: unknown field"),
            "{e}"
        );
        let e = err("realm = \"x\"\n\n[relay]\nmax-lifetime = \"forever\"\n");
        assert!(
            e.starts_with("t.toml:4: key `relay.max-lifetime` = \"forever\":"),
            "{e}"
        );
        let e = err("[relay]\nmin-port = 70000\n");
        assert!(e.starts_with("t.toml:2: key `relay.min-port` = 70000:"), "{e}");
        let e = err("[peers]\nallow = [\"10.0.0.0/33\"]\n");
        assert!(
            e.starts_with("t.toml:2: key `peers.allow[0]` = \"10.0.0.0/33\":"),
            "{e}"
        );
        let e = err("[relay]\nmin-port = 6000\nmax-port = 5000\n");
        assert!(
            e.starts_with("t.toml:3: key `relay.max-port` = 5000: must not be below relay.min-port (6000)"),
            "{e}"
        );
        let e = err("[relay]\ndefault-lifetime = \"2h\"\n");
        assert!(
            e.starts_with("t.toml:1: key `relay.max-lifetime`"),
            "the section's line: {e}"
        );
        let e = err("bogus = 1\n");
        assert!(e.starts_with("t.toml:1: key `bogus` = 1: unknown field"), "{e}");
        let e = err("[[listener]]\naddress = \"0.0.0.0\"\n\n[[listener]]\naddress = \"::\"\ntransport = \"sctp\"\n");
        assert!(
            e.starts_with("t.toml:6: key `listener[1].transport` = \"sctp\":"),
            "{e}"
        );
        let e = err("[relay\n");
        assert!(e.starts_with("t.toml:1: not valid TOML"), "{e}");
    }

    #[test]
    fn every_problem_of_a_file_at_once() {
        let text = "[relay]\nmin-port = 6000\nmax-port = 5000\nbogus-key = 1\n\n[peers]\nallow = [\"10.8.0.0/33\"]\n\n\
                    [tcp]\nhandshake-timeout = \"0s\"\nmax-connections-per-address = 0\n\n[metrics]\nlisten = [\"0.0.0.0:9478\"]\n";
        let e = Config::parse(text, "t.toml").expect_err("broken");
        let lines: Vec<String> = e.to_string().lines().map(str::to_string).collect();
        for want in [
            "t.toml:4: key `relay.bogus-key` = 1: unknown field",
            "t.toml:7: key `peers.allow[0]` = \"10.8.0.0/33\":",
            "t.toml:3: key `relay.max-port` = 5000: must not be below relay.min-port",
            "t.toml:10: key `tcp.handshake-timeout` = \"0s\": must be longer than 0s",
            "t.toml:11: key `tcp.max-connections-per-address` = 0: must be at least 1",
            "t.toml:14: key `metrics.listen` = [\"0.0.0.0:9478\"]: 0.0.0.0:9478 is reachable from other machines",
        ] {
            assert!(lines.iter().any(|l| l.starts_with(want)), "missing {want:?} in:\n{e}");
        }
        assert_eq!(e.problems.len(), 6, "{e}");
    }

    #[test]
    fn secrets_never_print_and_compare_by_value() {
        let text = "[auth]\nstatic-auth-secrets = [\"rest-secret-1\"]\n[auth.users]\nalice = \"alice-password\"\n\
                    [http]\naccess-key = \"access-key-123\"\n[metrics]\ntoken = \"metrics-token-0123456\"\n\
                    [admin]\ntoken = \"admin-token-01234567\"\n";
        let c = Config::parse(text, "t.toml").expect("valid");
        let printed = format!("{c:?} {:?}", c.credentials(c.secrets("t.toml").expect("secrets")));
        for s in [
            "rest-secret-1",
            "alice-password",
            "access-key-123",
            "metrics-token",
            "admin-token",
        ] {
            assert!(!printed.contains(s), "{s} printed");
        }
        let again = Config::parse(text, "t.toml").expect("valid");
        assert!(c.http == again.http && c.auth == again.auth);
        let other = Config::parse(&text.replace("access-key-123", "access-key-456"), "t.toml").expect("valid");
        assert!(c.http != other.http, "a changed access key is a change");
    }

    #[test]
    fn public_metrics_need_a_token_or_public() {
        assert!(Config::parse("[metrics]\nlisten = [\"127.0.0.1:9478\"]\n", "t.toml").is_ok());
        let e = err("[metrics]\nlisten = [\"[::]:9478\"]\n");
        assert!(e.contains("key `metrics.listen`"), "{e}");
        assert!(Config::parse("[metrics]\nlisten = [\"0.0.0.0:9478\"]\npublic = true\n", "t.toml").is_ok());
        assert!(Config::parse(
            "[metrics]\nlisten = [\"0.0.0.0:9478\"]\ntoken = \"0123456789abcdef\"\n",
            "t.toml"
        )
        .is_ok());
        // On the page's listeners: the default page listener is loopback.
        assert!(Config::parse("[metrics]\non-http = true\n", "t.toml").is_ok());
        let e = err("[http]\nlisten = [\"0.0.0.0:8080\"]\n[metrics]\non-http = true\n");
        assert!(e.contains("key `metrics.on-http`"), "{e}");
    }

    #[test]
    fn allow_entries_name_ranges_or_ports_and_never_turnds_own() {
        let c = Config::parse(
            "[peers]\nallow = [\"10.8.0.0/16\", \"203.0.113.10:10000\", \"203.0.113.10:10000-20000\", \"[2001:db8::10]:4443\"]\n",
            "t.toml",
        )
        .expect("valid");
        assert_eq!(c.peers.ranges(), vec!["10.8.0.0/16".parse::<IpNet>().expect("net")]);
        let ports: Vec<String> = c.peers.ports().iter().map(ToString::to_string).collect();
        assert_eq!(
            ports,
            ["203.0.113.10:10000", "203.0.113.10:10000-20000", "[2001:db8::10]:4443"]
        );
        for bad in [
            "203.0.113.10",
            "203.0.113.10:0",
            "203.0.113.10:20-10",
            "2001:db8::10:4443",
            "x:1",
        ] {
            let e = err(&format!("[peers]\nallow = [\"{bad}\"]\n"));
            assert!(e.starts_with("t.toml:2: key `peers.allow[0]`"), "{bad}: {e}");
        }
        // The default listeners are wildcards on 3478: any address may be
        // turnd's, so its listener port and relay range stay closed.
        let e = err("[peers]\nallow = [\"203.0.113.10:3000-3500\"]\n");
        assert!(
            e.contains("key `peers.allow`") && e.contains("listener 0.0.0.0:3478"),
            "{e}"
        );
        let e = err("[peers]\nallow = [\"[2001:db8::10]:60000\"]\n");
        assert!(e.contains("relay port range 49152-65535"), "{e}");
        // With specific listeners, another address's ports are not turnd's.
        let text = "[[listener]]\naddress = \"192.0.2.1\"\n[http]\nlisten = [\"127.0.0.1:8080\"]\n[peers]\nallow = [\"203.0.113.10:3478\", \"203.0.113.10:60000\"]\n";
        assert!(Config::parse(text, "t.toml").is_ok());
        let e = err(&text.replace("203.0.113.10:3478", "192.0.2.1:3478"));
        assert!(e.contains("listener 192.0.2.1:3478"), "{e}");
        let e = err(&text.replace("203.0.113.10:3478", "127.0.0.1:8000-9000"));
        assert!(e.contains("http.listen 127.0.0.1:8080"), "{e}");
    }

    #[test]
    fn acme_needs_a_name_a_way_to_answer_and_no_tls_files() {
        let auto = "[[listener]]\naddress = \"0.0.0.0\"\nport = 443\ntransport = \"auto\"\n";
        let c = Config::parse(
            &format!("public-host = \"turn.example.org\"\n{auto}[acme]\nenabled = true\n"),
            "t.toml",
        )
        .expect("valid");
        assert_eq!(c.acme_domains(), ["turn.example.org"]);
        assert_eq!(c.acme_challenge(), Some(AcmeChallenge::TlsAlpn01));
        let e = err(&format!(
            "public-host = \"203.0.113.10\"\n{auto}[acme]\nenabled = true\n"
        ));
        assert!(e.contains("key `acme.domains`") && e.contains("DNS name"), "{e}");
        let e = err("public-host = \"turn.example.org\"\n[acme]\nenabled = true\n");
        assert!(e.contains("key `acme.challenge`"), "{e}");
        let http = "public-host = \"turn.example.org\"\n[[listener]]\naddress = \"0.0.0.0\"\nport = 5349\ntransport = \"tls\"\n[acme]\nenabled = true\nchallenge = \"http-01\"\n";
        let e = err(http);
        assert!(e.contains("http-01 needs acme.http-listen"), "{e}");
        let c = Config::parse(&format!("{http}http-listen = [\"0.0.0.0:80\"]\n"), "t.toml").expect("valid");
        assert_eq!(c.acme_challenge(), Some(AcmeChallenge::Http01));
        let e = err(&format!(
            "public-host = \"turn.example.org\"\n{auto}[tls]\ncert-file = \"/c\"\nkey-file = \"/k\"\n[acme]\nenabled = true\n"
        ));
        assert!(e.contains("key `acme.enabled`") && e.contains("remove one"), "{e}");
        let e = err("[acme]\nchallenge = \"dns-01\"\n");
        assert!(e.contains("key `acme.challenge`"), "{e}");
    }
}
