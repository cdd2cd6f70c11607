//! One worker: a mio event loop that owns a [`Server`] core, its copy of each
//! UDP listener and the relay sockets of the allocations it created. No lock
//! and no channel per packet: a datagram is read, handed to the core, and
//! what the core returns is sent from the same thread.

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};

use crate::proto::wire::CHANNEL_HEADER;
use crate::proto::{
    ClientAddr, Command, Event, Held, Now, OpenError, Opened, RelayHandle, RelayId, Relayed, Server, Transmit,
};

use super::stream::{self, Inbox, ToWorker};
use super::{socket, xdp, Handoff, Job, Workers};

/// Handoffs gathered for one other worker before they are queued there at
/// once (the rest go at the end of the loop turn).
const HANDOFF_BATCH: usize = 64;
/// Spare handoff buffers kept for reuse.
const SPARE_BUFFERS: usize = 1024;

/// Messages taken from the stream inbox per loop turn.
const INBOX_BUDGET: usize = 1024;

/// A TCP or TLS client's way back: its connection task's queue, and the flag
/// the task reads to know whether an allocation keeps it alive.
struct StreamOut {
    link: stream::LinkTx,
    allocated: Arc<std::sync::atomic::AtomicBool>,
}

pub const WAKER: Token = Token(usize::MAX);
const RELAY_BASE: usize = 1 << 16;
/// Datagrams read from one socket before others get a turn.
const READ_BUDGET: usize = 256;
/// Datagrams per recvmmsg call.
const BATCH: usize = 32;
/// Room for the largest datagram (and, with GRO, several segments).
const RX_BUF: usize = 1 << 16;

pub struct Listener {
    sock: UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
}

impl Listener {
    pub fn new(std: std::net::UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new(UdpSockRef::from(&std))?;
        let local = std.local_addr()?;
        socket::allow_fragments(&std, local.is_ipv6());
        Ok(Self {
            sock: UdpSocket::from_std(std),
            state,
            local,
        })
    }

    fn serves(&self, local: &SocketAddr) -> bool {
        self.local.port() == local.port()
            && self.local.is_ipv6() == local.is_ipv6()
            && (self.local.ip().is_unspecified() || self.local.ip() == local.ip())
    }

    fn send(&self, client: &ClientAddr, contents: &[u8]) {
        let t = quinn_udp::Transmit {
            destination: client.remote,
            ecn: None,
            contents,
            segment_size: None,
            src_ip: self.local.ip().is_unspecified().then_some(client.local.ip()),
        };
        // Only WouldBlock comes back (the kernel's buffer is full): the
        // datagram is dropped, as a router would.
        let _ = self.state.send(UdpSockRef::from(&self.sock), &t);
    }
}

pub struct Worker {
    poll: Poll,
    core: Server,
    listeners: Vec<Listener>,
    relays: Vec<Option<UdpSocket>>,
    /// One batched-receive state for every relay socket. quinn-udp's
    /// `UdpSocketState::new` turns UDP GRO on and probes the kernel with
    /// throwaway sockets; per relay socket that toggled a kernel static key
    /// (code patching with IPIs to every CPU) twice per allocation: ~60 % of
    /// the CPU an allocation cost. Relay sockets keep GRO off, so each
    /// datagram arrives alone in its buffer with header room in front.
    relay_state: UdpSocketState,
    workers: Arc<Workers>,
    /// This worker's place in [`Workers`]'s turn counters.
    index: usize,
    /// The [`Workers::epoch`] of the configuration the core runs with.
    config_epoch: u64,
    bufs: Vec<Vec<u8>>,
    /// Peer datagrams land CHANNEL_HEADER bytes in, so each becomes
    /// ChannelData in place.
    relay_bufs: Vec<Vec<u8>>,
    /// Sockets whose read budget ran out before WouldBlock.
    backlog: Vec<Token>,
    /// Messages from TCP and TLS connection tasks.
    inbox: Option<Inbox>,
    inbox_backlog: bool,
    streams: HashMap<ClientAddr, StreamOut, ahash::RandomState>,
    /// When the once-a-second chores last ran.
    chores_at: Instant,
    /// The most allocations this worker held since the heap was last
    /// trimmed, and whether some were left at that trim (see `trim_heap`).
    trim_mark: usize,
    trim_rest: bool,
    pub dropped_sends: u64,
    /// Handoffs to other workers' allocations, per worker, not yet queued.
    outbox: Vec<Vec<Handoff>>,
    /// Handoffs taken from this worker's queue, being handled.
    handoffs: Vec<Handoff>,
    /// Buffers of handoffs done with, for the next ones.
    spare: Vec<Vec<u8>>,
    /// Room for a handoff between two allocations of this worker.
    scratch: Vec<u8>,
    /// This worker's routes in the kernel's data path, when it is on.
    routes: Option<xdp::Routes>,
    /// What the kernel relayed for allocations already deleted, until
    /// their AllocationDeleted event adds it to the log line.
    late: Vec<(RelayId, Relayed)>,
    /// Reused by the once-a-second credit of kernel-relayed traffic.
    synced: Vec<(RelayId, Relayed)>,
}

impl Worker {
    pub fn new(
        index: usize,
        poll: Poll,
        core: Server,
        mut listeners: Vec<Listener>,
        inbox: Option<Inbox>,
        workers: Arc<Workers>,
        routes: Option<xdp::Routes>,
    ) -> io::Result<Self> {
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry().register(&mut l.sock, Token(i), Interest::READABLE)?;
        }
        let count = workers.count();
        let probe = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        let relay_state = UdpSocketState::new(UdpSockRef::from(&probe))?;
        Ok(Self {
            poll,
            core,
            listeners,
            relays: Vec::new(),
            relay_state,
            config_epoch: workers.epoch(),
            workers,
            index,
            bufs: vec![vec![0; RX_BUF]; BATCH],
            relay_bufs: vec![vec![0; RX_BUF + CHANNEL_HEADER]; BATCH],
            backlog: Vec::new(),
            inbox,
            inbox_backlog: false,
            streams: HashMap::default(),
            chores_at: Instant::now(),
            trim_mark: 0,
            trim_rest: false,
            dropped_sends: 0,
            outbox: (0..count).map(|_| Vec::new()).collect(),
            handoffs: Vec::new(),
            spare: Vec::new(),
            scratch: Vec::new(),
            routes,
            late: Vec::new(),
            synced: Vec::new(),
        })
    }

    /// Runs until the shutdown flag is set (and the waker rung).
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        // The sockets to read this turn; kept between turns (no allocation
        // per wakeup).
        let mut ready: Vec<Token> = Vec::with_capacity(1024);
        while !self.workers.stopping() {
            self.workers.turned(self.index);
            if self.workers.epoch() != self.config_epoch {
                self.config_epoch = self.workers.epoch();
                self.core.set_config(self.workers.config());
            }
            for job in self.workers.take_jobs(self.index) {
                match job {
                    Job::Sessions(reply) => {
                        self.sync_offloaded();
                        let _ = reply.send(self.core.sessions(super::now()));
                    }
                    Job::KillUser(user, reply) => {
                        let _ = reply.send(self.core.kill_user(&user, super::now()));
                        self.run_commands();
                    }
                }
            }
            // At most a second asleep: the once-a-second chores below.
            self.flush_outbox();
            let timeout = if self.backlog.is_empty() && !self.inbox_backlog {
                let chores = self.chores_at + Duration::from_secs(1);
                let next = self.core.poll_timeout().map_or(chores, |t| t.min(chores));
                Some(next.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "poll failed");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            ready.clear();
            ready.append(&mut self.backlog);
            ready.extend(events.iter().map(|e| e.token()).filter(|t| *t != WAKER));
            ready.sort_unstable();
            ready.dedup();
            for &token in &ready {
                if token.0 < RELAY_BASE {
                    self.read_listener(token);
                } else {
                    self.read_relay(token);
                }
            }
            self.drain_inbox();
            self.take_handoffs();
            self.core.handle_timeout(super::now());
            self.run_commands();
            // Once a second: memory back after a wave of allocations,
            // counters out for /metrics.
            // The trim comes first, so the memory is back by the time the
            // metrics show the allocations gone.
            if self.chores_at.elapsed() >= Duration::from_secs(1) {
                self.chores_at = Instant::now();
                self.trim_heap();
                self.publish();
            }
        }
        tracing::debug!("worker stopped");
    }

    fn read_listener(&mut self, token: Token) {
        let Some(own) = self.listeners.get(token.0).map(|l| l.local) else {
            return;
        };
        // The buffers leave `self` while their datagrams are handled, so the
        // core and the sockets can be used meanwhile.
        let mut bufs = std::mem::take(&mut self.bufs);
        let mut metas = [RecvMeta::default(); BATCH];
        let mut read = 0;
        let drained = loop {
            if read >= READ_BUDGET {
                break false;
            }
            let l = &self.listeners[token.0];
            let n = match recv_batch(&l.state, &l.sock, &mut bufs, 0, &mut metas) {
                Batch::Got(n) => n,
                Batch::Drained => break true,
                Batch::Failed => {
                    read += 1;
                    continue;
                }
            };
            let now = super::now();
            let short = n < BATCH;
            for (meta, buf) in metas.iter().zip(bufs.iter()).take(n) {
                let local = SocketAddr::new(meta.dst_ip.unwrap_or(own.ip()), own.port());
                let client = ClientAddr::udp(meta.addr, local);
                let stride = meta.stride.max(1);
                for seg in buf[..meta.len].chunks(stride) {
                    read += 1;
                    self.on_client_datagram(client, seg, now);
                }
            }
            // Fewer than a batch: the queue was empty when the kernel looked,
            // and anything that arrived since raises a new edge. No extra
            // recvmmsg just to see WouldBlock.
            if short {
                break true;
            }
        };
        self.bufs = bufs;
        if !drained {
            self.backlog.push(token);
        }
    }

    fn on_client_datagram(&mut self, client: ClientAddr, seg: &[u8], now: Now) {
        match self.core.handle_client_input(client, seg, now) {
            Some(Transmit::ToPeer { relay, peer, payload }) => {
                if let Some(Some(r)) = self.relays.get(relay.slot()) {
                    if r.send_to(payload, peer).is_err() {
                        // Unreachable peer, full buffer: one lost datagram,
                        // never a lost allocation.
                        self.dropped_sends += 1;
                    }
                }
            }
            Some(Transmit::ToClient { client, payload }) => {
                send_to_client(&self.listeners, &self.streams, &client, payload)
            }
            Some(Transmit::ToRelay { to, from, payload }) => self.hand_over(to, from, payload, now),
            None => {}
        }
        if self.core.has_commands() {
            self.run_commands();
        }
    }

    /// Data for another allocation of this turnd: handled at once when it
    /// lives on this worker, else queued for its worker.
    fn hand_over(&mut self, to: RelayHandle, from: SocketAddr, payload: &[u8], now: Now) {
        let worker = usize::from(to.worker);
        let mut buf = if worker == self.index {
            std::mem::take(&mut self.scratch)
        } else {
            self.spare.pop().unwrap_or_default()
        };
        buf.clear();
        buf.resize(CHANNEL_HEADER, 0);
        buf.extend_from_slice(payload);
        if worker == self.index {
            if let Some(Transmit::ToClient { client, payload }) =
                self.core.handle_relayed_input(to, from, &mut buf, now)
            {
                send_to_client(&self.listeners, &self.streams, &client, payload);
            }
            self.scratch = buf;
            return;
        }
        let Some(out) = self.outbox.get_mut(worker) else {
            return;
        };
        out.push(Handoff { to, from, buf });
        if out.len() >= HANDOFF_BATCH {
            let mut batch = std::mem::take(out);
            self.queue_handoffs(worker, &mut batch);
            self.outbox[worker] = batch;
        }
    }

    /// Queues what the outboxes hold at their workers.
    fn flush_outbox(&mut self) {
        for w in 0..self.outbox.len() {
            if !self.outbox[w].is_empty() {
                let mut batch = std::mem::take(&mut self.outbox[w]);
                self.queue_handoffs(w, &mut batch);
                self.outbox[w] = batch;
            }
        }
    }

    fn queue_handoffs(&mut self, worker: usize, batch: &mut Vec<Handoff>) {
        let dropped = self.workers.hand_off(worker, batch);
        self.dropped_sends += dropped.len() as u64;
        self.keep_spare(dropped);
    }

    fn keep_spare(&mut self, bufs: impl IntoIterator<Item = Vec<u8>>) {
        for b in bufs {
            if self.spare.len() >= SPARE_BUFFERS {
                break;
            }
            self.spare.push(b);
        }
    }

    /// Handles the data other workers handed to this one's allocations.
    fn take_handoffs(&mut self) {
        let mut handoffs = std::mem::take(&mut self.handoffs);
        self.workers.take_handoffs(self.index, &mut handoffs);
        if handoffs.is_empty() {
            self.handoffs = handoffs;
            return;
        }
        let now = super::now();
        for h in handoffs.iter_mut() {
            if let Some(Transmit::ToClient { client, payload }) =
                self.core.handle_relayed_input(h.to, h.from, &mut h.buf, now)
            {
                send_to_client(&self.listeners, &self.streams, &client, payload);
            }
        }
        if self.core.has_commands() {
            self.run_commands();
        }
        for h in handoffs.drain(..) {
            if self.spare.len() < SPARE_BUFFERS {
                self.spare.push(h.buf);
            }
        }
        self.handoffs = handoffs;
    }

    fn read_relay(&mut self, token: Token) {
        let idx = token.0 - RELAY_BASE;
        let relay = RelayId::from_slot(idx);
        let mut bufs = std::mem::take(&mut self.relay_bufs);
        let mut metas = [RecvMeta::default(); BATCH];
        let mut read = 0;
        let drained = loop {
            if read >= READ_BUDGET {
                break false;
            }
            let Some(Some(r)) = self.relays.get(idx) else {
                break true;
            };
            let n = match recv_batch(&self.relay_state, r, &mut bufs, CHANNEL_HEADER, &mut metas) {
                Batch::Got(n) => n,
                Batch::Drained => break true,
                Batch::Failed => {
                    read += 1;
                    continue;
                }
            };
            let now = super::now();
            for (meta, buf) in metas.iter().zip(bufs.iter_mut()).take(n) {
                read += 1;
                let buf = &mut buf[..CHANNEL_HEADER + meta.len];
                if let Some(Transmit::ToClient { client, payload }) =
                    self.core.handle_peer_input(relay, meta.addr, buf, now)
                {
                    send_to_client(&self.listeners, &self.streams, &client, payload);
                }
                if self.core.has_commands() {
                    self.run_commands();
                }
            }
            if n < BATCH {
                break true;
            }
        };
        self.relay_bufs = bufs;
        if !drained {
            self.backlog.push(token);
        }
    }

    /// After a wave of allocations has mostly ended (at least 500 of them
    /// gone and at most half of the high-water mark left), and again when
    /// the rest of that wave is gone, shrinks the tables it grew and hands
    /// the freed heap pages back to the kernel. glibc keeps freed memory in
    /// its arenas; without this, RSS after a burst stays near its
    /// high-water mark.
    fn trim_heap(&mut self) {
        let now = self.core.allocation_count();
        self.trim_mark = self.trim_mark.max(now);
        let wave_over = self.trim_mark - now >= 500 && now <= self.trim_mark / 2;
        let rest_gone = self.trim_rest && now == 0;
        if !wave_over && !rest_gone {
            return;
        }
        self.trim_mark = now;
        self.trim_rest = now > 0;
        self.core.shrink();
        let unused_tail = self.relays.iter().rev().take_while(|r| r.is_none()).count();
        if unused_tail > self.relays.len() / 2 {
            self.relays.truncate(self.relays.len() - unused_tail);
            self.relays.shrink_to_fit();
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only walks the arenas and releases free pages.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    fn set_allocated(&self, client: &ClientAddr, allocated: bool) {
        if let Some(s) = self.streams.get(client) {
            s.allocated.store(allocated, Ordering::Relaxed);
        }
    }

    fn publish(&mut self) {
        self.sync_offloaded();
        let (permissions, channels) = self.core.bindings();
        let snapshot = super::Snapshot {
            stats: self.core.stats,
            permissions,
            channels,
            timers: self.core.pending_timers() as u64,
            offloaded: self.routes.as_ref().map_or(0, |r| r.len() as u64),
        };
        self.workers.publish(self.index, snapshot);
    }

    /// Takes what TCP and TLS connection tasks sent: new connections, their
    /// messages (handled as a UDP datagram would be) and closed connections
    /// (their allocations deleted now).
    fn drain_inbox(&mut self) {
        let Some(mut inbox) = self.inbox.take() else {
            return;
        };
        let mut budget = INBOX_BUDGET;
        self.inbox_backlog = loop {
            if budget == 0 {
                break true;
            }
            budget -= 1;
            match inbox.try_recv() {
                Ok(ToWorker::Open {
                    client,
                    link,
                    allocated,
                }) => {
                    self.streams.insert(client, StreamOut { link, allocated });
                }
                Ok(ToWorker::Data { client, msg }) => {
                    self.on_client_datagram(client, &msg, super::now());
                    if let Some(s) = self.streams.get(&client) {
                        s.link.recycle(msg);
                    }
                }
                Ok(ToWorker::Closed { client }) => {
                    self.streams.remove(&client);
                    self.core.handle_client_closed(&client, super::now());
                    self.run_commands();
                }
                Err(_) => break false,
            }
        };
        self.inbox = Some(inbox);
    }

    fn run_commands(&mut self) {
        while let Some(cmd) = self.core.poll_command() {
            match cmd {
                Command::SendToClient { client, data } => {
                    send_to_client(&self.listeners, &self.streams, &client, &data)
                }
                Command::OpenRelay {
                    relay,
                    addr,
                    hold,
                    reserved,
                } => {
                    let reserved = reserved.and_then(Held::into_inner::<std::net::UdpSocket>);
                    let result = self.open_relay(relay, addr, hold, reserved);
                    self.core.handle_relay_opened(relay, result, super::now());
                }
                Command::CloseRelay { relay } => {
                    if let Some(slot) = self.relays.get_mut(relay.slot()) {
                        if let Some(mut r) = slot.take() {
                            let _ = self.poll.registry().deregister(&mut r);
                        }
                    }
                }
                // A stream connection with an allocation is exempt from the
                // idle and setup timeouts, for as long as it has one.
                Command::Event(Event::AllocationCreated { client, .. }) => self.set_allocated(&client, true),
                Command::Event(Event::AllocationDeleted {
                    client,
                    relay,
                    mut usage,
                }) => {
                    self.set_allocated(&client, false);
                    // What the kernel relayed on its channels since the
                    // last credit (their ChannelEnded came first).
                    self.late.retain(|(r, d)| {
                        if *r == relay {
                            usage.totals.add(d);
                        }
                        *r != relay
                    });
                    usage.log(&client);
                }
                Command::Event(Event::ChannelBound {
                    relay,
                    channel,
                    peer,
                    until,
                    offload,
                    ..
                }) => {
                    if let Some(d) = self
                        .routes
                        .as_mut()
                        .and_then(|r| r.bound(relay, channel, peer, until, offload))
                    {
                        self.credit(relay, d);
                    }
                }
                Command::Event(Event::ChannelEnded { relay, channel, .. }) => {
                    if let Some(d) = self.routes.as_mut().and_then(|r| r.ended(relay, channel)) {
                        self.credit(relay, d);
                    }
                }
            }
        }
        // Every deletion's event came in the same drain as its channels'.
        self.late.clear();
    }

    /// Adds what the kernel relayed for `relay` to the core's counters (or,
    /// the allocation being gone, keeps it for its deletion's log line).
    fn credit(&mut self, relay: RelayId, d: Relayed) {
        if !self.core.credit_offloaded(relay, &d, Instant::now()) {
            self.late.push((relay, d));
        }
    }

    /// Credits what the kernel relayed on every live channel since last time.
    fn sync_offloaded(&mut self) {
        let Some(routes) = self.routes.as_mut() else {
            return;
        };
        let mut synced = std::mem::take(&mut self.synced);
        routes.sync(&mut synced);
        let now = Instant::now();
        for (relay, d) in &synced {
            self.core.credit_offloaded(*relay, d, now);
        }
        self.synced = synced;
    }

    /// Opens the relay socket of `relay` at `addr` (the `reserved` socket
    /// already bound there, when redeeming a reservation), and the socket
    /// held at `hold` for a new reservation.
    fn open_relay(
        &mut self,
        relay: RelayId,
        addr: SocketAddr,
        hold: Option<SocketAddr>,
        reserved: Option<std::net::UdpSocket>,
    ) -> Result<Opened, OpenError> {
        let std = match reserved {
            Some(sock) => sock,
            None => bind_relay(addr)?,
        };
        // Both or neither: on failure `std` closes here too.
        let held = hold.map(bind_relay).transpose()?.map(Held::new);
        let bound = std.local_addr().map_err(|_| OpenError::Failed)?;
        let mut sock = UdpSocket::from_std(std);
        self.poll
            .registry()
            .register(&mut sock, Token(RELAY_BASE + relay.slot()), Interest::READABLE)
            .map_err(|_| OpenError::Failed)?;
        if self.relays.len() <= relay.slot() {
            self.relays.resize_with(relay.slot() + 1, || None);
        }
        self.relays[relay.slot()] = Some(sock);
        Ok(Opened { bound, held })
    }
}

/// A relay socket at `addr`, or why not.
fn bind_relay(addr: SocketAddr) -> Result<std::net::UdpSocket, OpenError> {
    socket::bind_relay(addr).map_err(|e| {
        tracing::debug!(%addr, error = %e, "relay bind failed");
        if e.kind() == io::ErrorKind::AddrInUse {
            OpenError::InUse
        } else {
            OpenError::Failed
        }
    })
}

/// What one recvmmsg call gave.
enum Batch {
    Got(usize),
    /// WouldBlock: nothing queued.
    Drained,
    /// An error (ICMP errors and the like): nothing to do but read on.
    Failed,
}

/// One recvmmsg on `sock` into `bufs` (retried when interrupted), each
/// datagram `offset` bytes into its buffer (header room for peer data).
fn recv_batch(
    state: &UdpSocketState,
    sock: &UdpSocket,
    bufs: &mut [Vec<u8>],
    offset: usize,
    metas: &mut [RecvMeta; BATCH],
) -> Batch {
    let mut it = bufs.iter_mut();
    let mut iovs: [IoSliceMut<'_>; BATCH] =
        std::array::from_fn(|_| IoSliceMut::new(&mut it.next().expect("BATCH buffers exist")[offset..]));
    loop {
        return match state.recv(UdpSockRef::from(sock), &mut iovs, metas) {
            Ok(n) => Batch::Got(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Batch::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::trace!(error = %e, "recv error");
                Batch::Failed
            }
        };
    }
}

fn send_to_client(
    listeners: &[Listener],
    streams: &HashMap<ClientAddr, StreamOut, ahash::RandomState>,
    client: &ClientAddr,
    payload: &[u8],
) {
    if client.transport.is_stream() {
        // A full queue: the client is not reading; the message is lost as a
        // datagram would be.
        if let Some(s) = streams.get(client) {
            s.link.push(payload);
        }
    } else if let Some(l) = listeners.iter().find(|l| l.serves(&client.local)) {
        l.send(client, payload);
    }
}
