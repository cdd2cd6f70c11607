//! The request handlers: Binding ([RFC 8489 §6.3](https://www.rfc-editor.org/rfc/rfc8489#section-6.3)),
//! authentication ([RFC 8489 §9.2](https://www.rfc-editor.org/rfc/rfc8489#section-9.2)) and the
//! TURN methods ([RFC 8656 §7–§12](https://www.rfc-editor.org/rfc/rfc8656#section-7)).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use stun::attributes::*;
use stun::error_code::*;
use stun::message::{
    MessageType, Setter, CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE,
    METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_DATA, METHOD_REFRESH,
};
use stun::textattrs::TextAttribute;
use stun::uattrs::UnknownAttributes;
use stun::xoraddr::XorMappedAddress;
use turn::proto::data::Data;
use turn::proto::lifetime::Lifetime;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::relayaddr::RelayedAddress;
use turn::proto::rsrvtoken::ReservationToken;

use crate::auth::{AuthError, Key};

use super::addr::{ClientAddr, RelayHandle, RelayId};
use super::allocation::{
    Allocation, Channel, Opening, PeerRoute, CHANNEL_LIFETIME, PERMISSION_LIFETIME, RESERVATION_LIFETIME,
};
use super::msg::{self, Decoded, CHANNEL_MAX, CHANNEL_MAX_RFC5766, CHANNEL_MIN};
use super::nonce::NonceCheck;
use super::server::{ClientRoute, Command, Now, OpenError, Server, Timer, Transmit};
use super::shared::{QuotaFull, Reservation};
use super::stats::{AuthFailure, Refusal};

/// How many ports an Allocate tries when the host already uses the chosen one.
const OPEN_ATTEMPTS: u32 = 8;
const PROTO_UDP: u8 = 17;

/// An authenticated request's credentials.
struct Authed {
    username: String,
    key: Key,
}

/// A Data indication carrying `data` from `peer` ([RFC 8656 §11.4](https://www.rfc-editor.org/rfc/rfc8656#section-11.4)).
pub(super) fn data_indication(rng: &mut impl Rng, peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let txid: [u8; 12] = rng.random();
    msg::build(
        MessageType::new(METHOD_DATA, CLASS_INDICATION),
        txid,
        &[
            &PeerAddress {
                ip: peer.ip(),
                port: peer.port(),
            },
            &Data(data.to_vec()),
        ],
        None,
        false,
    )
}

/// ALTERNATE-SERVER ([RFC 8489 §14.15](https://www.rfc-editor.org/rfc/rfc8489#section-14.15)).
struct AlternateServer(SocketAddr);

impl Setter for AlternateServer {
    fn add_to(&self, m: &mut stun::message::Message) -> Result<(), stun::Error> {
        let a = stun::addr::MappedAddress {
            ip: self.0.ip(),
            port: self.0.port(),
        };
        a.add_to_as(m, ATTR_ALTERNATE_SERVER)
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        300 => "Try Alternate",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        486 => "Allocation Quota Reached",
        508 => "Insufficient Capacity",
        _ => "Error",
    }
}

/// A RESERVATION-TOKEN value not in use (and never 0).
fn fresh_token(rng: &mut impl Rng, g: &super::shared::Inner) -> u64 {
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
    g: &mut super::shared::Inner,
    addr: SocketAddr,
    opening: &mut Opening,
    now: Now,
) -> SocketAddr {
    let t = fresh_token(rng, g);
    let r = Reservation {
        ip: addr.ip(),
        port: addr.port() + 1,
        expires: now.mono + RESERVATION_LIFETIME,
    };
    g.reservations.insert(t, r);
    opening.token = Some(t);
    timers.push(Reverse((r.expires, Timer::Reservation { token: t })));
    SocketAddr::new(r.ip, r.port)
}

fn lifetime_attr(value: &[u8]) -> Option<Duration> {
    let b: [u8; 4] = value.get(..4)?.try_into().ok()?;
    Some(Duration::from_secs(u32::from_be_bytes(b) as u64))
}

impl Server {
    fn reply(&mut self, client: ClientAddr, req: &Decoded, success: bool, attrs: &[&dyn Setter], key: Option<&Key>) {
        let class = if success {
            CLASS_SUCCESS_RESPONSE
        } else {
            CLASS_ERROR_RESPONSE
        };
        let data = msg::build(
            MessageType::new(req.msg.typ.method, class),
            req.txid(),
            attrs,
            key.map(|k| k.as_slice()),
            req.has_fingerprint,
        );
        self.commands.push_back(Command::SendToClient { client, data });
    }

    /// An error answer; signed with `key` when the request authenticated.
    /// Unsigned answers carry no reason phrase: anyone can provoke them
    /// from a spoofed address, so they stay as small as the code allows.
    fn error(&mut self, client: ClientAddr, req: &Decoded, code: u16, key: Option<&Key>) {
        let e = self.error_code(code, if key.is_some() { reason(code) } else { "" });
        self.reply(client, req, false, &[&e], key);
    }

    /// ERROR-CODE for an answer about to be sent, counted for `/metrics`.
    fn error_code(&mut self, code: u16, reason: &str) -> ErrorCodeAttribute {
        self.stats.error(code);
        ErrorCodeAttribute {
            code: ErrorCode(code),
            reason: reason.as_bytes().to_vec(),
        }
    }

    /// 401 or 438 with a fresh nonce, unless the client's address has used
    /// up its challenges for now (then nothing: an attacker spoofing a
    /// victim's address gets no reflection past the limit). A 401 carries no
    /// reason phrase: it is the answer an unauthenticated request gets, and
    /// every byte counts in its amplification factor.
    fn challenge(&mut self, client: ClientAddr, req: &Decoded, code: u16, now: Now) {
        if !self.challenges.take(client.remote.ip(), now.mono) {
            self.stats.challenges_limited += 1;
            return;
        }
        let e = self.error_code(code, if code == 401 { "" } else { reason(code) });
        let realm = TextAttribute::new(ATTR_REALM, self.cfg.credentials.realm.clone());
        let nonce = TextAttribute::new(ATTR_NONCE, self.nonces.issue(client.remote.ip(), now.unix));
        self.reply(client, req, false, &[&e, &realm, &nonce], None);
    }

    /// 420 for comprehension-required attributes turnd does not know
    /// ([RFC 8489 §6.3.1](https://www.rfc-editor.org/rfc/rfc8489#section-6.3.1)).
    /// Returns whether the request got it (or, unsigned and over the
    /// per-address challenge limit, nothing): an unsigned 420 is as cheap to
    /// provoke from a spoofed address as a 401, so it is as small (no reason
    /// phrase) and counts against the same limit.
    fn unknown_attributes(&mut self, client: ClientAddr, req: &Decoded, key: Option<&Key>, now: Now) -> bool {
        let unknown = req.unknown_required();
        if unknown.is_empty() {
            return false;
        }
        if key.is_none() && !self.challenges.take(client.remote.ip(), now.mono) {
            self.stats.challenges_limited += 1;
            return true;
        }
        let e = self.error_code(420, if key.is_some() { reason(420) } else { "" });
        self.reply(client, req, false, &[&e, &UnknownAttributes(unknown)], key);
        true
    }

    pub(super) fn on_binding(&mut self, client: ClientAddr, req: &Decoded, now: Now) {
        if self.unknown_attributes(client, req, None, now) {
            return;
        }
        let mapped = XorMappedAddress {
            ip: client.remote.ip(),
            port: client.remote.port(),
        };
        self.reply(client, req, true, &[&mapped], None);
    }

    /// The long-term credential check ([RFC 8489 §9.2.4](https://www.rfc-editor.org/rfc/rfc8489#section-9.2.4)).
    /// Requests on an existing allocation are checked against the key it was
    /// created with, so a call outlives the REST username's expiry.
    fn authenticate(&mut self, client: ClientAddr, req: &mut Decoded, now: Now) -> Option<Authed> {
        if !req.has_integrity {
            self.challenge(client, req, 401, now);
            return None;
        }
        let (Some(username), Some(_), Some(nonce)) =
            (req.text(ATTR_USERNAME), req.text(ATTR_REALM), req.text(ATTR_NONCE))
        else {
            self.error(client, req, 400, None);
            return None;
        };
        let username = username.to_owned();
        if self.nonces.check(nonce, client.remote.ip(), now.unix) == NonceCheck::Stale {
            self.stats.auth_failures[AuthFailure::StaleNonce as usize] += 1;
            self.challenge(client, req, 438, now);
            return None;
        }
        let existing = self.by_client.get(&client).and_then(|id| self.allocs.get(id.index()));
        let keys = match existing {
            Some(a) if a.username == username => vec![a.key],
            Some(a) => {
                tracing::debug!(%client, %username, allocation_user = %a.username, "441: not the allocation's user");
                self.stats.auth_failures[AuthFailure::WrongUser as usize] += 1;
                self.error(client, req, 441, None);
                return None;
            }
            None => match self.cfg.credentials.keys_for(&username, now.unix) {
                Ok(k) => k,
                Err(why) => {
                    tracing::debug!(%client, %username, %why, "authentication failed");
                    let reason = match why {
                        AuthError::Expired => AuthFailure::Expired,
                        AuthError::UnknownUser => AuthFailure::UnknownUser,
                    };
                    self.stats.auth_failures[reason as usize] += 1;
                    self.challenge(client, req, 401, now);
                    return None;
                }
            },
        };
        match keys.into_iter().find(|k| req.check_integrity(&k[..])) {
            Some(key) => Some(Authed { username, key }),
            None => {
                tracing::debug!(%client, %username, "bad MESSAGE-INTEGRITY");
                self.stats.auth_failures[AuthFailure::BadIntegrity as usize] += 1;
                self.challenge(client, req, 401, now);
                None
            }
        }
    }

    pub(super) fn on_request(&mut self, client: ClientAddr, req: &mut Decoded, now: Now) {
        let method = req.msg.typ.method;
        let known = [
            METHOD_ALLOCATE,
            METHOD_REFRESH,
            METHOD_CREATE_PERMISSION,
            METHOD_CHANNEL_BIND,
        ];
        if !known.contains(&method) {
            self.error(client, req, 400, None);
            return;
        }
        if method == METHOD_ALLOCATE {
            if let Some(a) = self.by_client.get(&client).and_then(|id| self.allocs.get(id.index())) {
                if a.allocate_txid == req.txid() {
                    // A retransmission: the same answer again (RFC 8656 §7.2).
                    if a.opening.is_none() {
                        let data = a.response.clone();
                        self.commands.push_back(Command::SendToClient { client, data });
                    }
                    return;
                }
            }
        } else if !self.by_client.contains_key(&client) {
            // Refresh, CreatePermission or ChannelBind without an
            // allocation: 437 at once, unsigned and small, rather than a 401
            // with realm and nonce that a spoofed source could use for
            // amplification.
            self.error(client, req, 437, None);
            return;
        }
        let Some(auth) = self.authenticate(client, req, now) else {
            return;
        };
        if self.unknown_attributes(client, req, Some(&auth.key), now) {
            return;
        }
        if method == METHOD_ALLOCATE {
            self.on_allocate(client, req, auth, now);
            return;
        }
        let Some(&relay) = self.by_client.get(&client) else {
            self.error(client, req, 437, Some(&auth.key));
            return;
        };
        if self.allocs.get(relay.index()).is_none_or(|a| a.opening.is_some()) {
            return;
        }
        if method == METHOD_REFRESH {
            self.on_refresh(client, relay, req, &auth.key, now);
        } else if method == METHOD_CREATE_PERMISSION {
            self.on_create_permission(client, relay, req, &auth.key, now);
        } else {
            self.on_channel_bind(client, relay, req, &auth.key, now);
        }
    }

    fn on_allocate(&mut self, client: ClientAddr, req: &Decoded, auth: Authed, now: Now) {
        let key = auth.key;
        if self.by_client.contains_key(&client) {
            self.error(client, req, 437, Some(&key));
            return;
        }
        // Shutting down (RFC 8489 §10: ALTERNATE-SERVER only after the
        // request authenticated).
        if self.shared.is_draining() {
            tracing::info!(%client, user = %auth.username, "allocation refused: shutting down");
            self.stats.refused[Refusal::Draining as usize] += 1;
            return match self.cfg.alternate_server {
                Some(alt) => {
                    let e = self.error_code(300, reason(300));
                    self.reply(client, req, false, &[&e, &AlternateServer(alt)], Some(&key));
                }
                None => {
                    let e = self.error_code(508, "Server Shutting Down");
                    self.reply(client, req, false, &[&e], Some(&key));
                }
            };
        }
        match req.attr(ATTR_REQUESTED_TRANSPORT) {
            None => return self.error(client, req, 400, Some(&key)),
            Some(v) if v.first() != Some(&PROTO_UDP) => return self.error(client, req, 442, Some(&key)),
            Some(_) => {}
        }
        let token = req.attr(ATTR_RESERVATION_TOKEN);
        let even = req.attr(ATTR_EVEN_PORT);
        let family = req.attr(ATTR_REQUESTED_ADDRESS_FAMILY);
        if token.is_some() && (even.is_some() || family.is_some()) {
            return self.error(client, req, 400, Some(&key));
        }
        let want_v6 = match family.map(|f| f.first().copied()) {
            None => false,
            Some(Some(0x01)) => false,
            Some(Some(0x02)) => true,
            Some(_) => return self.error(client, req, 440, Some(&key)),
        };
        let token = match token.map(<[u8; 8]>::try_from) {
            None => None,
            Some(Ok(t)) => Some(u64::from_be_bytes(t)),
            Some(Err(_)) => return self.error(client, req, 400, Some(&key)),
        };
        let (even, reserve_next) = match even {
            None => (false, false),
            Some(v) => (true, v.first().is_some_and(|b| b & 0x80 != 0)),
        };
        let requested = req.attr(ATTR_LIFETIME).and_then(lifetime_attr);
        // Allocate lifetime: min(requested, max), but never under the default
        // (RFC 8656 §7.2).
        let lifetime = requested
            .map_or(self.cfg.default_lifetime, |r| r.min(self.cfg.max_lifetime))
            .max(self.cfg.default_lifetime.min(self.cfg.max_lifetime));

        let quota_user = self.cfg.credentials.quota_name(&auth.username).to_owned();
        let (max_user, max_total) = (self.cfg.max_allocations_per_user, self.cfg.max_allocations);
        let ip = if token.is_none() {
            match self.relay_ip(want_v6, client.local.ip()) {
                Some(ip) => Some(ip),
                None => return self.error(client, req, 440, Some(&key)),
            }
        } else {
            None
        };
        let shared = self.shared.clone();
        let mut g = shared.lock();
        let budget = match g.admit(&quota_user, max_user, max_total, now.mono) {
            Ok(budget) => budget,
            Err(full) => {
                drop(g);
                let (code, why) = match full {
                    QuotaFull::User => (486, Refusal::UserQuota),
                    _ => (508, Refusal::TotalQuota),
                };
                self.stats.refused[why as usize] += 1;
                tracing::info!(%client, user = %auth.username, code, "allocation refused: quota");
                return self.error(client, req, code, Some(&key));
            }
        };
        let addr = match (token, ip) {
            (Some(t), _) => match g.reservations.remove(&t) {
                Some(r) if r.expires > now.mono => Some(SocketAddr::new(r.ip, r.port)),
                Some(r) => {
                    g.ports.release(r.port);
                    None
                }
                None => None,
            },
            (None, Some(ip)) => g
                .ports
                .take(&mut self.rng, even, reserve_next)
                .map(|p| SocketAddr::new(ip, p)),
            (None, None) => None,
        };
        let Some(addr) = addr else {
            g.release(&quota_user);
            drop(g);
            tracing::info!(%client, user = %auth.username, "allocation refused: no relay port or reservation");
            self.stats.refused[Refusal::NoRelayPort as usize] += 1;
            return self.error(client, req, 508, Some(&key));
        };
        let mut opening = Opening {
            fingerprint: req.has_fingerprint,
            lifetime,
            even,
            reserve_next,
            from_token: token.is_some(),
            attempts: 1,
            token: None,
        };
        let hold =
            reserve_next.then(|| reserve_after(&mut self.rng, &mut self.timers, &mut g, addr, &mut opening, now));
        drop(g);
        let serial = self.next_serial;
        self.next_serial += 1;
        let entry = self.allocs.vacant_entry();
        let relay = RelayId(entry.key() as u32);
        entry.insert(Allocation {
            serial,
            client,
            relay: addr,
            advertised: addr,
            username: auth.username,
            quota_user,
            key,
            expires: now.mono + lifetime,
            opening: Some(opening),
            allocate_txid: req.txid(),
            response: Vec::new(),
            perms: Default::default(),
            channels: Default::default(),
            by_peer: Default::default(),
            scheduled: None,
            created: now.mono,
            to_peer: Default::default(),
            to_client: Default::default(),
            budget,
            refused: Vec::new(),
        });
        self.by_client.insert(client, relay);
        self.commands.push_back(Command::OpenRelay { relay, addr, hold });
    }

    /// Call right after executing [`Command::OpenRelay`] with its outcome:
    /// the local address bound, or why binding failed.
    pub fn handle_relay_opened(&mut self, relay: RelayId, result: Result<SocketAddr, OpenError>, now: Now) {
        let Some(a) = self.allocs.get_mut(relay.index()) else {
            return;
        };
        let Some(mut opening) = a.opening.take() else { return };
        let client = a.client;
        let bound = match result {
            Ok(bound) => bound,
            Err(e) => {
                let mut g = self.shared.lock();
                // The reservation handed out with this attempt goes; a retry
                // makes a new one.
                if let Some(t) = opening.token.take() {
                    if let Some(r) = g.reservations.remove(&t) {
                        g.ports.release(r.port);
                    }
                }
                let retry = e == OpenError::InUse && !opening.from_token && opening.attempts < OPEN_ATTEMPTS;
                // Take the new port before giving the busy one back, so the
                // same busy port is not picked again at once.
                let port = if retry {
                    g.ports.take(&mut self.rng, opening.even, opening.reserve_next)
                } else {
                    None
                };
                if let Some(p) = port {
                    g.ports.release(a.relay.port());
                    a.relay.set_port(p);
                    let addr = a.relay;
                    opening.attempts += 1;
                    let hold = opening
                        .reserve_next
                        .then(|| reserve_after(&mut self.rng, &mut self.timers, &mut g, addr, &mut opening, now));
                    drop(g);
                    a.opening = Some(opening);
                    self.commands.push_back(Command::OpenRelay { relay, addr, hold });
                    return;
                }
                drop(g);
                let (key, txid, fp) = (a.key, a.allocate_txid, opening.fingerprint);
                tracing::warn!(%client, relay = %a.relay, ?e, "could not open a relay socket");
                // Still "opening": deleting it releases port and quota but
                // closes no socket.
                a.opening = Some(opening);
                self.delete_allocation(relay, "relay socket failed", now.mono);
                self.stats.refused[Refusal::NoRelayPort as usize] += 1;
                let e = self.error_code(508, reason(508));
                let data = msg::build(
                    MessageType::new(METHOD_ALLOCATE, CLASS_ERROR_RESPONSE),
                    txid,
                    &[&e],
                    Some(&key[..]),
                    fp,
                );
                self.commands.push_back(Command::SendToClient { client, data });
                return;
            }
        };
        let advertised = self.advertised(bound);
        let Some(a) = self.allocs.get_mut(relay.index()) else {
            return;
        };
        a.relay = bound;
        a.advertised = advertised;
        let lifetime = Lifetime(opening.lifetime);
        let relayed = RelayedAddress {
            ip: advertised.ip(),
            port: advertised.port(),
        };
        let mapped = XorMappedAddress {
            ip: client.remote.ip(),
            port: client.remote.port(),
        };
        let token = opening.token.map(|t| ReservationToken(t.to_be_bytes().to_vec()));
        let mut attrs: Vec<&dyn Setter> = vec![&relayed, &lifetime, &mapped];
        if let Some(t) = &token {
            attrs.push(t);
        }
        let data = msg::build(
            MessageType::new(METHOD_ALLOCATE, CLASS_SUCCESS_RESPONSE),
            a.allocate_txid,
            &attrs,
            Some(&a.key[..]),
            opening.fingerprint,
        );
        a.response = data.clone();
        let expires = a.expires;
        let handle = RelayHandle {
            worker: self.worker,
            relay,
            serial: a.serial,
        };
        self.shared.lock().register_relay(bound, advertised, handle);
        tracing::info!(%client, relay = %advertised, user = %a.username, lifetime = opening.lifetime.as_secs(), "allocation created");
        self.stats.allocations_created += 1;
        self.commands.push_back(Command::SendToClient { client, data });
        self.schedule(relay, expires);
    }

    fn on_refresh(&mut self, client: ClientAddr, relay: RelayId, req: &Decoded, key: &Key, now: Now) {
        let Some(a) = self.allocs.get(relay.index()) else {
            return;
        };
        if let Some(f) = req.attr(ATTR_REQUESTED_ADDRESS_FAMILY) {
            let v6 = match f.first() {
                Some(0x01) => false,
                Some(0x02) => true,
                _ => return self.error(client, req, 440, Some(key)),
            };
            if v6 != a.relay.is_ipv6() {
                return self.error(client, req, 443, Some(key));
            }
        }
        // Refresh lifetime: 0 deletes, else min(requested, max); absent means
        // the default (RFC 8656 §7.3).
        let lifetime = match req.attr(ATTR_LIFETIME).and_then(lifetime_attr) {
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
        self.reply(client, req, true, &[&Lifetime(lifetime)], Some(key));
    }

    /// Every XOR-PEER-ADDRESS of the request, `Err(code)` when one is
    /// malformed (400), of the wrong family (443) or denied (403). A live
    /// relayed address of this turnd (any worker's, bound or advertised) is
    /// always permitted: two people on one turnd can relay to each other
    /// whatever its addresses are. Any other address of turnd's own host
    /// never is, whatever the policy allows (its listeners would be a loop).
    /// A 403 for a peer is remembered by its allocation (the page asks for
    /// them to say why a call failed) and logged.
    fn peers(&mut self, req: &Decoded, relay: RelayId) -> Result<Vec<SocketAddr>, u16> {
        let txid = req.txid();
        let Some(a) = self.allocs.get(relay.index()) else {
            return Err(437);
        };
        let v6 = a.relay.is_ipv6();
        let mut peers = Vec::new();
        for attr in req.counted_attrs().filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS) {
            let peer = msg::xor_address(&attr.value, &txid).ok_or(400u16)?;
            if peer.is_ipv6() != v6 {
                return Err(443);
            }
            if !self.cfg.ordinary_peer(peer.ip()) && self.shared.relay_at(peer).is_none() {
                let why = if self.cfg.own.contains(peer.ip()) {
                    "turnd's own address, not a live relay"
                } else {
                    "denied by the peer policy"
                };
                tracing::info!(client = %a.client, user = %a.username, %peer, why, "permission refused");
                if let Some(a) = self.allocs.get_mut(relay.index()) {
                    a.refused(peer);
                }
                return Err(403);
            }
            peers.push(peer);
        }
        if peers.is_empty() {
            return Err(400);
        }
        Ok(peers)
    }

    fn on_create_permission(&mut self, client: ClientAddr, relay: RelayId, req: &Decoded, key: &Key, now: Now) {
        let peers = match self.peers(req, relay) {
            Ok(p) => p,
            Err(code) => return self.error(client, req, code, Some(key)),
        };
        let expires = now.mono + PERMISSION_LIFETIME;
        let cfg = &self.cfg;
        if let Some(a) = self.allocs.get_mut(relay.index()) {
            for p in peers {
                a.refresh_permission(p.ip(), expires, cfg.ordinary_peer(p.ip()));
            }
        }
        self.sync_routes(relay);
        self.schedule(relay, expires);
        self.reply(client, req, true, &[], Some(key));
    }

    fn on_channel_bind(&mut self, client: ClientAddr, relay: RelayId, req: &Decoded, key: &Key, now: Now) {
        let number = match req.attr(ATTR_CHANNEL_NUMBER) {
            Some(v) if v.len() == 4 => u16::from_be_bytes([v[0], v[1]]),
            _ => return self.error(client, req, 400, Some(key)),
        };
        let max = if self.cfg.rfc5766_channels {
            CHANNEL_MAX_RFC5766
        } else {
            CHANNEL_MAX
        };
        if !(CHANNEL_MIN..=max).contains(&number) {
            return self.error(client, req, 400, Some(key));
        }
        let peer = match self.peers(req, relay) {
            Ok(p) if p.len() == 1 => p[0],
            Ok(_) => return self.error(client, req, 400, Some(key)),
            Err(code) => return self.error(client, req, code, Some(key)),
        };
        let Some(a) = self.allocs.get(relay.index()) else {
            return;
        };
        // Rebinding rules (RFC 8656 §12.2): a number stays with its peer and
        // a peer with its number, also while a lapsed binding cools down.
        if a.channels
            .get(&number)
            .is_some_and(|c| c.peer != peer && c.holds(now.mono))
            || a.channel_of(peer, now.mono).is_some_and(|n| n != number)
        {
            return self.error(client, req, 400, Some(key));
        }
        let chan_expires = now.mono + CHANNEL_LIFETIME;
        let perm_expires = now.mono + PERMISSION_LIFETIME;
        let Some(a) = self.allocs.get_mut(relay.index()) else {
            return;
        };
        a.channels.insert(
            number,
            Channel {
                peer,
                expires: chan_expires,
            },
        );
        let internal = !self.cfg.ordinary_peer(peer.ip());
        a.by_peer.insert(
            peer,
            PeerRoute {
                channel: number,
                chan_expires,
                perm_expires,
                internal,
            },
        );
        a.refresh_permission(peer.ip(), perm_expires, !internal);
        self.routes.insert(
            (client, number),
            ClientRoute {
                relay,
                peer,
                chan_expires,
                perm_expires,
                internal,
            },
        );
        self.sync_routes(relay);
        self.schedule(relay, perm_expires);
        self.reply(client, req, true, &[], Some(key));
    }

    /// Copies the allocation's permission expiries into the client-side
    /// hot-path routes of its channels (control path: touches only this
    /// allocation's channels, not every route of the worker).
    fn sync_routes(&mut self, relay: RelayId) {
        let Some(a) = self.allocs.get(relay.index()) else {
            return;
        };
        for (n, ch) in &a.channels {
            if let (Some(r), Some(p)) = (self.routes.get_mut(&(a.client, *n)), a.perms.get(&ch.peer.ip())) {
                r.perm_expires = p.expires;
            }
        }
    }

    pub(super) fn on_send_indication<'a>(
        &mut self,
        client: ClientAddr,
        buf: &'a [u8],
        req: &Decoded,
        now: Now,
    ) -> Option<Transmit<'a>> {
        let relay = *self.by_client.get(&client)?;
        let a = self.allocs.get(relay.index())?;
        if a.opening.is_some() || !req.unknown_required().is_empty() {
            return None;
        }
        let peer = msg::xor_address(req.attr(ATTR_XOR_PEER_ADDRESS)?, &req.txid())?;
        let Some(permission) = a.permission(peer.ip(), now.mono) else {
            self.stats.dropped += 1;
            return None;
        };
        let range = msg::attr_range(buf, ATTR_DATA)?;
        self.relay_to_peer(client, relay, peer, !permission.ordinary, &buf[range], now)
    }
}
