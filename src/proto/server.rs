//! The sans-IO relay: datagrams, addresses and the time go in; transmits,
//! commands and the next timeout come out. No sockets, no clock, no threads
//! (models: Firezone `relay/proto/src/server.rs`, str0m, quinn-proto).
//!
//! A driver calls, in a loop:
//! - [`Server::handle_client_input`] for each datagram from a client, and
//!   [`Server::handle_peer_input`] for each datagram on a relay socket, sending
//!   the [`Transmit`] they return at once (the hot path);
//! - [`Server::poll_command`] until it returns `None` after any call, and
//!   executes each [`Command`] (answers, relay sockets to open or close);
//! - [`Server::handle_timeout`] when [`Server::poll_timeout`]'s instant has
//!   passed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use slab::Slab;

use crate::auth::Credentials;

use super::addr::{ClientAddr, RelayHandle, RelayId, Transport};
use super::allocation::Allocation;
use super::channels::ChannelTable;
use super::nonce::Nonces;
use super::policy::{OwnAddresses, PeerPolicy};
use super::ratelimit::PerAddress;
use super::shared::{Held, SharedState};
use super::stats::Stats;
use super::wire::{self, method, Class, Kind, Message, CHANNEL_HEADER};

/// The two clocks the core needs: a monotonic one for lifetimes and unix
/// seconds for REST credential expiry and nonces.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub unix: u64,
}

impl Now {
    pub fn after(self, d: Duration) -> Self {
        Self {
            mono: self.mono + d,
            unix: self.unix + d.as_secs(),
        }
    }
}

/// Everything the core needs to decide; built from the config file.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub credentials: Credentials,
    pub policy: PeerPolicy,
    /// This host's addresses turnd uses: peers there are reached only when
    /// they are live relays of this turnd (inside the process).
    pub own: OwnAddresses,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub nonce_lifetime: Duration,
    pub max_allocations_per_user: u32,
    pub max_allocations: u32,
    /// Where relay sockets of each family are bound when the operator says
    /// so; otherwise on the local address the client reached.
    pub relay_ipv4: Option<Ipv4Addr>,
    pub relay_ipv6: Option<Ipv6Addr>,
    /// Addresses for the family the client did not reach turnd on (found at
    /// startup); used only when `relay_ipv*` is unset.
    pub fallback_ipv4: Option<Ipv4Addr>,
    pub fallback_ipv6: Option<Ipv6Addr>,
    /// The relayed address advertised instead of the bound one (NAT).
    pub external_ipv4: Option<Ipv4Addr>,
    pub external_ipv6: Option<Ipv6Addr>,
    /// Where clients are sent (300) while this server drains.
    pub alternate_server: Option<SocketAddr>,
    /// 401/438 answers per second per source address (bursts of twice
    /// that); 0 for no limit.
    pub challenges_per_second: u32,
    /// Bytes per second each allocation may relay in each direction (bursts
    /// of one second's worth); 0 for no limit.
    pub max_bps: u64,
    /// Bytes a second per direction for all of one user's allocations
    /// together (0: no limit).
    pub max_bps_per_user: u64,
    /// Accept ChannelBind for 0x5000–0x7FFF too (RFC 5766 clients).
    pub rfc5766_channels: bool,
    /// An allocation whose client has sent nothing for this long is idle:
    /// when its user's quota is full, a new allocation of the same user
    /// replaces it (a phone that changed networks allocates again from its
    /// new address). Zero: never.
    pub replace_idle_after: Duration,
    /// RFC 5780 (`stun.other-address`): a UDP listener's address and the
    /// other address paired with it, at most one pair per family. The
    /// driver listens on all four combinations of their IPs and ports.
    pub discovery: Vec<(SocketAddr, SocketAddr)>,
}

impl CoreConfig {
    pub fn new(credentials: Credentials) -> Self {
        Self {
            credentials,
            policy: PeerPolicy::default(),
            own: OwnAddresses::default(),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            nonce_lifetime: Duration::from_secs(600),
            max_allocations_per_user: 64,
            max_allocations: 30_000,
            relay_ipv4: None,
            relay_ipv6: None,
            fallback_ipv4: None,
            fallback_ipv6: None,
            external_ipv4: None,
            external_ipv6: None,
            alternate_server: None,
            challenges_per_second: 100,
            max_bps: 0,
            max_bps_per_user: 0,
            rfc5766_channels: false,
            replace_idle_after: Duration::from_secs(10),
            discovery: Vec::new(),
        }
    }

    /// For a Binding that reached `local`: the address differing from it
    /// in IP and port (OTHER-ADDRESS; in port only when both addresses of
    /// the pair share their IP), when `local` is one of an RFC 5780 pair's
    /// four combinations.
    pub fn other_address(&self, local: SocketAddr) -> Option<SocketAddr> {
        self.discovery.iter().find_map(|&(a, b)| {
            let ip = local.ip();
            let port = local.port();
            if (ip != a.ip() && ip != b.ip()) || (port != a.port() && port != b.port()) {
                return None;
            }
            let other_ip = if ip == a.ip() { b.ip() } else { a.ip() };
            let other_port = if port == a.port() { b.port() } else { a.port() };
            Some(SocketAddr::new(other_ip, other_port))
        })
    }

    /// Whether a peer at `ip` is reached the ordinary way, through a relay
    /// socket: the peer policy permits it and it is not one of turnd's own
    /// addresses. Any other peer must be a live relay of this turnd, found
    /// in [`SharedState::relay_at`] and handed its data inside the process.
    pub fn ordinary_peer(&self, ip: IpAddr) -> bool {
        !self.own.contains(ip) && self.policy.permits(ip)
    }

    /// Whether `peer` may be given a permission or a channel: an ordinary
    /// IP, or a port a `[peers] allow` entry names (also on turnd's own
    /// addresses: a media server beside it). Live relays of this turnd are
    /// the caller's to admit.
    pub fn peer_allowed(&self, peer: SocketAddr) -> bool {
        self.ordinary_peer(peer.ip()) || self.policy.admits_port(peer)
    }

    /// How a permission to `ip` reaches it.
    pub fn reach(&self, ip: IpAddr) -> super::channels::Reach {
        let ordinary = self.ordinary_peer(ip);
        super::channels::Reach {
            ordinary,
            ports: !ordinary && self.policy.names_ports_of(ip),
        }
    }

    /// The bandwidth limits in force.
    #[inline]
    pub fn limits(&self) -> super::allocation::Limits {
        super::allocation::Limits {
            allocation: self.max_bps,
            user: self.max_bps_per_user,
        }
    }
}

/// Data to send now. The payload borrows the buffer the input came in.
#[derive(Debug, PartialEq, Eq)]
pub enum Transmit<'a> {
    /// From relay socket `relay` to `peer`.
    ToPeer {
        relay: RelayId,
        peer: SocketAddr,
        payload: &'a [u8],
    },
    /// From the listener `client` reached, back to it.
    ToClient { client: ClientAddr, payload: &'a [u8] },
    /// To another allocation of this turnd, as if from the peer `from` (the
    /// sending allocation's advertised relayed address): the driver hands
    /// the payload to [`Server::handle_relayed_input`] of `to.worker`'s core,
    /// with [`CHANNEL_HEADER`] bytes of room in front of it. Nothing goes
    /// through the kernel, so neither a route to turnd's own address nor NAT
    /// hairpinning is needed.
    ToRelay {
        to: RelayHandle,
        from: SocketAddr,
        payload: &'a [u8],
    },
}

/// Work for the driver.
#[derive(Debug)]
pub enum Command {
    /// Send `data` to the client from the local address it reached.
    SendToClient { client: ClientAddr, data: Vec<u8> },
    /// Bind a UDP socket at `addr` for `relay` (or use `reserved`, the
    /// socket held there for a redeemed reservation) and report the outcome
    /// with [`Server::handle_relay_opened`] before handling anything else.
    /// With `hold` (EVEN-PORT with the R bit) also bind the next port and
    /// report that socket as [`Opened::held`], so nothing else on the host
    /// takes the reserved port: the open fails if either port is taken.
    OpenRelay {
        relay: RelayId,
        addr: SocketAddr,
        hold: Option<SocketAddr>,
        reserved: Option<Held>,
    },
    /// Close the socket of `relay`.
    CloseRelay { relay: RelayId },
    /// Something changed that a driver may mirror (a stream connection's
    /// allocation, the kernel's channel routes); nothing to do otherwise.
    Event(Event),
}

/// What the core reports as it happens, so drivers never poll it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The allocation of `client` is open, relaying at `relayed`.
    AllocationCreated {
        client: ClientAddr,
        relay: RelayId,
        relayed: SocketAddr,
    },
    /// The allocation of `client` is gone (expired, deleted, its connection
    /// closed, killed), and with it every channel and permission (whose
    /// [`Event::ChannelEnded`] came first). The driver logs `usage` once it
    /// has added what it relayed itself ([`Usage::log`]).
    AllocationDeleted {
        client: ClientAddr,
        relay: RelayId,
        usage: Box<Usage>,
    },
    /// `channel` of `relay` routes to and from `peer` until `until` (the
    /// earlier of the binding's and the permission's expiry): bound,
    /// refreshed, its permission refreshed, or the configuration reloaded.
    /// `offload` says how a driver may relay it without the core (the
    /// kernel's data path), or `None` when the core must see every packet
    /// (a stream client, a bandwidth limit, a peer that is this turnd,
    /// different address families).
    ChannelBound {
        relay: RelayId,
        channel: u16,
        peer: SocketAddr,
        until: Instant,
        internal: bool,
        offload: Option<Offload>,
    },
    /// `channel` of `relay` no longer routes (expired, its peer denied by a
    /// reloaded policy, its allocation gone).
    ChannelEnded {
        relay: RelayId,
        channel: u16,
        peer: SocketAddr,
    },
}

/// The addresses a channel's datagrams carry on the wire, for a driver
/// that relays them itself: from `client` to `listener` as ChannelData,
/// from `relayed` to the peer as plain UDP, and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offload {
    pub client: SocketAddr,
    pub listener: SocketAddr,
    /// The address the relay socket is bound to (not the advertised one).
    pub relayed: SocketAddr,
}

/// Packets and payload bytes relayed each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relayed {
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
}

impl Relayed {
    pub fn add(&mut self, o: &Relayed) {
        self.to_peer_packets += o.to_peer_packets;
        self.to_peer_bytes += o.to_peer_bytes;
        self.to_client_packets += o.to_client_packets;
        self.to_client_bytes += o.to_client_bytes;
    }

    pub fn is_empty(&self) -> bool {
        *self == Relayed::default()
    }

    /// What was added since `earlier` (counters only grow; a reset reads
    /// as nothing).
    pub fn since(&self, earlier: &Relayed) -> Relayed {
        Relayed {
            to_peer_packets: self.to_peer_packets.saturating_sub(earlier.to_peer_packets),
            to_peer_bytes: self.to_peer_bytes.saturating_sub(earlier.to_peer_bytes),
            to_client_packets: self.to_client_packets.saturating_sub(earlier.to_client_packets),
            to_client_bytes: self.to_client_bytes.saturating_sub(earlier.to_client_bytes),
        }
    }
}

/// What a deleted allocation did, for its log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub relayed: SocketAddr,
    pub user: String,
    pub reason: &'static str,
    pub secs: u64,
    pub totals: Relayed,
}

impl Usage {
    /// The "allocation deleted" line.
    pub fn log(&self, client: &ClientAddr) {
        let t = &self.totals;
        tracing::info!(
            %client, relay = %self.relayed, user = %self.user, reason = self.reason, secs = self.secs,
            to_peer_pkts = t.to_peer_packets, to_peer_bytes = t.to_peer_bytes,
            to_client_pkts = t.to_client_packets, to_client_bytes = t.to_client_bytes,
            "allocation deleted"
        );
    }
}

/// A relay socket opened: where it is bound, and the socket at the next
/// port when [`Command::OpenRelay`] asked to hold one.
#[derive(Debug)]
pub struct Opened {
    pub bound: SocketAddr,
    pub held: Option<Held>,
}

impl Opened {
    /// Bound at `bound`, nothing held.
    pub fn at(bound: SocketAddr) -> Self {
        Self { bound, held: None }
    }
}

/// Why a relay socket could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The port is taken by something else on the host: try another.
    InUse,
    /// Anything else (address gone, out of file descriptors).
    Failed,
}

/// One allocation as an operator sees it.
#[derive(Debug, Clone)]
pub struct Session {
    /// The username it authenticated with.
    pub user: String,
    /// The name quotas and `kill` use.
    pub quota_user: String,
    pub client: ClientAddr,
    pub relayed: SocketAddr,
    /// Peer IPs with a permission.
    pub peers: Vec<std::net::IpAddr>,
    pub channels: usize,
    pub age: Duration,
    pub expires_in: Duration,
    pub to_peer: super::allocation::Counter,
    pub to_client: super::allocation::Counter,
    /// The last peers a permission was refused for (403).
    pub refused: Vec<SocketAddr>,
    /// How long since its client last sent anything.
    pub silent: Duration,
    /// Silent for `replace_idle_after` (10 s when replacing is off): a
    /// client that went away (a phone that changed networks) leaves
    /// such an allocation behind until it expires.
    pub idle: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    Allocation {
        relay: RelayId,
        serial: u64,
    },
    Reservation {
        token: u64,
    },
    /// Marks idle allocations, and deletes the replaced ones, once a
    /// second while there are allocations.
    Sweep,
}

/// How often [`Timer::Sweep`] runs.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub struct Server {
    /// Which worker's core this is, in the [`RelayHandle`]s it hands out.
    pub(super) worker: u16,
    pub(super) cfg: Arc<CoreConfig>,
    pub(super) shared: Arc<dyn SharedState>,
    pub(super) nonces: Nonces,
    pub(super) challenges: PerAddress,
    pub(super) rng: ChaCha8Rng,
    pub(super) allocs: Slab<Allocation>,
    pub(super) by_client: HashMap<ClientAddr, RelayId, ahash::RandomState>,
    /// Permissions, channels and their hot-path routes.
    pub(super) channels: ChannelTable,
    pub(super) timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    pub(super) commands: VecDeque<Command>,
    pub(super) next_serial: u64,
    /// A [`Timer::Sweep`] is scheduled.
    pub(super) sweeping: bool,
    pub stats: Stats,
}

impl Server {
    /// Replaces the configuration (a reload): credentials, lifetimes and
    /// quotas apply to requests from now on; allocations already made keep
    /// their lifetimes. The peer policy applies at once: permissions and
    /// channels to peers it now denies are removed.
    pub fn set_config(&mut self, cfg: Arc<CoreConfig>) {
        self.nonces.set_lifetime(cfg.nonce_lifetime.as_secs());
        if cfg.challenges_per_second != self.cfg.challenges_per_second {
            self.challenges = PerAddress::new(cfg.challenges_per_second);
        }
        self.cfg = cfg;
        // A peer stays if it is still ordinary, or a live relay of this
        // turnd (exempt from the policy; its permission covers the IP).
        let live = self.shared.with(|g| g.relay_addresses());
        let cfg = &self.cfg;
        self.channels.reload(
            |ip| cfg.ordinary_peer(ip) || cfg.policy.names_ports_of(ip) || live.iter().any(|a| a.ip() == ip),
            |p| cfg.peer_allowed(p) || live.contains(&p),
            |ip| cfg.reach(ip),
            |p| cfg.peer_allowed(p),
        );
    }

    /// `seed` feeds the port and token choices; `nonce_key` signs nonces
    /// (give every worker of one process the same key).
    pub fn new(cfg: Arc<CoreConfig>, shared: Arc<dyn SharedState>, seed: u64, nonce_key: [u8; 32]) -> Self {
        let nonces = Nonces::new(nonce_key, cfg.nonce_lifetime.as_secs());
        let challenges = PerAddress::new(cfg.challenges_per_second);
        Self {
            worker: 0,
            challenges,
            cfg,
            shared,
            nonces,
            rng: ChaCha8Rng::seed_from_u64(seed),
            allocs: Slab::new(),
            by_client: HashMap::default(),
            channels: ChannelTable::default(),
            timers: BinaryHeap::new(),
            commands: VecDeque::new(),
            next_serial: 1,
            sweeping: false,
            stats: Stats::default(),
        }
    }

    /// Names this core as worker `index` of its process (its relays'
    /// [`RelayHandle`]s carry it).
    pub fn with_worker(mut self, index: u16) -> Self {
        self.worker = index;
        self
    }

    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// Live (and opening) allocations of this core.
    pub fn allocation_count(&self) -> usize {
        self.allocs.len()
    }

    /// This core's allocations, for the admin API.
    pub fn sessions(&self, now: Now) -> Vec<Session> {
        let idle_after = match self.cfg.replace_idle_after {
            d if d.is_zero() => Duration::from_secs(10),
            d => d,
        };
        self.allocs
            .iter()
            .filter(|(_, a)| a.opening.is_none())
            .map(|(id, a)| Session {
                user: a.username.clone(),
                quota_user: a.quota_user.clone(),
                client: a.client,
                relayed: a.advertised,
                peers: self.channels.permitted(RelayId(id as u32)),
                channels: self.channels.live_channels(RelayId(id as u32)),
                age: now.mono.saturating_duration_since(a.created),
                expires_in: a.expires.saturating_duration_since(now.mono),
                to_peer: a.to_peer,
                to_client: a.to_client,
                silent: now.mono.saturating_duration_since(a.heard),
                idle: now.mono.saturating_duration_since(a.heard) >= idle_after,
                refused: a.refused.clone(),
            })
            .collect()
    }

    /// Deletes every allocation of `user` (the quota name: the `<user>` of
    /// a REST username, or the static user). Returns how many.
    pub fn kill_user(&mut self, user: &str, now: Now) -> usize {
        let doomed: Vec<RelayId> = self
            .by_client
            .values()
            .copied()
            .filter(|id| self.allocs.get(id.index()).is_some_and(|a| a.quota_user == user))
            .collect();
        for id in &doomed {
            self.stats.allocations_deleted += 1;
            self.delete_allocation(*id, "killed by an operator", now.mono);
        }
        doomed.len()
    }

    /// Timers waiting in this core (allocation, permission and channel
    /// expiry, reservations), for the soak test's "nothing grows" check.
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// Gives back the room the core's tables kept from a wave of
    /// allocations that has ended (each shrinks when at most a quarter
    /// full), so the driver can return the memory to the system.
    pub fn shrink(&mut self) {
        fn loose(len: usize, cap: usize) -> bool {
            cap > 64 && len <= cap / 4
        }
        if loose(self.allocs.len(), self.allocs.capacity()) {
            self.allocs.shrink_to_fit();
        }
        if loose(self.by_client.len(), self.by_client.capacity()) {
            self.by_client.shrink_to_fit();
        }
        self.channels.shrink();
        if loose(self.timers.len(), self.timers.capacity()) {
            self.timers.shrink_to_fit();
        }
        if loose(self.commands.len(), self.commands.capacity()) {
            self.commands.shrink_to_fit();
        }
    }

    /// Live permissions and channel bindings of this core's allocations.
    pub fn bindings(&self) -> (u64, u64) {
        self.channels.totals()
    }

    /// Where ChannelData from `client` on `channel` goes at `now`, if
    /// anywhere: its allocation's relay and the bound peer.
    pub fn route(&self, client: ClientAddr, channel: u16, now: Instant) -> Option<(RelayId, SocketAddr)> {
        self.channels
            .client_route(client, channel, now)
            .map(|r| (r.relay, r.peer))
    }

    /// Checks the invariants of the permission and channel tables (for the
    /// property tests): `Err` names the first one broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.channels.check()?;
        for (i, a) in self.allocs.iter() {
            if self.by_client.get(&a.client) != Some(&RelayId(i as u32)) {
                return Err(format!("allocation {i} of {} is not found by its client", a.client));
            }
        }
        if self.by_client.len() != self.allocs.len() {
            return Err("clients without an allocation".into());
        }
        Ok(())
    }

    /// Call for every datagram a client sent to a listener. `buf` holds
    /// exactly the datagram. What comes back must be sent before the next
    /// call; commands may have been queued as well.
    pub fn handle_client_input<'a>(&mut self, client: ClientAddr, buf: &'a [u8], now: Now) -> Option<Transmit<'a>> {
        match wire::classify(buf) {
            Kind::ChannelData => {
                let Some((channel, len)) = wire::channel_data(buf) else {
                    self.stats.dropped += 1;
                    return None;
                };
                match self.channels.client_route(client, channel, now.mono) {
                    Some(r) => {
                        let payload = &buf[CHANNEL_HEADER..CHANNEL_HEADER + len];
                        self.relay_to_peer(client, r.relay, r.peer, r.internal, payload, now)
                    }
                    None => {
                        self.stats.dropped += 1;
                        None
                    }
                }
            }
            Kind::Stun => self.handle_stun(client, buf, now),
            Kind::Other => {
                self.stats.dropped += 1;
                None
            }
        }
    }

    /// Charges `payload` to the allocation `relay` and says where it goes:
    /// out of its relay socket to an ordinary peer, or to the live relay of
    /// this turnd at `peer` (dropped when there is none any more).
    pub(super) fn relay_to_peer<'a>(
        &mut self,
        client: ClientAddr,
        relay: RelayId,
        peer: SocketAddr,
        internal: bool,
        payload: &'a [u8],
        now: Now,
    ) -> Option<Transmit<'a>> {
        let to = if internal {
            let Some(to) = self.shared.relay_at(peer) else {
                self.stats.dropped += 1;
                return None;
            };
            Some(to)
        } else {
            None
        };
        let limits = self.cfg.limits();
        let a = self.allocs.get_mut(relay.index())?;
        // The relay of the peer's family (a dual-stack allocation has two).
        let Some((socket, _, advertised)) = a.relay_for(relay, peer) else {
            self.stats.dropped += 1;
            return None;
        };
        a.heard = now.mono;
        if !a.pass_to_peer(payload.len(), limits, now.mono) {
            self.stats.over_bandwidth += 1;
            return None;
        }
        self.stats.relayed_to_peer(client.transport, payload.len());
        Some(match to {
            Some(to) => {
                self.stats.internal.count(payload.len());
                Transmit::ToRelay {
                    to,
                    from: advertised,
                    payload,
                }
            }
            None => Transmit::ToPeer {
                relay: socket,
                peer,
                payload,
            },
        })
    }

    fn handle_stun<'a>(&mut self, client: ClientAddr, buf: &'a [u8], now: Now) -> Option<Transmit<'a>> {
        let Ok(req) = Message::decode(buf) else {
            self.stats.dropped += 1;
            return None;
        };
        match (req.class, req.method) {
            (Class::Indication, method::SEND) => self.on_send_indication(client, buf, &req, now),
            // Binding indications are keepalives; other indications are not
            // for a server.
            (Class::Indication, _) => None,
            (Class::Request, method::BINDING) => {
                self.on_binding(client, &req, now);
                None
            }
            (Class::Request, _) => {
                self.on_request(client, &req, now);
                None
            }
            _ => {
                self.stats.dropped += 1;
                None
            }
        }
    }

    /// Call for every datagram a relay socket received. The payload must sit
    /// at `buf[CHANNEL_HEADER..]`, with the first 4 bytes free: when the peer
    /// has a channel, the ChannelData header is written there and the whole
    /// buffer goes to the client without a copy.
    pub fn handle_peer_input<'a>(
        &mut self,
        relay: RelayId,
        peer: SocketAddr,
        buf: &'a mut [u8],
        now: Now,
    ) -> Option<Transmit<'a>> {
        self.peer_input(relay, peer, buf, now, false)
    }

    /// Call for each [`Transmit::ToRelay`] addressed to this core (by any
    /// worker, this one included), with the payload at `buf[CHANNEL_HEADER..]`
    /// as for [`Server::handle_peer_input`]. Dropped when the allocation of
    /// `to` is gone.
    pub fn handle_relayed_input<'a>(
        &mut self,
        to: RelayHandle,
        from: SocketAddr,
        buf: &'a mut [u8],
        now: Now,
    ) -> Option<Transmit<'a>> {
        if to.worker != self.worker || self.allocs.get(to.relay.index()).is_none_or(|a| a.serial != to.serial) {
            self.stats.dropped += 1;
            return None;
        }
        self.peer_input(to.relay, from, buf, now, true)
    }

    /// Peer data for `relay`: from its socket, or handed over from another
    /// allocation of this turnd (`internal`). A peer that is not ordinary is
    /// only heard the internal way: through the kernel its address can only
    /// be spoofed or another program of this host.
    fn peer_input<'a>(
        &mut self,
        relay: RelayId,
        peer: SocketAddr,
        buf: &'a mut [u8],
        now: Now,
        internal: bool,
    ) -> Option<Transmit<'a>> {
        // Either socket of a dual-stack allocation: one allocation, one table.
        let relay = relay.first();
        let len = buf.len().checked_sub(CHANNEL_HEADER)?;
        let limits = self.cfg.limits();
        let Some(a) = self.allocs.get_mut(relay.index()) else {
            self.stats.dropped += 1;
            return None;
        };
        if a.opening.is_some() || len > u16::MAX as usize {
            self.stats.dropped += 1;
            return None;
        }
        if let Some(r) = self.channels.peer_route(relay, peer, now.mono) {
            if r.internal == internal {
                let header: &mut [u8; CHANNEL_HEADER] = (&mut buf[..CHANNEL_HEADER]).try_into().ok()?;
                wire::write_channel_header(header, r.channel, len);
                if !a.pass_to_client(len, limits, now.mono) {
                    self.stats.over_bandwidth += 1;
                    return None;
                }
                self.stats.relayed_to_client(a.client.transport, len);
                return Some(Transmit::ToClient {
                    client: a.client,
                    payload: buf,
                });
            }
        }
        // Through the kernel only from an ordinary peer; handed over only
        // from a relay of this turnd.
        let permission = self.channels.permission(relay, peer.ip(), now.mono);
        let policy = &self.cfg.policy;
        if permission.is_none_or(|p| p.ordinary_for(peer, |a| policy.admits_port(a)) == internal) {
            self.stats.dropped += 1;
            return None;
        }
        if !a.pass_to_client(len, limits, now.mono) {
            self.stats.over_bandwidth += 1;
            return None;
        }
        self.stats.relayed_to_client(a.client.transport, len);
        let client = a.client;
        let data = super::handlers::data_indication(&mut self.rng, peer, &buf[CHANNEL_HEADER..]);
        self.push(Command::SendToClient { client, data });
        None
    }

    /// Whether [`Server::poll_command`] has something.
    pub fn has_commands(&self) -> bool {
        !self.commands.is_empty() || self.channels.has_events()
    }

    /// The next command for the driver (events of the channel table last).
    /// Queues `c` after whatever the channel table reported before it, so
    /// a driver sees events in the order they happened (a channel ends
    /// before its allocation, a channel is bound before the answer says so).
    pub(crate) fn push(&mut self, c: Command) {
        while let Some(e) = self.next_channel_event() {
            self.commands.push_back(Command::Event(e));
        }
        self.commands.push_back(c);
    }

    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands
            .pop_front()
            .or_else(|| self.next_channel_event().map(Command::Event))
    }

    /// The channel table's next route change, with what a driver needs to
    /// relay the channel itself when the core allows it.
    fn next_channel_event(&mut self) -> Option<Event> {
        let mut e = self.channels.next_event()?;
        if let Event::ChannelBound {
            relay,
            peer,
            internal,
            ref mut offload,
            ..
        } = e
        {
            *offload = self.offload(relay, peer, internal);
        }
        Some(e)
    }

    /// Whether a channel of `relay` may be relayed without the core: only
    /// ChannelData over UDP between addresses of one family, to an ordinary
    /// peer, with no bandwidth limit to enforce per packet.
    fn offload(&self, relay: RelayId, peer: SocketAddr, internal: bool) -> Option<Offload> {
        let a = self.allocs.get(relay.index())?;
        let limits = self.cfg.limits();
        // The relay of the peer's family: the kernel relays only within
        // one family.
        let (_, relayed, _) = a.relay_for(relay, peer)?;
        let same_family = a.client.remote.is_ipv4() == relayed.is_ipv4();
        (!internal
            && a.opening.is_none()
            && a.client.transport == Transport::Udp
            && same_family
            && limits.allocation == 0
            && limits.user == 0)
            .then_some(Offload {
                client: a.client.remote,
                listener: a.client.local,
                relayed,
            })
    }

    /// Adds what a driver relayed itself for `relay` (see
    /// [`Event::ChannelBound`]'s `offload`) to its counters and the totals.
    /// Call at least once a second while such channels carry traffic, and
    /// when each ends (the allocation may be gone by then: the totals
    /// still count it).
    /// Returns whether the allocation is still there to take it.
    pub fn credit_offloaded(&mut self, relay: RelayId, r: &Relayed, now: Instant) -> bool {
        self.stats.credit(Transport::Udp, r);
        let Some(a) = self.allocs.get_mut(relay.index()) else {
            return false;
        };
        if r.to_peer_packets > 0 {
            a.heard = now; // the client sends, through the kernel
        }
        a.to_peer.packets += r.to_peer_packets;
        a.to_peer.bytes += r.to_peer_bytes;
        a.to_client.packets += r.to_client_packets;
        a.to_client.bytes += r.to_client_bytes;
        true
    }

    /// When [`Server::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Expires allocations, permissions, channels and reservations due by
    /// `now`. Call when `poll_timeout`'s instant has passed (calling earlier
    /// is harmless).
    pub fn handle_timeout(&mut self, now: Now) {
        while let Some(Reverse((t, timer))) = self.timers.peek().copied() {
            if t > now.mono {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Allocation { relay, serial } => self.on_allocation_timer(relay, serial, t, now),
                Timer::Reservation { token } => {
                    // Unclaimed in time: the port goes back, its held
                    // socket closes (dropped here, outside the lock).
                    let expired = self.shared.with(|g| {
                        if g.reservations.get(&token)?.expires > now.mono {
                            return None;
                        }
                        let r = g.reservations.remove(&token)?;
                        g.ports.release(r.port);
                        Some(r)
                    });
                    drop(expired);
                }
                Timer::Sweep => {
                    self.sweeping = false;
                    self.sweep(now.mono);
                }
            }
        }
    }

    /// Schedules the idle sweep if it is not, while there are allocations.
    pub(super) fn keep_sweeping(&mut self, now: Instant) {
        if !self.sweeping && !self.allocs.is_empty() {
            self.sweeping = true;
            self.timers.push(Reverse((now + SWEEP_EVERY, Timer::Sweep)));
        }
    }

    /// Marks in the pool the allocations that became idle or active again,
    /// and deletes those another allocation of their user replaced.
    fn sweep(&mut self, now: Instant) {
        let after = self.cfg.replace_idle_after;
        let mut changed = Vec::new();
        if !after.is_zero() {
            for (i, a) in self.allocs.iter_mut() {
                let idle = a.opening.is_none() && now.saturating_duration_since(a.heard) >= after;
                if idle != a.idle {
                    a.idle = idle;
                    changed.push((RelayId(i as u32), a.serial, idle));
                }
            }
        }
        if !changed.is_empty() {
            let marks: Vec<_> = changed
                .into_iter()
                .filter_map(|(relay, serial, idle)| {
                    let user = self.allocs.get(relay.index())?.quota_user.clone();
                    Some((user, self.handle(relay, serial), idle))
                })
                .collect();
            self.shared.with(|g| {
                for (user, h, idle) in &marks {
                    g.set_idle(user, *h, *idle);
                }
            });
        }
        self.delete_replaced(now);
        self.keep_sweeping(now);
    }

    /// Deletes this core's allocations that newer ones replaced, unless
    /// their client spoke again meanwhile (then the user is one over its
    /// quota until an allocation goes: a live one is never cut).
    pub(super) fn delete_replaced(&mut self, now: Instant) {
        let worker = self.worker;
        let mine = self.shared.with(|g| g.take_replaced(worker));
        for h in mine {
            let idle = self.allocs.get(h.relay.index()).is_some_and(|a| {
                a.serial == h.serial && now.saturating_duration_since(a.heard) >= self.cfg.replace_idle_after
            });
            if idle {
                self.stats.allocations_deleted += 1;
                self.delete_allocation(h.relay, "replaced by a newer allocation of its user", now);
            }
        }
    }

    fn on_allocation_timer(&mut self, relay: RelayId, serial: u64, t: Instant, now: Now) {
        let Some(a) = self.allocs.get_mut(relay.index()) else {
            return;
        };
        if a.serial != serial || a.scheduled != Some(t) {
            return; // superseded
        }
        a.scheduled = None;
        if a.expires <= now.mono {
            self.stats.allocations_expired += 1;
            self.delete_allocation(relay, "expired", now.mono);
            return;
        }
        let expires = a.expires;
        let next = self.channels.sweep(relay, now.mono).map_or(expires, |t| t.min(expires));
        self.schedule(relay, next);
    }

    /// Makes sure the allocation's timer fires no later than `at`.
    pub(super) fn schedule(&mut self, relay: RelayId, at: Instant) {
        let Some(a) = self.allocs.get_mut(relay.index()) else {
            return;
        };
        if a.scheduled.is_some_and(|s| s <= at) {
            return;
        }
        a.scheduled = Some(at);
        self.timers.push(Reverse((
            at,
            Timer::Allocation {
                relay,
                serial: a.serial,
            },
        )));
    }

    /// A TCP or TLS client's connection closed: its allocation goes with it
    /// ([RFC 8656 §3.1](https://www.rfc-editor.org/rfc/rfc8656#section-3.1)).
    pub fn handle_client_closed(&mut self, client: &ClientAddr, now: Now) {
        if let Some(relay) = self.by_client.get(client).copied() {
            self.stats.allocations_deleted += 1;
            self.delete_allocation(relay, "connection closed", now.mono);
        }
    }

    /// Removes an allocation and everything hanging off it.
    pub(super) fn delete_allocation(&mut self, relay: RelayId, why: &'static str, now: Instant) {
        if !self.allocs.contains(relay.index()) {
            return;
        }
        let a = self.allocs.remove(relay.index());
        self.by_client.remove(&a.client);
        if self.allocs.is_empty() && self.sweeping {
            // Nothing left to sweep: no timer outlives the last allocation.
            self.timers.retain(|Reverse((_, t))| !matches!(t, Timer::Sweep));
            self.sweeping = false;
        }
        self.channels.close(relay);
        let handle = self.handle(relay, a.serial);
        self.shared.with(|g| {
            g.ports.release(a.relay.port());
            g.release(&a.quota_user, Some(handle));
            if a.opening.is_none() {
                g.unregister_relay(a.relay, a.advertised, handle);
            }
            if let Some(s) = a.second {
                g.ports.release(s.relay.port());
                if a.opening.is_none() {
                    g.unregister_relay(s.relay, s.advertised, handle);
                }
            }
        });
        // A second socket not open yet is closed when it reports.
        if a.second.is_some_and(|s| s.open) {
            self.push(Command::CloseRelay { relay: relay.second() });
        }
        if a.opening.is_none() {
            self.push(Command::CloseRelay { relay });
            let usage = Usage {
                relayed: a.advertised,
                user: a.username,
                reason: why,
                secs: now.saturating_duration_since(a.created).as_secs(),
                totals: Relayed {
                    to_peer_packets: a.to_peer.packets,
                    to_peer_bytes: a.to_peer.bytes,
                    to_client_packets: a.to_client.packets,
                    to_client_bytes: a.to_client.bytes,
                },
            };
            self.push(Command::Event(Event::AllocationDeleted {
                client: a.client,
                relay,
                usage: Box::new(usage),
            }));
        }
    }

    /// The handle other cores reach the allocation `relay` with.
    pub(super) fn handle(&self, relay: RelayId, serial: u64) -> RelayHandle {
        RelayHandle {
            worker: self.worker,
            relay,
            serial,
        }
    }

    /// The IP a relay of `family` is bound on for a client that reached `local`.
    pub(super) fn relay_ip(&self, v6: bool, local: IpAddr) -> Option<IpAddr> {
        let c = &self.cfg;
        if v6 {
            c.relay_ipv6
                .map(IpAddr::V6)
                .or_else(|| (local.is_ipv6() && !local.is_unspecified()).then_some(local))
                .or(c.fallback_ipv6.map(IpAddr::V6))
        } else {
            c.relay_ipv4
                .map(IpAddr::V4)
                .or_else(|| (local.is_ipv4() && !local.is_unspecified()).then_some(local))
                .or(c.fallback_ipv4.map(IpAddr::V4))
        }
    }

    pub(super) fn advertised(&self, bound: SocketAddr) -> SocketAddr {
        let ip = match bound.ip() {
            IpAddr::V4(_) => self.cfg.external_ipv4.map(IpAddr::V4),
            IpAddr::V6(_) => self.cfg.external_ipv6.map(IpAddr::V6),
        };
        SocketAddr::new(ip.unwrap_or(bound.ip()), bound.port())
    }
}
