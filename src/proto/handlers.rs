//! The request handlers: Binding ([RFC 8489 §6.3](https://www.rfc-editor.org/rfc/rfc8489#section-6.3)),
//! authentication ([RFC 8489 §9.2](https://www.rfc-editor.org/rfc/rfc8489#section-9.2)) and the
//! TURN methods ([RFC 8656 §7–§12](https://www.rfc-editor.org/rfc/rfc8656#section-7)).
//!
//! Each handler takes the typed request and returns a [`Reply`] or why it
//! is [`Refused`]; [`Server::answer`] alone writes the answer (signed when
//! the request authenticated, with a reason phrase only then) and counts it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::auth::{AuthError, Key};

use super::addr::{ClientAddr, RelayHandle, RelayId};
use super::allocation::{Allocation, Opening, Second, RESERVATION_LIFETIME};
use super::channels::{BindError, CHANNEL_LIFETIME, PERMISSION_LIFETIME};
use super::nonce::NonceCheck;
use super::server::{Command, Event, Now, OpenError, Opened, Server, Timer, Transmit};
use super::shared::{Pool, QuotaFull, Reservation};
use super::stats::{AuthFailure, Refusal};
use super::wire::{
    self, attr, method, Allocate, ChannelBind, Class, Encoder, ErrorCode, Family, Message, Peers, Refresh, Request,
    CHANNEL_MAX, CHANNEL_MAX_RFC5766, CHANNEL_MIN,
};

/// The most a Binding answer carrying RFC 5780's attributes may be, in
/// multiples of the request (see `on_binding`).
pub const DISCOVERY_REFLECTION: usize = 3;

/// How many ports an Allocate tries when the host already uses the chosen one.
const OPEN_ATTEMPTS: u32 = 8;

/// An authenticated request's credentials.
struct Authed {
    username: String,
    key: Key,
}

/// A success answer.
pub(super) enum Reply {
    /// No attributes (CreatePermission, ChannelBind).
    Empty,
    /// LIFETIME (Refresh).
    Lifetime(Duration),
    /// XOR-MAPPED-ADDRESS (Binding).
    Mapped(SocketAddr),
    /// XOR-MAPPED-ADDRESS, OTHER-ADDRESS and RESPONSE-ORIGIN (a Binding
    /// to an RFC 5780 pair).
    Discovery {
        mapped: SocketAddr,
        other: SocketAddr,
        origin: SocketAddr,
    },
    /// The answer comes once the relay socket is open (Allocate).
    Later,
    /// The answer already sent, again (a retransmitted Allocate).
    Again(Vec<u8>),
}

/// Why a request gets no success answer.
pub(super) enum Refused {
    Error(ErrorCode),
    /// 420 naming the attributes turnd does not understand.
    Unknown(Vec<u16>),
    /// 300 with ALTERNATE-SERVER (draining).
    Alternate(SocketAddr),
    /// 401 or 438 with REALM and a fresh nonce, rate-limited per address.
    Challenge(ErrorCode),
    /// No answer at all (a request on an allocation still opening).
    Silent,
}

impl From<ErrorCode> for Refused {
    fn from(e: ErrorCode) -> Self {
        Self::Error(e)
    }
}

/// A Data indication carrying `data` from `peer` ([RFC 8656 §11.4](https://www.rfc-editor.org/rfc/rfc8656#section-11.4)).
pub(super) fn data_indication(rng: &mut impl Rng, peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    wire::data_indication(rng.random(), peer, data)
}

/// A RESERVATION-TOKEN value not in use (and never 0).
fn fresh_token(rng: &mut impl Rng, g: &Pool) -> u64 {
    loop {
        let t: u64 = rng.random();
        if t != 0 && !g.reservations.contains_key(&t) {
            return t;
        }
    }
}

/// Reserves the port after `addr` for a later RESERVATION-TOKEN Allocate
/// (RFC 8656 §7.2): its token goes to `opening`, its expiry to `timers`;
/// returns the address the driver binds and holds.
fn reserve_after(
    rng: &mut impl Rng,
    timers: &mut BinaryHeap<Reverse<(Instant, Timer)>>,
    g: &mut Pool,
    addr: SocketAddr,
    opening: &mut Opening,
    now: Now,
) -> SocketAddr {
    let t = fresh_token(rng, g);
    let r = Reservation {
        ip: addr.ip(),
        port: addr.port() + 1,
        expires: now.mono + RESERVATION_LIFETIME,
        held: None,
    };
    let next = r.addr();
    timers.push(Reverse((r.expires, Timer::Reservation { token: t })));
    g.reservations.insert(t, r);
    opening.token = Some(t);
    next
}

impl Server {
    /// Sends the answer to `req` (nothing for [`Reply::Later`] and
    /// [`Refused::Silent`]): signed with `key` when the request
    /// authenticated, FINGERPRINT when the request had one.
    pub(super) fn answer(
        &mut self,
        client: ClientAddr,
        req: &Message,
        outcome: Result<Reply, Refused>,
        key: Option<&Key>,
        now: Now,
    ) {
        self.respond(client, req.method, req.txid, req.fingerprint, outcome, key, now);
    }

    /// [`Server::answer`] for a request that is no longer at hand (an
    /// Allocate answered once its relay socket is open).
    #[allow(clippy::too_many_arguments)]
    fn respond(
        &mut self,
        client: ClientAddr,
        method: u16,
        txid: [u8; 12],
        fingerprint: bool,
        outcome: Result<Reply, Refused>,
        key: Option<&Key>,
        now: Now,
    ) {
        let mut data = Vec::new();
        match outcome {
            Ok(Reply::Later) | Err(Refused::Silent) => return,
            Ok(Reply::Again(d)) => data = d,
            Ok(reply) => {
                let mut e = Encoder::new(&mut data, method, Class::Success, txid);
                match reply {
                    Reply::Lifetime(l) => {
                        e.u32(attr::LIFETIME, u32::try_from(l.as_secs()).unwrap_or(u32::MAX));
                    }
                    Reply::Mapped(a) => {
                        e.xor_address(attr::XOR_MAPPED_ADDRESS, a);
                    }
                    Reply::Discovery { mapped, other, origin } => {
                        e.xor_address(attr::XOR_MAPPED_ADDRESS, mapped)
                            .address(attr::RESPONSE_ORIGIN, origin)
                            .address(attr::OTHER_ADDRESS, other);
                    }
                    _ => {}
                }
                e.finish(key.map(|k| &k[..]), fingerprint);
            }
            Err(Refused::Challenge(code)) => {
                // Anyone can provoke a challenge from a spoofed address:
                // beyond the per-address rate, no answer at all.
                if !self.challenges.take(client.remote.ip(), now.mono) {
                    self.stats.challenges_limited += 1;
                    return;
                }
                self.stats.error(code);
                let nonce = self.nonces.issue(client.remote.ip(), now.unix);
                let mut e = Encoder::new(&mut data, method, Class::Error, txid);
                // A 401 is what every unauthenticated request gets: no
                // reason phrase, every byte counts in its amplification.
                e.error(code, code != ErrorCode::Unauthorized)
                    .attr(attr::REALM, self.cfg.credentials.realm.as_bytes())
                    .attr(attr::NONCE, nonce.as_bytes());
                e.finish(None, fingerprint);
            }
            Err(refused) => {
                let code = match &refused {
                    Refused::Error(c) => *c,
                    Refused::Unknown(_) => ErrorCode::UnknownAttribute,
                    _ => ErrorCode::TryAlternate,
                };
                // Unsigned answers carry no reason phrase, and an unsigned
                // 420 is as cheap to provoke as a 401: the same limit.
                if key.is_none()
                    && code == ErrorCode::UnknownAttribute
                    && !self.challenges.take(client.remote.ip(), now.mono)
                {
                    self.stats.challenges_limited += 1;
                    return;
                }
                self.stats.error(code);
                let mut e = Encoder::new(&mut data, method, Class::Error, txid);
                e.error(code, key.is_some());
                match refused {
                    Refused::Unknown(list) => {
                        e.unknown_attributes(&list);
                    }
                    Refused::Alternate(a) => {
                        e.address(attr::ALTERNATE_SERVER, a);
                    }
                    _ => {}
                }
                e.finish(key.map(|k| &k[..]), fingerprint);
            }
        }
        self.push(Command::SendToClient { client, data });
    }

    /// A Binding request: its XOR-MAPPED-ADDRESS, or 420. Over UDP to an
    /// address RFC 5780 pairs (`stun.other-address`): CHANGE-REQUEST
    /// honoured (the answer leaves from the other IP and/or port), and
    /// OTHER-ADDRESS and RESPONSE-ORIGIN added while the answer stays
    /// within three times the request's size: a bare 20-byte IPv4 request
    /// gets all three addresses (56 bytes), so the common discovery tools
    /// work unpadded; that 2.8× reflection is the price of the opt-in
    /// (without `other-address` the answer stays ≤ 2×).
    pub(super) fn on_binding(&mut self, client: ClientAddr, req: &Message, now: Now) {
        let other = if client.transport.is_stream() {
            None
        } else {
            self.cfg.other_address(client.local)
        };
        if req.has_unknown_required() {
            let mut unknown = req.unknown_required();
            if other.is_some() {
                unknown.retain(|t| *t != attr::CHANGE_REQUEST && *t != attr::PADDING);
            }
            if !unknown.is_empty() {
                return self.answer(client, req, Err(Refused::Unknown(unknown)), None, now);
            }
        }
        let Some(other) = other else {
            return self.answer(client, req, Ok(Reply::Mapped(client.remote)), None, now);
        };
        let (change_ip, change_port) = match req.attr(attr::CHANGE_REQUEST) {
            None => (false, false),
            Some(_) => match req.change_request() {
                Some(flags) => flags,
                None => return self.answer(client, req, Err(ErrorCode::BadRequest.into()), None, now),
            },
        };
        if change_ip && other.ip() == client.local.ip() {
            // One address only: a change of IP cannot be honoured.
            let refused = Refused::Unknown(vec![attr::CHANGE_REQUEST]);
            return self.answer(client, req, Err(refused), None, now);
        }
        let origin = SocketAddr::new(
            if change_ip { other.ip() } else { client.local.ip() },
            if change_port { other.port() } else { client.local.port() },
        );
        // Each address attribute: 4 bytes of header, 8 or 20 of value.
        let address = if client.remote.is_ipv4() { 12 } else { 24 };
        let fingerprint = if req.fingerprint { 8 } else { 0 };
        let full = 20 + 3 * address + fingerprint;
        let reply = if full <= DISCOVERY_REFLECTION * req.raw().len() {
            // OTHER-ADDRESS names the server's address differing from
            // the answer's source in both IP and port.
            let other = self.cfg.other_address(origin).unwrap_or(other);
            Reply::Discovery {
                mapped: client.remote,
                other,
                origin,
            }
        } else {
            Reply::Mapped(client.remote)
        };
        let from = ClientAddr {
            local: origin,
            ..client
        };
        self.answer(from, req, Ok(reply), None, now);
    }

    /// The long-term credential check ([RFC 8489 §9.2.4](https://www.rfc-editor.org/rfc/rfc8489#section-9.2.4)).
    /// Requests on an existing allocation are checked against the key it was
    /// created with, so a call outlives the REST username's expiry.
    fn authenticate(&mut self, client: ClientAddr, req: &Message, now: Now) -> Result<Authed, Refused> {
        if !req.has_integrity() {
            return Err(Refused::Challenge(ErrorCode::Unauthorized));
        }
        let Some(creds) = req.credentials() else {
            return Err(ErrorCode::BadRequest.into());
        };
        if self.nonces.check(creds.nonce, client.remote.ip(), now.unix) == NonceCheck::Stale {
            self.stats.auth_failures[AuthFailure::StaleNonce as usize] += 1;
            return Err(Refused::Challenge(ErrorCode::StaleNonce));
        }
        let username = creds.username;
        let existing = self.by_client.get(&client).and_then(|id| self.allocs.get(id.index()));
        let keys = match existing {
            Some(a) if a.username == username => vec![a.key],
            Some(a) => {
                tracing::debug!(%client, %username, allocation_user = %a.username, "441: not the allocation's user");
                self.stats.auth_failures[AuthFailure::WrongUser as usize] += 1;
                return Err(ErrorCode::WrongCredentials.into());
            }
            None => match self.cfg.credentials.keys_for(username, now.unix) {
                Ok(k) => k,
                Err(why) => {
                    tracing::debug!(%client, %username, %why, "authentication failed");
                    let reason = match why {
                        AuthError::Expired => AuthFailure::Expired,
                        AuthError::UnknownUser => AuthFailure::UnknownUser,
                    };
                    self.stats.auth_failures[reason as usize] += 1;
                    return Err(Refused::Challenge(ErrorCode::Unauthorized));
                }
            },
        };
        match keys.into_iter().find(|k| req.check_integrity(&k[..])) {
            Some(key) => Ok(Authed {
                username: username.to_owned(),
                key,
            }),
            None => {
                tracing::debug!(%client, %username, "bad MESSAGE-INTEGRITY");
                self.stats.auth_failures[AuthFailure::BadIntegrity as usize] += 1;
                Err(Refused::Challenge(ErrorCode::Unauthorized))
            }
        }
    }

    /// A TURN request: checked in the order RFC 8656 asks, answered once.
    pub(super) fn on_request(&mut self, client: ClientAddr, req: &Message, now: Now) {
        let (outcome, key) = self.request(client, req, now);
        self.answer(client, req, outcome, key.as_ref(), now);
    }

    fn request(&mut self, client: ClientAddr, req: &Message, now: Now) -> (Result<Reply, Refused>, Option<Key>) {
        let Some(request) = req.request() else {
            return (Err(ErrorCode::BadRequest.into()), None);
        };
        if let Request::Allocate(_) = request {
            if let Some(a) = self.by_client.get(&client).and_then(|id| self.allocs.get(id.index())) {
                if a.allocate_txid == req.txid {
                    // A retransmission: the same answer again (RFC 8656 §7.2).
                    let again = match a.opening {
                        None => Ok(Reply::Again(a.response.clone())),
                        Some(_) => Err(Refused::Silent),
                    };
                    return (again, None);
                }
            }
        } else if !self.by_client.contains_key(&client) {
            // Refresh, CreatePermission or ChannelBind without an
            // allocation: 437 at once, unsigned and small, rather than a 401
            // with realm and nonce that a spoofed source could use for
            // amplification.
            return (Err(ErrorCode::AllocationMismatch.into()), None);
        }
        let auth = match self.authenticate(client, req, now) {
            Ok(a) => a,
            Err(r) => return (Err(r), None),
        };
        let key = Some(auth.key);
        if req.has_unknown_required() {
            return (Err(Refused::Unknown(req.unknown_required())), key);
        }
        let outcome = match request {
            Request::Allocate(a) => self.on_allocate(client, req, a, auth, now),
            other => match self.by_client.get(&client).copied() {
                None => Err(ErrorCode::AllocationMismatch.into()),
                Some(relay) if self.allocs.get(relay.index()).is_none_or(|a| a.opening.is_some()) => {
                    Err(Refused::Silent)
                }
                Some(relay) => {
                    if let Some(a) = self.allocs.get_mut(relay.index()) {
                        a.heard = now.mono; // its client speaks
                    }
                    match other {
                        Request::Refresh(r) => self.on_refresh(relay, r, now),
                        Request::CreatePermission(p) => self.on_create_permission(relay, &p, now),
                        Request::ChannelBind(c) => self.on_channel_bind(relay, c, now),
                        Request::Allocate(_) => Err(ErrorCode::BadRequest.into()),
                    }
                }
            },
        };
        (outcome, key)
    }

    fn on_allocate(
        &mut self,
        client: ClientAddr,
        req: &Message,
        request: Result<Allocate, ErrorCode>,
        auth: Authed,
        now: Now,
    ) -> Result<Reply, Refused> {
        if self.by_client.contains_key(&client) {
            return Err(ErrorCode::AllocationMismatch.into());
        }
        // Shutting down (RFC 8489 §10: ALTERNATE-SERVER only after the
        // request authenticated).
        if self.shared.draining() {
            tracing::info!(%client, user = %auth.username, "allocation refused: shutting down");
            self.stats.refused[Refusal::Draining as usize] += 1;
            let sibling = self.shared.alternate(client.transport, client.local);
            return Err(match sibling.or(self.cfg.alternate_server) {
                Some(alt) => Refused::Alternate(alt),
                None => ErrorCode::ShuttingDown.into(),
            });
        }
        let request = request?;
        let (even, reserve_next) = match request.even_port {
            None => (false, false),
            Some(e) => (true, e.reserve_next),
        };
        // Allocate lifetime: min(requested, max), but never under the default
        // (RFC 8656 §7.2).
        let lifetime = request
            .lifetime
            .map_or(self.cfg.default_lifetime, |r| r.min(self.cfg.max_lifetime))
            .max(self.cfg.default_lifetime.min(self.cfg.max_lifetime));
        let quota_user = self.cfg.credentials.quota_name(&auth.username).to_owned();
        let (max_user, max_total) = (self.cfg.max_allocations_per_user, self.cfg.max_allocations);
        let ip = match request.token {
            Some(_) => None,
            None => Some(
                self.relay_ip(request.family == Family::V6, client.local.ip())
                    .ok_or(ErrorCode::AddressFamilyNotSupported)?,
            ),
        };
        let mut opening = Opening {
            fingerprint: req.fingerprint,
            lifetime,
            even,
            reserve_next,
            from_token: request.token.is_some(),
            attempts: 1,
            token: None,
            first_open: false,
        };
        // Dual stack: an IPv6 relay as well, when this host has an IPv6
        // relay address (else the answer says 440 for that family).
        let v6_ip = if request.additional_v6 {
            self.relay_ip(true, client.local.ip())
        } else {
            None
        };
        // Quota, then a relay port (or the reserved one), then the next
        // port held when asked: all or nothing.
        let shared = self.shared.clone();
        let (rng, timers) = (&mut self.rng, &mut self.timers);
        let taken = shared.with(|g| {
            let admitted = g
                .admit(&quota_user, max_user, max_total, now.mono)
                .map_err(|full| match full {
                    QuotaFull::User => (ErrorCode::AllocationQuotaReached, Refusal::UserQuota),
                    _ => (ErrorCode::InsufficientCapacity, Refusal::TotalQuota),
                })?;
            // A redeemed reservation brings its held socket along.
            let (addr, reserved) = match (request.token, ip) {
                (Some(t), _) => match g.reservations.remove(&t) {
                    Some(r) if r.expires > now.mono => (Some(r.addr()), r.held),
                    Some(r) => {
                        g.ports.release(r.port);
                        (None, None)
                    }
                    None => (None, None),
                },
                (None, Some(ip)) => (
                    g.ports.take(rng, even, reserve_next).map(|p| SocketAddr::new(ip, p)),
                    None,
                ),
                (None, None) => (None, None),
            };
            let Some(addr) = addr else {
                g.unadmit(&quota_user, &admitted);
                return Err((ErrorCode::InsufficientCapacity, Refusal::NoRelayPort));
            };
            let hold = reserve_next.then(|| reserve_after(rng, timers, g, addr, &mut opening, now));
            let second = v6_ip.map(|ip| g.ports.take(rng, false, false).map(|p| SocketAddr::new(ip, p)));
            Ok((admitted, addr, hold, reserved, second))
        });
        let (admitted, addr, hold, reserved, second) = match taken {
            Ok(t) => t,
            Err((code, why)) => {
                self.stats.refused[why as usize] += 1;
                tracing::info!(%client, user = %auth.username, code = code.code(), reason = why.label(), "allocation refused");
                return Err(code.into());
            }
        };
        let serial = self.next_serial;
        self.next_serial += 1;
        let entry = self.allocs.vacant_entry();
        let relay = RelayId(entry.key() as u32);
        let second_refused = match (request.additional_v6, v6_ip, second) {
            (false, _, _) => None,
            (true, None, _) => Some(ErrorCode::AddressFamilyNotSupported),
            (true, Some(_), Some(None)) => Some(ErrorCode::InsufficientCapacity),
            (true, Some(_), _) => None,
        };
        let second = second.flatten().map(|relay| Second {
            relay,
            advertised: relay,
            open: false,
        });
        entry.insert(Allocation {
            serial,
            client,
            relay: addr,
            advertised: addr,
            second,
            second_refused,
            username: auth.username,
            quota_user: quota_user.clone(),
            key: auth.key,
            expires: now.mono + lifetime,
            opening: Some(opening),
            allocate_txid: req.txid,
            response: Vec::new(),
            scheduled: None,
            created: now.mono,
            to_peer: Default::default(),
            to_client: Default::default(),
            budget: admitted.budget,
            refused: Vec::new(),
            heard: now.mono,
            idle: false,
        });
        self.by_client.insert(client, relay);
        self.channels.open(relay, client);
        if let Some(old) = admitted.replaces {
            tracing::info!(%client, user = %quota_user, "quota full: this allocation replaces an idle one of the same user");
            if old.worker == self.worker {
                self.delete_replaced(now.mono);
            }
        }
        self.keep_sweeping(now.mono);
        self.push(Command::OpenRelay {
            relay,
            addr,
            hold,
            reserved,
        });
        if let Some(s) = second {
            self.push(Command::OpenRelay {
                relay: relay.second(),
                addr: s.relay,
                hold: None,
                reserved: None,
            });
        }
        Ok(Reply::Later)
    }

    /// Call right after executing [`Command::OpenRelay`] with its outcome:
    /// the local address bound (and the socket held for the reservation,
    /// when asked to hold one), or why binding failed.
    pub fn handle_relay_opened(&mut self, relay: RelayId, result: Result<Opened, OpenError>, now: Now) {
        if relay.is_second() {
            return self.second_opened(relay, result);
        }
        let Some(a) = self.allocs.get_mut(relay.index()) else {
            return;
        };
        let Some(mut opening) = a.opening.take() else { return };
        let client = a.client;
        let bound = match result {
            Ok(Opened { bound, held }) => {
                // The reservation keeps its socket from now on.
                if let (Some(t), Some(held)) = (opening.token, held) {
                    self.shared.with(|g| {
                        if let Some(r) = g.reservations.get_mut(&t) {
                            r.held = Some(held);
                        }
                    });
                }
                bound
            }
            Err(e) => {
                let retry = e == OpenError::InUse && !opening.from_token && opening.attempts < OPEN_ATTEMPTS;
                let shared = self.shared.clone();
                let (rng, timers) = (&mut self.rng, &mut self.timers);
                let again = shared.with(|g| {
                    // The reservation handed out with this attempt goes; a
                    // retry makes a new one.
                    if let Some(t) = opening.token.take() {
                        if let Some(r) = g.reservations.remove(&t) {
                            g.ports.release(r.port);
                        }
                    }
                    // Take the new port before giving the busy one back, so
                    // the same busy port is not picked again at once.
                    let p = if retry {
                        g.ports.take(rng, opening.even, opening.reserve_next)?
                    } else {
                        return None;
                    };
                    g.ports.release(a.relay.port());
                    a.relay.set_port(p);
                    let addr = a.relay;
                    opening.attempts += 1;
                    let hold = opening
                        .reserve_next
                        .then(|| reserve_after(rng, timers, g, addr, &mut opening, now));
                    Some((addr, hold))
                });
                if let Some((addr, hold)) = again {
                    a.opening = Some(opening);
                    self.push(Command::OpenRelay {
                        relay,
                        addr,
                        hold,
                        reserved: None,
                    });
                    return;
                }
                let (key, txid, fingerprint) = (a.key, a.allocate_txid, opening.fingerprint);
                tracing::warn!(%client, relay = %a.relay, ?e, "could not open a relay socket");
                // Still "opening": deleting it releases port and quota but
                // closes no socket.
                a.opening = Some(opening);
                self.delete_allocation(relay, "relay socket failed", now.mono);
                self.stats.refused[Refusal::NoRelayPort as usize] += 1;
                let refused = Err(ErrorCode::InsufficientCapacity.into());
                self.respond(client, method::ALLOCATE, txid, fingerprint, refused, Some(&key), now);
                return;
            }
        };
        let advertised = self.advertised(bound);
        let Some(a) = self.allocs.get_mut(relay.index()) else {
            return;
        };
        a.relay = bound;
        a.advertised = advertised;
        if a.second.is_some_and(|s| !s.open) {
            // The answer waits for the IPv6 relay.
            opening.first_open = true;
            a.opening = Some(opening);
            return;
        }
        self.finish_allocate(relay, opening);
    }

    /// The outcome of opening a dual-stack allocation's IPv6 relay. Without
    /// it the allocation goes on with IPv4 alone, and says why
    /// (ADDRESS-ERROR-CODE).
    fn second_opened(&mut self, id: RelayId, result: Result<Opened, OpenError>) {
        let relay = id.first();
        let pending = self
            .allocs
            .get(relay.index())
            .is_some_and(|a| a.opening.is_some() && a.second.is_some_and(|s| !s.open));
        if !pending {
            // The allocation went (its IPv4 relay could not open) meanwhile.
            if result.is_ok() {
                self.push(Command::CloseRelay { relay: id });
            }
            return;
        }
        let advertised = result.as_ref().ok().map(|o| self.advertised(o.bound));
        let Some(a) = self.allocs.get_mut(relay.index()) else {
            return;
        };
        match (result, advertised) {
            (Ok(o), Some(advertised)) => {
                a.second = Some(Second {
                    relay: o.bound,
                    advertised,
                    open: true,
                });
            }
            (result, _) => {
                let client = a.client;
                if let Some(s) = a.second.take() {
                    tracing::warn!(%client, relay = %s.relay, error = ?result.err(), "could not open the IPv6 relay socket");
                    self.shared.with(|g| g.ports.release(s.relay.port()));
                }
                a.second_refused = Some(ErrorCode::InsufficientCapacity);
            }
        }
        let Some(a) = self.allocs.get_mut(relay.index()) else {
            return;
        };
        if a.opening.as_ref().is_some_and(|o| o.first_open) {
            if let Some(opening) = a.opening.take() {
                self.finish_allocate(relay, opening);
            }
        }
    }

    /// Answers an Allocate whose relay sockets are open, and registers them.
    fn finish_allocate(&mut self, relay: RelayId, opening: Opening) {
        let Some(a) = self.allocs.get_mut(relay.index()) else {
            return;
        };
        let (client, bound, advertised) = (a.client, a.relay, a.advertised);
        let mut data = Vec::new();
        let mut e = Encoder::new(&mut data, method::ALLOCATE, Class::Success, a.allocate_txid);
        e.xor_address(attr::XOR_RELAYED_ADDRESS, advertised);
        if let Some(s) = a.second {
            e.xor_address(attr::XOR_RELAYED_ADDRESS, s.advertised);
        }
        if let Some(code) = a.second_refused {
            e.address_error_v6(code);
        }
        e.u32(
            attr::LIFETIME,
            u32::try_from(opening.lifetime.as_secs()).unwrap_or(u32::MAX),
        )
        .xor_address(attr::XOR_MAPPED_ADDRESS, client.remote);
        if let Some(t) = opening.token {
            e.attr(attr::RESERVATION_TOKEN, &t.to_be_bytes());
        }
        e.finish(Some(&a.key[..]), opening.fingerprint);
        a.response = data.clone();
        let expires = a.expires;
        let handle = RelayHandle {
            worker: self.worker,
            relay,
            serial: a.serial,
        };
        let second = a.second;
        self.shared.with(|g| {
            g.register_relay(bound, advertised, handle);
            if let Some(s) = second {
                g.register_relay(s.relay, s.advertised, handle);
            }
        });
        match second {
            Some(s) => {
                tracing::info!(%client, relay = %advertised, relay6 = %s.advertised, user = %a.username, lifetime = opening.lifetime.as_secs(), "allocation created")
            }
            None => {
                tracing::info!(%client, relay = %advertised, user = %a.username, lifetime = opening.lifetime.as_secs(), "allocation created")
            }
        }
        self.stats.allocations_created += 1;
        self.push(Command::SendToClient { client, data });
        self.push(Command::Event(Event::AllocationCreated {
            client,
            relay,
            relayed: advertised,
        }));
        self.schedule(relay, expires);
    }

    fn on_refresh(&mut self, relay: RelayId, req: Refresh, now: Now) -> Result<Reply, Refused> {
        let Some(a) = self.allocs.get(relay.index()) else {
            return Err(Refused::Silent);
        };
        // A dual-stack allocation keeps one lifetime for both relays: a
        // Refresh naming either family refreshes (or deletes) it whole.
        let relays_v6 = |v6: bool| v6 == a.relay.is_ipv6() || a.second.is_some_and(|s| v6 == s.relay.is_ipv6());
        match req.family {
            Some(Family::Unknown) => return Err(ErrorCode::AddressFamilyNotSupported.into()),
            Some(f) if !relays_v6(f == Family::V6) => {
                tracing::debug!(client = %a.client, family = ?f, "443: a Refresh for a family the allocation has no relay of");
                return Err(ErrorCode::PeerAddressFamilyMismatch.into());
            }
            _ => {}
        }
        // Refresh lifetime: 0 deletes, else min(requested, max); absent means
        // the default (RFC 8656 §7.3).
        let lifetime = match req.lifetime {
            Some(d) if d.is_zero() => Duration::ZERO,
            Some(d) => d.min(self.cfg.max_lifetime),
            None => self.cfg.default_lifetime.min(self.cfg.max_lifetime),
        };
        if lifetime.is_zero() {
            self.stats.allocations_deleted += 1;
            self.delete_allocation(relay, "deleted by client", now.mono);
        } else if let Some(a) = self.allocs.get_mut(relay.index()) {
            a.expires = now.mono + lifetime;
            // An earlier expiry than scheduled needs a new timer.
            let at = a.expires;
            self.schedule(relay, at);
        }
        Ok(Reply::Lifetime(lifetime))
    }

    /// The request's XOR-PEER-ADDRESSes, in order: 400 for one that does
    /// not parse (or none), 443 for the wrong family, 403 for a refused one.
    /// A live relayed address of this turnd (any worker's, bound or
    /// advertised) is always permitted: two people on one turnd can relay
    /// to each other whatever its addresses are. Any other address of
    /// turnd's own host never is, whatever the policy allows (its listeners
    /// would be a loop). A 403 is remembered by the allocation (the page
    /// asks for them to say why a call failed) and logged.
    fn peers(&mut self, peers: &Peers, relay: RelayId) -> Result<Vec<SocketAddr>, ErrorCode> {
        let Some(a) = self.allocs.get(relay.index()) else {
            return Err(ErrorCode::AllocationMismatch);
        };
        if peers.too_many {
            return Err(ErrorCode::BadRequest);
        }
        let mut out = Vec::with_capacity(peers.len());
        for peer in peers.iter() {
            let peer = peer.ok_or(ErrorCode::BadRequest)?;
            // An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is an IPv4
            // peer in IPv6 spelling: no IPv6 relay can reach it (RFC 4291
            // §2.5.5.2), and the policy would judge it as IPv4. A family
            // mismatch (RFC 8656 §7.2, 443), whatever relays it has.
            let mapped = matches!(peer.ip(), IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
            // A family the allocation has a relay for (both, dual stack).
            if mapped || a.relay_for(relay, peer).is_none() {
                tracing::debug!(client = %a.client, %peer, relay = %a.relay, second = ?a.second, "443: no relay of the peer's family");
                return Err(ErrorCode::PeerAddressFamilyMismatch);
            }
            if !self.cfg.peer_allowed(peer) && self.shared.relay_at(peer).is_none() {
                let why = if self.cfg.own.contains(peer.ip()) {
                    "turnd's own address, not a live relay"
                } else {
                    "denied by the peer policy"
                };
                tracing::info!(client = %a.client, user = %a.username, %peer, why, "permission refused");
                if let Some(a) = self.allocs.get_mut(relay.index()) {
                    a.refused(peer);
                }
                return Err(ErrorCode::Forbidden);
            }
            out.push(peer);
        }
        if out.is_empty() {
            return Err(ErrorCode::BadRequest);
        }
        Ok(out)
    }

    fn on_create_permission(&mut self, relay: RelayId, peers: &Peers, now: Now) -> Result<Reply, Refused> {
        let peers = self.peers(peers, relay)?;
        let expires = now.mono + PERMISSION_LIFETIME;
        for p in peers {
            let reach = self.cfg.reach(p.ip());
            self.channels.permit(relay, p.ip(), expires, reach);
        }
        self.schedule(relay, expires);
        Ok(Reply::Empty)
    }

    fn on_channel_bind(&mut self, relay: RelayId, req: ChannelBind, now: Now) -> Result<Reply, Refused> {
        let number = req.number.ok_or(ErrorCode::BadRequest)?;
        let max = if self.cfg.rfc5766_channels {
            CHANNEL_MAX_RFC5766
        } else {
            CHANNEL_MAX
        };
        if !(CHANNEL_MIN..=max).contains(&number) {
            return Err(ErrorCode::BadRequest.into());
        }
        let peer = match self.peers(&req.peers, relay)?[..] {
            [p] => p,
            _ => return Err(ErrorCode::BadRequest.into()),
        };
        // Rebinding rules (RFC 8656 §12.2): the table refuses a number bound
        // to another peer or a peer bound to another number.
        let ordinary = self.cfg.peer_allowed(peer);
        self.channels
            .bind(relay, number, peer, self.cfg.reach(peer.ip()), ordinary, now.mono)
            .map_err(|e| match e {
                BindError::Taken => ErrorCode::BadRequest,
                BindError::NoAllocation => ErrorCode::AllocationMismatch,
            })?;
        // The permission ends first (300 s against 600 s for the channel).
        self.schedule(relay, now.mono + PERMISSION_LIFETIME.min(CHANNEL_LIFETIME));
        Ok(Reply::Empty)
    }

    pub(super) fn on_send_indication<'a>(
        &mut self,
        client: ClientAddr,
        buf: &'a [u8],
        req: &Message,
        now: Now,
    ) -> Option<Transmit<'a>> {
        let relay = *self.by_client.get(&client)?;
        let a = self.allocs.get(relay.index())?;
        if a.opening.is_some() || req.has_unknown_required() {
            return None;
        }
        let (peer, data) = req.send()?;
        let Some(permission) = self.channels.permission(relay, peer.ip(), now.mono) else {
            self.stats.dropped += 1;
            return None;
        };
        let policy = &self.cfg.policy;
        let internal = !permission.ordinary_for(peer, |a| policy.admits_port(a));
        self.relay_to_peer(client, relay, peer, internal, &buf[data], now)
    }
}
