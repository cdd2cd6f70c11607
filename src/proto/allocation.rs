//! One allocation's state: permissions, channels and their expiry
//! ([RFC 8656 §6](https://www.rfc-editor.org/rfc/rfc8656#section-6)).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::Key;

use super::addr::ClientAddr;
use super::shared::UserBudget;

/// Permission lifetime, not configurable ([RFC 8656 §9](https://www.rfc-editor.org/rfc/rfc8656#section-9)).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Channel binding lifetime ([RFC 8656 §12](https://www.rfc-editor.org/rfc/rfc8656#section-12)).
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// After a binding expires, neither its number nor its peer may be bound to
/// anything else for this long ([RFC 8656 §12](https://www.rfc-editor.org/rfc/rfc8656#section-12)).
pub const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);
/// How long a reserved port (EVEN-PORT R bit) is held
/// ([RFC 8656 §14.9](https://www.rfc-editor.org/rfc/rfc8656#section-14.9)).
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
pub struct Channel {
    pub peer: SocketAddr,
    pub expires: Instant,
}

impl Channel {
    /// Still blocking other bindings of its number and peer.
    pub fn holds(&self, now: Instant) -> bool {
        now < self.expires + CHANNEL_COOLDOWN
    }
}

/// A permission for one peer IP ([RFC 8656 §9](https://www.rfc-editor.org/rfc/rfc8656#section-9)).
#[derive(Debug, Clone, Copy)]
pub struct Permission {
    pub expires: Instant,
    /// The IP is an [ordinary](super::server::CoreConfig::ordinary_peer)
    /// peer (decided once, when the permission is made or the policy
    /// reloaded); otherwise data to it goes to a live relay of this turnd
    /// at the exact address, or nowhere.
    pub ordinary: bool,
}

/// The hot-path view of a channel from the peer side: one lookup by the
/// peer's address decides whether its data goes out as ChannelData.
#[derive(Debug, Clone, Copy)]
pub struct PeerRoute {
    pub channel: u16,
    pub chan_expires: Instant,
    pub perm_expires: Instant,
    /// The peer is a relay of this turnd, heard only inside the process
    /// (see [`super::server::CoreConfig::ordinary_peer`]).
    pub internal: bool,
}

/// Why an allocation is waiting for its relay socket.
#[derive(Debug, Clone)]
pub struct Opening {
    pub fingerprint: bool,
    pub lifetime: Duration,
    pub even: bool,
    pub reserve_next: bool,
    pub from_token: bool,
    pub attempts: u32,
    /// The RESERVATION-TOKEN handed out with this allocation (R bit).
    pub token: Option<u64>,
}

#[derive(Debug)]
pub struct Allocation {
    pub serial: u64,
    pub client: ClientAddr,
    /// The relay socket's local address (port chosen by the core).
    pub relay: SocketAddr,
    /// What the client is told: `external-ip` if set, else `relay`.
    pub advertised: SocketAddr,
    pub username: String,
    pub quota_user: String,
    pub key: Key,
    pub expires: Instant,
    pub opening: Option<Opening>,
    pub allocate_txid: [u8; 12],
    /// The success response, sent again for a retransmitted Allocate.
    pub response: Vec<u8>,
    pub perms: HashMap<IpAddr, Permission>,
    pub channels: HashMap<u16, Channel>,
    pub by_peer: HashMap<SocketAddr, PeerRoute>,
    pub scheduled: Option<Instant>,
    pub created: Instant,
    pub to_peer: Counter,
    pub to_client: Counter,
    /// The user's budget, shared with its other allocations.
    pub budget: Arc<UserBudget>,
    /// The last peers a permission or channel was refused for (403), most
    /// recent last: what the page shows when a call fails.
    pub refused: Vec<SocketAddr>,
}

/// Refused peers an allocation remembers.
const REFUSED_KEPT: usize = 8;

/// The bandwidth limits in force, bytes a second per direction (0: none).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub allocation: u64,
    pub user: u64,
}

/// What went one way through an allocation, and that direction's
/// bandwidth budget (`relay.max-bps`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
    /// Bytes that may still pass now (a bucket of one second's worth).
    tokens: f64,
    last: Option<Instant>,
}

impl Counter {
    /// Counts `bytes` when they fit in the budget of `rate` bytes a second
    /// (0: no limit); false when they must be dropped.
    #[inline]
    pub fn pass(&mut self, bytes: usize, rate: u64, now: Instant) -> bool {
        if rate > 0 {
            let cap = rate as f64;
            let refill = self
                .last
                .map_or(cap, |t| now.saturating_duration_since(t).as_secs_f64() * cap);
            self.tokens = (self.tokens + refill).min(cap);
            self.last = Some(now);
            if self.tokens < bytes as f64 {
                return false;
            }
            self.tokens -= bytes as f64;
        }
        self.packets += 1;
        self.bytes += bytes as u64;
        true
    }
}

impl Allocation {
    /// Counts `bytes` toward a peer when both the user's and this
    /// allocation's budgets allow them; false when they must be dropped.
    #[inline]
    pub fn pass_to_peer(&mut self, bytes: usize, limits: Limits, now: Instant) -> bool {
        self.budget.to_peer(bytes, limits.user, now) && self.to_peer.pass(bytes, limits.allocation, now)
    }

    /// Like [`Allocation::pass_to_peer`], toward the client.
    #[inline]
    pub fn pass_to_client(&mut self, bytes: usize, limits: Limits, now: Instant) -> bool {
        self.budget.to_client(bytes, limits.user, now) && self.to_client.pass(bytes, limits.allocation, now)
    }

    /// Remembers a peer a permission was refused for.
    pub fn refused(&mut self, peer: SocketAddr) {
        self.refused.retain(|p| *p != peer);
        if self.refused.len() >= REFUSED_KEPT {
            self.refused.remove(0);
        }
        self.refused.push(peer);
    }

    /// Whether the peer's IP has a live permission.
    pub fn permits(&self, ip: IpAddr, now: Instant) -> bool {
        self.permission(ip, now).is_some()
    }

    /// The live permission for `ip`.
    pub fn permission(&self, ip: IpAddr, now: Instant) -> Option<Permission> {
        self.perms.get(&ip).copied().filter(|p| now < p.expires)
    }

    /// Installs or refreshes the permission for `ip` (`ordinary`: see
    /// [`Permission::ordinary`]) and copies its expiry into the hot-path
    /// routes of channels to that IP.
    pub fn refresh_permission(&mut self, ip: IpAddr, expires: Instant, ordinary: bool) {
        self.perms.insert(ip, Permission { expires, ordinary });
        for (peer, route) in self.by_peer.iter_mut() {
            if peer.ip() == ip {
                route.perm_expires = expires;
            }
        }
    }

    /// The channel number bound (or cooling down) for `peer`, if any.
    pub fn channel_of(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        self.channels
            .iter()
            .find(|(_, c)| c.peer == peer && c.holds(now))
            .map(|(n, _)| *n)
    }

    /// Drops expired permissions and channels; returns the channels whose
    /// binding just ended (their hot-path routes must go) and the next
    /// instant anything here changes.
    pub fn sweep(&mut self, now: Instant) -> (Vec<u16>, Instant) {
        self.perms.retain(|_, p| now < p.expires);
        let mut ended = Vec::new();
        for (n, c) in &self.channels {
            if c.expires <= now && self.by_peer.get(&c.peer).is_some_and(|r| r.channel == *n) {
                ended.push(*n);
            }
        }
        for n in &ended {
            if let Some(c) = self.channels.get(n) {
                self.by_peer.remove(&c.peer);
            }
        }
        self.channels.retain(|_, c| c.holds(now));
        let mut next = self.expires;
        for p in self.perms.values() {
            next = next.min(p.expires);
        }
        for c in self.channels.values() {
            next = next.min(if c.expires > now {
                c.expires
            } else {
                c.expires + CHANNEL_COOLDOWN
            });
        }
        (ended, next)
    }
}
