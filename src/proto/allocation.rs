//! One allocation's state ([RFC 8656 §6](https://www.rfc-editor.org/rfc/rfc8656#section-6)):
//! its relay, credentials, lifetime, counters and budgets. Its permissions
//! and channels live in the core's [`super::channels::ChannelTable`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::Key;

use super::addr::ClientAddr;
use super::shared::UserBudget;

/// How long a reserved port (EVEN-PORT R bit) is held
/// ([RFC 8656 §14.9](https://www.rfc-editor.org/rfc/rfc8656#section-14.9)).
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

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
    /// The first relay socket is open; the answer waits for the second
    /// (dual stack).
    pub first_open: bool,
}

/// The IPv6 relay of a dual-stack allocation (RFC 8656
/// ADDITIONAL-ADDRESS-FAMILY), socket [`super::addr::RelayId::second`].
#[derive(Debug, Clone, Copy)]
pub struct Second {
    /// The socket's address (the port the core chose, until bound).
    pub relay: SocketAddr,
    /// What the client is told.
    pub advertised: SocketAddr,
    /// Bound (else its OpenRelay is still to be answered).
    pub open: bool,
}

#[derive(Debug)]
pub struct Allocation {
    pub serial: u64,
    pub client: ClientAddr,
    /// The relay socket's local address (port chosen by the core).
    pub relay: SocketAddr,
    /// What the client is told: `external-ip` if set, else `relay`.
    pub advertised: SocketAddr,
    /// A dual-stack allocation's IPv6 relay.
    pub second: Option<Second>,
    /// Why a dual-stack allocation has no IPv6 relay (ADDRESS-ERROR-CODE).
    pub second_refused: Option<super::wire::ErrorCode>,
    pub username: String,
    pub quota_user: String,
    pub key: Key,
    pub expires: Instant,
    pub opening: Option<Opening>,
    pub allocate_txid: [u8; 12],
    /// The success response, sent again for a retransmitted Allocate.
    pub response: Vec<u8>,
    pub scheduled: Option<Instant>,
    pub created: Instant,
    pub to_peer: Counter,
    pub to_client: Counter,
    /// The user's budget, shared with its other allocations.
    pub budget: Arc<UserBudget>,
    /// The last peers a permission or channel was refused for (403), most
    /// recent last: what the page shows when a call fails.
    pub refused: Vec<SocketAddr>,
    /// When its client last sent anything (a request, data, or data the
    /// kernel relayed for it).
    pub heard: Instant,
    /// Marked idle in the shared pool (silent for `replace_idle_after`).
    pub idle: bool,
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
    /// The relay for a peer of `peer`'s family: the socket (this
    /// allocation's `id`, or its second) and its bound and advertised
    /// addresses; None when the allocation relays no such family.
    pub fn relay_for(
        &self,
        id: super::addr::RelayId,
        peer: SocketAddr,
    ) -> Option<(super::addr::RelayId, SocketAddr, SocketAddr)> {
        if peer.is_ipv6() == self.relay.is_ipv6() {
            return Some((id.first(), self.relay, self.advertised));
        }
        match self.second {
            Some(s) if s.open && peer.is_ipv6() == s.relay.is_ipv6() => Some((id.second(), s.relay, s.advertised)),
            _ => None,
        }
    }

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
}
