//! The simulated driver: one core run the way the real worker runs it
//! (every [`Command`] carried out in order, relay sockets "opened" at the
//! address the core chose), with the time injected, no sockets and no
//! threads. `tests/core.rs`, the fuzz harness and the criterion benches all
//! drive the core through it. It checks what a real driver would trip over:
//! a relay id reused while open, a port handed out twice, a port bound while
//! another socket holds it, a redeemed reservation whose held socket is not
//! at the address opened, closing a relay that is not open. It also keeps the
//! routing table a driver would build from the core's [`Event`]s alone (as
//! the in-kernel path does) and checks that the events make sense in order
//! and that the table never routes what the core would not
//! ([`Sim::check_routes`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::proto::{
    ClientAddr, Command, CoreConfig, Event, Held, Now, OpenError, Opened, RelayHandle, RelayId, Server, Transmit,
};

use super::Shared;

/// What the core did in answer to one input, in order.
#[derive(Debug, Default)]
pub struct Output {
    /// Messages to clients the core queued (answers, Data indications).
    pub replies: Vec<(ClientAddr, Vec<u8>)>,
    /// Sent from a relay socket to a peer.
    pub to_peer: Vec<(RelayId, SocketAddr, Vec<u8>)>,
    /// Sent to a client on the hot path (ChannelData).
    pub to_client: Vec<(ClientAddr, Vec<u8>)>,
    /// Handed to another allocation of this turnd: to, from, payload.
    pub to_relay: Vec<(RelayHandle, SocketAddr, Vec<u8>)>,
    pub events: Vec<Event>,
}

impl Output {
    fn transmit(&mut self, t: Option<Transmit<'_>>) {
        match t {
            Some(Transmit::ToPeer { relay, peer, payload }) => self.to_peer.push((relay, peer, payload.to_vec())),
            Some(Transmit::ToClient { client, payload }) => self.to_client.push((client, payload.to_vec())),
            Some(Transmit::ToRelay { to, from, payload }) => self.to_relay.push((to, from, payload.to_vec())),
            None => {}
        }
    }
}

/// The simulated socket held at a reserved port: bound while it lives.
struct SimHeld {
    addr: SocketAddr,
    bound: Arc<Mutex<HashSet<SocketAddr>>>,
}

impl SimHeld {
    fn new(addr: SocketAddr, bound: &Arc<Mutex<HashSet<SocketAddr>>>) -> Self {
        let fresh = bound.lock().unwrap_or_else(|p| p.into_inner()).insert(addr);
        assert!(fresh, "port {addr} held twice");
        Self {
            addr,
            bound: bound.clone(),
        }
    }
}

impl Drop for SimHeld {
    fn drop(&mut self) {
        self.bound.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.addr);
    }
}

/// `payload` after room for a ChannelData header, as drivers receive.
fn with_headroom(payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; crate::proto::wire::CHANNEL_HEADER];
    buf.extend_from_slice(payload);
    buf
}

/// A core and the driver state around it.
pub struct Sim {
    pub core: Server,
    pub shared: Arc<Shared>,
    pub now: Now,
    /// Open relay sockets: id and address.
    pub open: HashMap<RelayId, SocketAddr>,
    /// Reserved ports bound and kept (EVEN-PORT with R): the addresses of
    /// the live [`Held`] sockets the core keeps with its reservations.
    held: Arc<Mutex<HashSet<SocketAddr>>>,
    /// Outcomes of the next relay opens (default: success).
    pub open_results: VecDeque<Result<(), OpenError>>,
    /// Allocations as the events told them: relay and client.
    pub allocated: HashMap<RelayId, ClientAddr>,
    /// Channels as the events told them: peer and until when.
    pub routes: HashMap<(RelayId, u16), (SocketAddr, Instant)>,
}

impl Sim {
    /// A core with relay ports `min..=max`, at a fixed point in time.
    pub fn new(cfg: CoreConfig, min: u16, max: u16) -> Self {
        let shared = Arc::new(Shared::new(min, max));
        let now = Now {
            mono: std::time::Instant::now(),
            unix: 1_800_000_000,
        };
        Self::on(cfg, shared, now, 0, 7)
    }

    /// Another worker's core on this one's shared state and clock.
    pub fn beside(&self, cfg: CoreConfig, worker: u16) -> Self {
        Self::on(cfg, self.shared.clone(), self.now, worker, 7 + u64::from(worker))
    }

    fn on(cfg: CoreConfig, shared: Arc<Shared>, now: Now, worker: u16, seed: u64) -> Self {
        Self {
            core: Server::new(Arc::new(cfg), shared.clone(), seed, [3; 32]).with_worker(worker),
            shared,
            now,
            open: HashMap::new(),
            held: Arc::default(),
            open_results: VecDeque::new(),
            allocated: HashMap::new(),
            routes: HashMap::new(),
        }
    }

    /// Runs one input through the core (`f` gets it and the time), then
    /// every command it queued.
    fn step(&mut self, f: impl FnOnce(&mut Server, Now, &mut Output)) -> Output {
        let mut out = Output::default();
        f(&mut self.core, self.now, &mut out);
        self.drain(&mut out);
        out
    }

    /// A datagram (or framed message) from `client`.
    pub fn client_sends(&mut self, client: ClientAddr, bytes: &[u8]) -> Output {
        self.step(|core, now, out| out.transmit(core.handle_client_input(client, bytes, now)))
    }

    /// A datagram from `peer` on the relay socket of `relay`.
    pub fn peer_sends(&mut self, relay: RelayId, peer: SocketAddr, payload: &[u8]) -> Output {
        let mut buf = with_headroom(payload);
        self.step(|core, now, out| out.transmit(core.handle_peer_input(relay, peer, &mut buf, now)))
    }

    /// What another allocation of this turnd handed to `to`, delivered.
    pub fn relayed_in(&mut self, to: RelayHandle, from: SocketAddr, payload: &[u8]) -> Output {
        let mut buf = with_headroom(payload);
        self.step(|core, now, out| out.transmit(core.handle_relayed_input(to, from, &mut buf, now)))
    }

    /// A TCP or TLS client's connection closed.
    pub fn closed(&mut self, client: ClientAddr) -> Output {
        self.step(|core, now, _| core.handle_client_closed(&client, now))
    }

    /// Moves both clocks by `d` and runs what fell due.
    pub fn advance(&mut self, d: Duration) -> Output {
        self.now = self.now.after(d);
        self.step(|core, now, _| core.handle_timeout(now))
    }

    /// Carries out every command the core queued, as the worker does.
    pub fn drain(&mut self, out: &mut Output) {
        while let Some(c) = self.core.poll_command() {
            match c {
                Command::SendToClient { client, data } => out.replies.push((client, data)),
                Command::OpenRelay {
                    relay,
                    addr,
                    hold,
                    reserved,
                } => {
                    let r = self.open_results.pop_front().unwrap_or(Ok(()));
                    // A redeemed reservation's socket is used as it is,
                    // whatever the outcome (on failure it closes).
                    if let Some(h) = reserved {
                        let h = h.into_inner::<SimHeld>().expect("a socket this driver held");
                        assert_eq!(h.addr, addr, "the held socket is not at the address opened");
                    }
                    let result = r.map(|()| {
                        assert!(!self.open.contains_key(&relay), "relay id {relay:?} reused while open");
                        assert!(!self.open.values().any(|a| *a == addr), "port {addr} handed out twice");
                        assert!(!self.held().contains(&addr), "port {addr} opened while held");
                        let held = hold.map(|next| {
                            assert!(!self.open.values().any(|a| *a == next), "holding an open port {next}");
                            Held::new(SimHeld::new(next, &self.held))
                        });
                        self.open.insert(relay, addr);
                        Opened { bound: addr, held }
                    });
                    let now = self.now;
                    self.core.handle_relay_opened(relay, result, now);
                }
                Command::CloseRelay { relay } => {
                    assert!(
                        self.open.remove(&relay).is_some(),
                        "closing relay {relay:?}, which is not open"
                    );
                }
                Command::Event(e) => {
                    self.mirror(&e);
                    out.events.push(e);
                }
            }
        }
    }

    /// Follows one event the way a driver keeping its own table would, and
    /// checks it fits what came before.
    fn mirror(&mut self, e: &Event) {
        match e.clone() {
            Event::AllocationCreated { client, relay, .. } => {
                assert!(
                    self.open.contains_key(&relay),
                    "allocation on relay {relay:?}, which is not open"
                );
                let before = self.allocated.insert(relay, client);
                assert!(before.is_none(), "relay {relay:?} allocated twice");
            }
            Event::AllocationDeleted { client, relay, .. } => {
                assert_eq!(
                    self.allocated.remove(&relay),
                    Some(client),
                    "deleting an unknown allocation"
                );
                assert!(
                    !self.routes.keys().any(|(r, _)| *r == relay),
                    "allocation of {relay:?} deleted before its channels ended"
                );
            }
            Event::ChannelBound {
                relay,
                channel,
                peer,
                until,
                ..
            } => {
                assert!(
                    self.allocated.contains_key(&relay),
                    "channel on {relay:?}, which is not allocated"
                );
                assert!(until > self.now.mono, "channel {channel:#x} bound until the past");
                self.routes.insert((relay, channel), (peer, until));
            }
            Event::ChannelEnded { relay, channel, peer } => {
                let before = self.routes.remove(&(relay, channel));
                assert_eq!(
                    before.map(|(p, _)| p),
                    Some(peer),
                    "ending channel {channel:#x} of {relay:?}, not bound"
                );
            }
        }
    }

    /// The table built from events never routes what the core would not:
    /// every channel it holds and has not seen expire goes where the core
    /// sends it.
    pub fn check_routes(&self) -> Result<(), String> {
        let now = self.now.mono;
        for (&(relay, channel), &(peer, until)) in &self.routes {
            let client = self.allocated[&relay];
            let core = self.core.route(client, channel, now);
            if until > now && core != Some((relay, peer)) {
                return Err(format!(
                    "events say channel {channel:#x} of {relay:?} routes to {peer} for {:?} more; the core says {core:?}",
                    until - now
                ));
            }
        }
        Ok(())
    }

    /// The ports held for reservations now.
    pub fn held(&self) -> HashSet<SocketAddr> {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Ports taken in the shared range now.
    pub fn ports_in_use(&self) -> usize {
        self.shared.lock().ports.in_use()
    }
}
