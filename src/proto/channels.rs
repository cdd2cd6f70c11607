//! Permissions, channel bindings and the two hot-path routes built from them,
//! with one owner ([RFC 8656 §9, §12](https://www.rfc-editor.org/rfc/rfc8656#section-12)).
//!
//! A relayed packet must cost one lookup, so each route carries a copy of
//! what decides it: until when it may be used (the earlier of the channel's
//! and its peer's permission expiry) and whether the peer is reached inside
//! the process. [`ChannelTable`] is the only code that writes either a route
//! or what it is copied from, and [`ChannelTable::check`] states the
//! invariants that keeps (property-tested in `tests/props.rs`).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::addr::{ClientAddr, RelayId};
use super::server::Event;

/// Permission lifetime, not configurable ([RFC 8656 §9](https://www.rfc-editor.org/rfc/rfc8656#section-9)).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Channel binding lifetime ([RFC 8656 §12](https://www.rfc-editor.org/rfc/rfc8656#section-12)).
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// After a binding expires, neither its number nor its peer may be bound to
/// anything else for this long ([RFC 8656 §12](https://www.rfc-editor.org/rfc/rfc8656#section-12)).
pub const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);

/// How a peer IP is reached (decided when a permission is made or the
/// policy reloaded: [`super::server::CoreConfig::reach`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reach {
    /// The IP is an [ordinary](super::server::CoreConfig::ordinary_peer)
    /// peer; otherwise data to it goes to a live relay of this turnd at the
    /// exact address, or nowhere.
    pub ordinary: bool,
    /// Some ports of the IP are ordinary though the IP is not (`[peers]
    /// allow` entries with ports): which ones, the configuration says per
    /// datagram ([`Permission::ordinary_for`]).
    pub ports: bool,
}

/// A permission for one peer IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    pub expires: Instant,
    pub reach: Reach,
}

impl Permission {
    /// Whether data to or from `peer` goes through a relay socket, given
    /// whether a port entry of the policy `admits` it.
    #[inline]
    pub fn ordinary_for(&self, peer: SocketAddr, admits: impl FnOnce(SocketAddr) -> bool) -> bool {
        self.reach.ordinary || (self.reach.ports && admits(peer))
    }
}

/// A channel binding; kept after it expires while it cools down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Channel {
    peer: SocketAddr,
    expires: Instant,
    /// The peer address is ordinary (its IP, or a port entry naming it).
    ordinary: bool,
}

impl Channel {
    /// Still blocking other bindings of its number and peer.
    fn holds(&self, now: Instant) -> bool {
        now < self.expires + CHANNEL_COOLDOWN
    }
}

/// The client-side hot path: ChannelData from a client on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientRoute {
    pub relay: RelayId,
    pub peer: SocketAddr,
    /// The earlier of the channel's and the permission's expiry.
    pub until: Instant,
    /// The peer is not an ordinary one: a relay of this turnd, or nothing.
    pub internal: bool,
}

/// The peer-side hot path: data from a peer that has a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerRoute {
    pub channel: u16,
    pub until: Instant,
    pub internal: bool,
}

/// What one allocation has.
#[derive(Debug, Default)]
struct Entry {
    client: Option<ClientAddr>,
    perms: HashMap<IpAddr, Permission>,
    channels: HashMap<u16, Channel>,
    /// Live channels by peer (expired ones leave at once, cooling or not).
    by_peer: HashMap<SocketAddr, PeerRoute>,
}

/// Why a ChannelBind is refused ([RFC 8656 §12.2](https://www.rfc-editor.org/rfc/rfc8656#section-12.2)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindError {
    /// The number is bound (or cooling down) to another peer, or the peer
    /// to another number.
    Taken,
    /// `relay` has no allocation in the table (never opened, or closed).
    NoAllocation,
}

type Routes = HashMap<(ClientAddr, u16), ClientRoute, ahash::RandomState>;

/// Takes channel `n` (bound to `peer`) of `relay` off both routes, and tells
/// the driver when it was live.
fn end_route(
    e: &mut Entry,
    routes: &mut Routes,
    events: &mut VecDeque<Event>,
    relay: RelayId,
    n: u16,
    peer: SocketAddr,
) {
    if e.by_peer.get(&peer).is_some_and(|r| r.channel == n) {
        e.by_peer.remove(&peer);
        events.push_back(Event::ChannelEnded {
            relay,
            channel: n,
            peer,
        });
    }
    if let Some(client) = e.client {
        routes.remove(&(client, n));
    }
}

/// Every allocation's permissions and channels, and the routes that relay
/// on them.
#[derive(Debug, Default)]
pub struct ChannelTable {
    /// Per allocation, by [`RelayId`].
    entries: Vec<Option<Entry>>,
    routes: Routes,
    /// Route changes not yet taken by the core ([`Event::ChannelBound`],
    /// [`Event::ChannelEnded`]).
    events: VecDeque<Event>,
}

impl ChannelTable {
    fn entry(&self, relay: RelayId) -> Option<&Entry> {
        self.entries.get(relay.index())?.as_ref()
    }

    fn entry_mut(&mut self, relay: RelayId) -> Option<&mut Entry> {
        self.entries.get_mut(relay.index())?.as_mut()
    }

    /// A new allocation of `client`, with nothing yet.
    pub fn open(&mut self, relay: RelayId, client: ClientAddr) {
        if self.entries.len() <= relay.index() {
            self.entries.resize_with(relay.index() + 1, || None);
        }
        self.entries[relay.index()] = Some(Entry {
            client: Some(client),
            ..Entry::default()
        });
    }

    /// Whether route changes wait in [`ChannelTable::next_event`].
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next route change, oldest first.
    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The allocation is gone, and everything of it.
    pub fn close(&mut self, relay: RelayId) {
        let Some(e) = self.entries.get_mut(relay.index()).and_then(Option::take) else {
            return;
        };
        if let Some(client) = e.client {
            for n in e.channels.keys() {
                self.routes.remove(&(client, *n));
            }
        }
        for (peer, r) in &e.by_peer {
            self.events.push_back(Event::ChannelEnded {
                relay,
                channel: r.channel,
                peer: *peer,
            });
        }
        let unused_tail = self.entries.iter().rev().take_while(|e| e.is_none()).count();
        self.entries.truncate(self.entries.len() - unused_tail);
    }

    /// The hot path from a client: its route on `channel`, while usable.
    #[inline]
    pub fn client_route(&self, client: ClientAddr, channel: u16, now: Instant) -> Option<ClientRoute> {
        self.routes.get(&(client, channel)).copied().filter(|r| now < r.until)
    }

    /// The hot path from a peer: its live channel on `relay`, while usable.
    #[inline]
    pub fn peer_route(&self, relay: RelayId, peer: SocketAddr, now: Instant) -> Option<PeerRoute> {
        self.entry(relay)?.by_peer.get(&peer).copied().filter(|r| now < r.until)
    }

    /// The live permission of `relay` for `ip`.
    pub fn permission(&self, relay: RelayId, ip: IpAddr, now: Instant) -> Option<Permission> {
        self.entry(relay)?.perms.get(&ip).copied().filter(|p| now < p.expires)
    }

    /// Installs or refreshes the permission of `relay` for `ip` until
    /// `expires`, and every route to that IP with it.
    pub fn permit(&mut self, relay: RelayId, ip: IpAddr, expires: Instant, reach: Reach) {
        let Some(e) = self.entry_mut(relay) else { return };
        e.perms.insert(ip, Permission { expires, reach });
        self.refresh_routes(relay, |peer| peer.ip() == ip);
    }

    /// Binds `number` to `peer` on `relay` until `now + CHANNEL_LIFETIME`,
    /// or refreshes the binding; the permission for the peer's IP is
    /// installed or refreshed with it (RFC 8656 §12.2), reached as `reach`
    /// says; `ordinary`: the peer's address is.
    pub fn bind(
        &mut self,
        relay: RelayId,
        number: u16,
        peer: SocketAddr,
        reach: Reach,
        ordinary: bool,
        now: Instant,
    ) -> Result<(), BindError> {
        let Some(e) = self.entries.get_mut(relay.index()).and_then(Option::as_mut) else {
            return Err(BindError::NoAllocation);
        };
        // Bindings past their cool-down that no sweep has removed yet give
        // way first.
        let stale: Vec<u16> = e
            .channels
            .iter()
            .filter(|(n, c)| !c.holds(now) && (**n == number || c.peer == peer))
            .map(|(n, _)| *n)
            .collect();
        for n in stale {
            if let Some(c) = e.channels.remove(&n) {
                end_route(e, &mut self.routes, &mut self.events, relay, n, c.peer);
            }
        }
        // A number stays with its peer and a peer with its number, also
        // while a lapsed binding cools down.
        let number_taken = e.channels.get(&number).is_some_and(|c| c.peer != peer && c.holds(now));
        let peer_taken = e
            .channels
            .iter()
            .any(|(n, c)| *n != number && c.peer == peer && c.holds(now));
        if number_taken || peer_taken {
            return Err(BindError::Taken);
        }
        let expires = now + CHANNEL_LIFETIME;
        e.channels.insert(
            number,
            Channel {
                peer,
                expires,
                ordinary,
            },
        );
        e.perms.insert(
            peer.ip(),
            Permission {
                expires: now + PERMISSION_LIFETIME,
                reach,
            },
        );
        e.by_peer.insert(
            peer,
            PeerRoute {
                channel: number,
                until: expires,
                internal: !ordinary,
            },
        );
        if let Some(client) = e.client {
            self.routes.insert(
                (client, number),
                ClientRoute {
                    relay,
                    peer,
                    until: expires,
                    internal: !ordinary,
                },
            );
        }
        self.refresh_routes(relay, |p| p.ip() == peer.ip());
        Ok(())
    }

    /// Copies into the routes of `relay`'s live channels whose peer matches
    /// `which`: usable until the earlier of channel and permission expiry,
    /// internal when the channel's peer is not ordinary.
    fn refresh_routes(&mut self, relay: RelayId, which: impl Fn(SocketAddr) -> bool) {
        let Some(e) = self.entries.get_mut(relay.index()).and_then(Option::as_mut) else {
            return;
        };
        for (n, c) in &e.channels {
            if !which(c.peer) {
                continue;
            }
            let Some(route) = e.by_peer.get_mut(&c.peer).filter(|r| r.channel == *n) else {
                continue;
            };
            let perm = e.perms.get(&c.peer.ip());
            let until = perm.map_or(c.expires, |p| p.expires.min(c.expires));
            let internal = perm.is_some() && !c.ordinary;
            route.until = until;
            route.internal = internal;
            if let Some(r) = e.client.and_then(|client| self.routes.get_mut(&(client, *n))) {
                r.until = until;
                r.internal = internal;
            }
            self.events.push_back(Event::ChannelBound {
                relay,
                channel: *n,
                peer: c.peer,
                until,
                internal,
                offload: None,
            });
        }
    }

    /// Drops what expired by `now` on `relay`: permissions, the routes of
    /// channels that ended, channels past their cool-down. Returns the next
    /// instant anything here changes.
    pub fn sweep(&mut self, relay: RelayId, now: Instant) -> Option<Instant> {
        let e = self.entries.get_mut(relay.index()).and_then(Option::as_mut)?;
        let ended: Vec<(u16, SocketAddr)> = e
            .channels
            .iter()
            .filter(|(n, c)| c.expires <= now && e.by_peer.get(&c.peer).is_some_and(|r| r.channel == **n))
            .map(|(n, c)| (*n, c.peer))
            .collect();
        for (n, peer) in ended {
            end_route(e, &mut self.routes, &mut self.events, relay, n, peer);
        }
        e.channels.retain(|_, c| c.holds(now));
        // A lapsed permission stays while a live channel's route was copied
        // from it (the route is as lapsed as the permission); the next
        // CreatePermission or ChannelBind brings both back.
        let by_peer = &e.by_peer;
        e.perms
            .retain(|ip, p| now < p.expires || by_peer.keys().any(|peer| peer.ip() == *ip));
        let perms = e.perms.values().map(|p| p.expires).filter(|t| *t > now);
        let channels = e.channels.values().map(|c| {
            if c.expires > now {
                c.expires
            } else {
                c.expires + CHANNEL_COOLDOWN
            }
        });
        perms.chain(channels).filter(|t| *t > now).min()
    }

    /// A new peer policy: permissions to IPs `keep_ip` no longer allows go,
    /// and channels to peers `keep_peer` no longer allows or whose IP lost
    /// its permission (with their routes); what stays is reached as
    /// `reach` and `ordinary` say.
    pub fn reload(
        &mut self,
        keep_ip: impl Fn(IpAddr) -> bool,
        keep_peer: impl Fn(SocketAddr) -> bool,
        reach: impl Fn(IpAddr) -> Reach,
        ordinary: impl Fn(SocketAddr) -> bool,
    ) {
        for i in 0..self.entries.len() {
            let relay = RelayId(i as u32);
            let Some(e) = self.entries[i].as_mut() else { continue };
            e.perms.retain(|ip, _| keep_ip(*ip));
            for (ip, p) in e.perms.iter_mut() {
                p.reach = reach(*ip);
            }
            for c in e.channels.values_mut() {
                c.ordinary = ordinary(c.peer);
            }
            // A channel needs its permission: one whose IP lost it goes too.
            let gone: Vec<u16> = e
                .channels
                .iter()
                .filter(|(_, c)| !keep_peer(c.peer) || !e.perms.contains_key(&c.peer.ip()))
                .map(|(n, _)| *n)
                .collect();
            for n in gone {
                if let Some(c) = e.channels.remove(&n) {
                    end_route(e, &mut self.routes, &mut self.events, relay, n, c.peer);
                }
            }
            self.refresh_routes(relay, |_| true);
        }
    }

    /// The peer IPs `relay` has a permission for.
    pub fn permitted(&self, relay: RelayId) -> Vec<IpAddr> {
        self.entry(relay)
            .map(|e| e.perms.keys().copied().collect())
            .unwrap_or_default()
    }

    /// `relay`'s live channel bindings.
    pub fn live_channels(&self, relay: RelayId) -> usize {
        self.entry(relay).map_or(0, |e| e.by_peer.len())
    }

    /// Permissions and live channel bindings of every allocation (a lapsed
    /// permission counts while a live channel to its IP keeps it).
    pub fn totals(&self) -> (u64, u64) {
        self.entries.iter().flatten().fold((0, 0), |(p, c), e| {
            (p + e.perms.len() as u64, c + e.by_peer.len() as u64)
        })
    }

    /// Gives back the room a wave of allocations left in the tables.
    pub fn shrink(&mut self) {
        if self.routes.capacity() > 64 && self.routes.len() <= self.routes.capacity() / 4 {
            self.routes.shrink_to_fit();
        }
        if self.entries.capacity() > 64 && self.entries.len() <= self.entries.capacity() / 4 {
            self.entries.shrink_to_fit();
        }
    }

    /// The invariants the table keeps, checked (for the property tests):
    /// every client route is a live channel of an allocation of that client,
    /// to the same peer, with a permission record for its IP, usable until
    /// the earlier of channel and permission expiry; every peer route is the same channel seen from the peer; no
    /// number or peer is bound twice on one allocation; nothing routes to an
    /// allocation that is gone.
    pub fn check(&self) -> Result<(), String> {
        let mut client_routes = 0;
        for (i, e) in self.entries.iter().enumerate() {
            let Some(e) = e else { continue };
            let relay = RelayId(i as u32);
            let client = e.client.ok_or("an allocation without a client")?;
            let mut peers = std::collections::HashSet::new();
            for (peer, r) in &e.by_peer {
                let c = e
                    .channels
                    .get(&r.channel)
                    .ok_or(format!("peer route {peer} to channel {:#x}, which is gone", r.channel))?;
                if c.peer != *peer {
                    return Err(format!(
                        "channel {:#x}: peer route from {peer}, bound to {}",
                        r.channel, c.peer
                    ));
                }
                if !peers.insert(r.channel) {
                    return Err(format!("channel {:#x} has two peer routes", r.channel));
                }
                let perm = e.perms.get(&peer.ip());
                if perm.is_none() {
                    return Err(format!("channel {:#x} to {peer} without a permission", r.channel));
                }
                let until = perm.map_or(c.expires, |p| p.expires.min(c.expires));
                if r.until != until || r.internal != (perm.is_some() && !c.ordinary) {
                    return Err(format!("peer route {peer}: stale copy of its expiry or kind"));
                }
                let cr = self
                    .routes
                    .get(&(client, r.channel))
                    .ok_or(format!("channel {:#x}: no client route", r.channel))?;
                if *cr
                    != (ClientRoute {
                        relay,
                        peer: *peer,
                        until: r.until,
                        internal: r.internal,
                    })
                {
                    return Err(format!("channel {:#x}: client and peer routes disagree", r.channel));
                }
                client_routes += 1;
            }
            let mut bound = std::collections::HashSet::new();
            for c in e.channels.values() {
                if !bound.insert(c.peer) {
                    return Err(format!("peer {} bound to two channels", c.peer));
                }
            }
        }
        if client_routes != self.routes.len() {
            return Err(format!(
                "{} client routes for {client_routes} live channels",
                self.routes.len()
            ));
        }
        Ok(())
    }
}
