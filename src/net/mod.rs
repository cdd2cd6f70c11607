//! The I/O drivers: worker threads that move bytes between sockets and the
//! [`crate::proto`] core.

pub mod pool;
pub mod sim;
pub mod socket;
pub mod stream;
pub mod tcp;
pub mod udp;
pub mod xdp;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::Context;
use mio::{Poll, Waker};

use crate::config::ListenTransport;
use crate::proto::{CoreConfig, Now, RelayHandle, Server, Session};

pub use pool::Shared;

/// Handoffs waiting for one worker before more are dropped (as a full
/// socket buffer would drop them).
const HANDOFF_QUEUE: usize = 4096;

/// Data from one allocation of this turnd to another that lives on another
/// worker ([`crate::proto::Transmit::ToRelay`]), on its way there.
pub struct Handoff {
    pub to: RelayHandle,
    pub from: SocketAddr,
    /// [`crate::proto::wire::CHANNEL_HEADER`] bytes of room, then the payload.
    pub buf: Vec<u8>,
}

/// A TCP listener for TURN.
pub struct StreamListener {
    pub addr: SocketAddr,
    pub kind: StreamKind,
}

/// What a TCP listener speaks.
#[derive(Clone)]
pub enum StreamKind {
    /// TURN over TCP.
    Tcp,
    /// TURN over TLS.
    Tls(Arc<rustls::ServerConfig>),
    /// Told apart by the first bytes: TLS or plain, then TURN or HTTP. HTTP
    /// connections go to `http` (closed when there is none).
    Auto {
        tls: Arc<rustls::ServerConfig>,
        http: Option<tokio::sync::mpsc::Sender<stream::HttpConn>>,
    },
}

impl StreamKind {
    /// The listener transport this is.
    pub fn transport(&self) -> ListenTransport {
        match self {
            Self::Tcp => ListenTransport::Tcp,
            Self::Tls(_) => ListenTransport::Tls,
            Self::Auto { .. } => ListenTransport::Auto,
        }
    }
}

/// How the rest of turnd steers running workers: stop, and the core
/// configuration they run with (a reload stores a new one and wakes them).
pub struct Workers {
    shutdown: AtomicBool,
    epoch: AtomicU64,
    config: Mutex<Arc<CoreConfig>>,
    /// Loop turns of each worker, for the watchdog.
    turns: Vec<AtomicU64>,
    /// Each worker's counters, copied out about once a second.
    snapshots: Mutex<Vec<Snapshot>>,
    /// Operator requests waiting for each worker, and whether there are
    /// any (so a worker's loop turn costs one load, not a lock).
    jobs: Vec<(AtomicBool, Mutex<Vec<Job>>)>,
    wakers: Vec<Arc<Waker>>,
    /// Handoffs waiting for each worker, and whether there are any.
    handoffs: Vec<(AtomicBool, Mutex<Vec<Handoff>>)>,
    /// The kernel's data path, and what is in force.
    pub xdp: Option<Arc<xdp::Offload>>,
    pub xdp_in_force: xdp::InForce,
}

/// An operator's request to one worker, answered on the channel.
pub enum Job {
    Sessions(std::sync::mpsc::Sender<Vec<Session>>),
    KillUser(String, std::sync::mpsc::Sender<usize>),
}

/// A worker's counters at one moment.
#[derive(Debug, Default, Clone, Copy)]
pub struct Snapshot {
    pub stats: crate::proto::Stats,
    pub permissions: u64,
    pub channels: u64,
    pub timers: u64,
    /// Channels the kernel relays.
    pub offloaded: u64,
}

impl Workers {
    fn new(
        config: Arc<CoreConfig>,
        wakers: Vec<Arc<Waker>>,
        xdp: Option<Arc<xdp::Offload>>,
        xdp_in_force: xdp::InForce,
    ) -> Self {
        let workers = wakers.len();
        Self {
            shutdown: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            config: Mutex::new(config),
            turns: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            snapshots: Mutex::new(vec![Snapshot::default(); workers]),
            jobs: (0..workers)
                .map(|_| (AtomicBool::new(false), Mutex::new(Vec::new())))
                .collect(),
            handoffs: (0..workers)
                .map(|_| (AtomicBool::new(false), Mutex::new(Vec::new())))
                .collect(),
            wakers,
            xdp,
            xdp_in_force,
        }
    }

    /// How many workers there are.
    pub fn count(&self) -> usize {
        self.wakers.len()
    }

    /// Queues `batch` (emptied) for worker `i` and wakes it. Returns the
    /// buffers of what did not fit, for reuse: those handoffs are dropped.
    pub fn hand_off(&self, i: usize, batch: &mut Vec<Handoff>) -> Vec<Vec<u8>> {
        let Some((pending, queue)) = self.handoffs.get(i) else {
            return batch.drain(..).map(|h| h.buf).collect();
        };
        let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
        let room = HANDOFF_QUEUE.saturating_sub(q.len()).min(batch.len());
        let dropped = batch.drain(room..).map(|h| h.buf).collect();
        q.append(batch);
        drop(q);
        pending.store(true, Ordering::Release);
        if let Some(w) = self.wakers.get(i) {
            let _ = w.wake();
        }
        dropped
    }

    /// Worker `i`'s waiting handoffs, swapped into `into` (which must be
    /// empty).
    pub fn take_handoffs(&self, i: usize, into: &mut Vec<Handoff>) {
        if let Some((pending, queue)) = self.handoffs.get(i) {
            if pending.swap(false, Ordering::Acquire) {
                std::mem::swap(&mut *queue.lock().unwrap_or_else(|p| p.into_inner()), into);
            }
        }
    }

    fn wake_all(&self) {
        for w in &self.wakers {
            let _ = w.wake();
        }
    }

    /// Worker `i`'s waiting requests, taken.
    pub fn take_jobs(&self, i: usize) -> Vec<Job> {
        match self.jobs.get(i) {
            Some((pending, jobs)) if pending.swap(false, Ordering::Acquire) => {
                std::mem::take(&mut *jobs.lock().unwrap_or_else(|p| p.into_inner()))
            }
            _ => Vec::new(),
        }
    }

    /// Asks every worker and collects the answers that come within `limit`.
    fn ask<T>(&self, job: impl Fn(std::sync::mpsc::Sender<T>) -> Job, limit: std::time::Duration) -> Vec<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        for (pending, jobs) in &self.jobs {
            jobs.lock().unwrap_or_else(|p| p.into_inner()).push(job(tx.clone()));
            pending.store(true, Ordering::Release);
        }
        drop(tx);
        self.wake_all();
        let end = std::time::Instant::now() + limit;
        let mut out = Vec::new();
        while out.len() < self.jobs.len() {
            match rx.recv_timeout(end.saturating_duration_since(std::time::Instant::now())) {
                Ok(v) => out.push(v),
                Err(_) => break,
            }
        }
        out
    }

    /// Every allocation on every worker.
    pub fn sessions(&self) -> Vec<Session> {
        self.ask(Job::Sessions, std::time::Duration::from_secs(2))
            .into_iter()
            .flatten()
            .collect()
    }

    /// Deletes every allocation of `user`; returns how many.
    pub fn kill_user(&self, user: &str) -> usize {
        self.ask(
            |tx| Job::KillUser(user.to_string(), tx),
            std::time::Duration::from_secs(2),
        )
        .into_iter()
        .sum()
    }

    /// Worker `i` publishes its counters.
    pub fn publish(&self, i: usize, snapshot: Snapshot) {
        if let Some(s) = self.snapshots.lock().unwrap_or_else(|p| p.into_inner()).get_mut(i) {
            *s = snapshot;
        }
    }

    /// The sum over workers of their last published counters.
    pub fn totals(&self) -> Snapshot {
        let all = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        let mut sum = Snapshot::default();
        for s in all.iter() {
            sum.stats.add(&s.stats);
            sum.permissions += s.permissions;
            sum.channels += s.channels;
            sum.timers += s.timers;
            sum.offloaded += s.offloaded;
        }
        sum
    }

    /// Worker `i` went once round its loop.
    pub fn turned(&self, i: usize) {
        if let Some(t) = self.turns.get(i) {
            t.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether every worker goes round its loop: they are woken, and each
    /// must turn within `limit` (for the systemd watchdog: a stuck worker
    /// stops the pings and systemd restarts turnd). Blocks up to `limit`.
    pub fn alive(&self, limit: std::time::Duration) -> bool {
        let before: Vec<u64> = self.turns.iter().map(|t| t.load(Ordering::Relaxed)).collect();
        self.wake_all();
        let end = std::time::Instant::now() + limit;
        loop {
            let all = self
                .turns
                .iter()
                .zip(&before)
                .all(|(t, b)| t.load(Ordering::Relaxed) != *b);
            if all {
                return true;
            }
            if std::time::Instant::now() >= end {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Tells every worker to stop, and wakes them to see it.
    pub fn stop(&self) {
        self.shutdown.store(true, Ordering::Relaxed);
        self.wake_all();
    }

    pub fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// Changes with every new configuration: a worker compares it to the
    /// one it applied, once per loop turn.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn config(&self) -> Arc<CoreConfig> {
        self.config.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What to start.
pub struct RelaySpec {
    /// UDP listener addresses (port 0 picks one, shared by all workers).
    pub udp: Vec<SocketAddr>,
    /// TCP and TLS listeners.
    pub streams: Vec<StreamListener>,
    pub limits: tcp::Limits,
    pub workers: usize,
    pub core: Arc<CoreConfig>,
    pub shared: Arc<Shared>,
    pub nonce_key: [u8; 32],
    pub seed: u64,
    /// The kernel's data path (`[xdp]`).
    pub xdp: crate::config::XdpConfig,
}

/// A running relay: its bound addresses and the means to stop it.
pub struct Relay {
    pub udp: Vec<SocketAddr>,
    /// Bound TCP, TLS and auto listeners, in the order of [`RelaySpec::streams`].
    pub streams: Vec<(SocketAddr, ListenTransport)>,
    /// Cross-worker state: ports in use and allocation counts.
    pub shared: Arc<Shared>,
    pub workers: Arc<Workers>,
    /// TCP connection counts, when there are stream listeners.
    pub gate: Option<Arc<tcp::Gate>>,
    threads: Vec<JoinHandle<()>>,
}

/// Binds every listener for every worker and starts the workers, the TCP and
/// TLS side as `tasks`. Nothing runs if any bind fails. The workers stop
/// when `tasks` are cancelled (or on [`Relay::stop`]).
pub fn start(spec: RelaySpec, tasks: &crate::lifecycle::Tasks) -> anyhow::Result<Relay> {
    let count = spec.workers.max(1);
    // The first worker's binds fix port 0 to a real port for the others.
    let mut addrs = spec.udp.clone();
    let mut per_worker: Vec<Vec<udp::Listener>> = Vec::new();
    for _ in 0..count {
        let mut ls = Vec::new();
        for addr in addrs.iter_mut() {
            let s = socket::bind_listener(*addr).with_context(|| format!("cannot listen on udp {addr}"))?;
            *addr = s.local_addr()?;
            ls.push(udp::Listener::new(s).with_context(|| format!("cannot set up udp {addr}"))?);
        }
        per_worker.push(ls);
    }
    let mut polls = Vec::new();
    let mut wakers = Vec::new();
    for _ in 0..count {
        let poll = Poll::new()?;
        wakers.push(Arc::new(Waker::new(poll.registry(), udp::WAKER)?));
        polls.push(poll);
    }
    let (offload, in_force) = start_xdp(&spec, &addrs, count)?;
    let workers = Arc::new(Workers::new(spec.core.clone(), wakers.clone(), offload, in_force));
    let (streams, mut inboxes, gate) = if spec.streams.is_empty() {
        (Vec::new(), Vec::new(), None)
    } else {
        let (bridge, inboxes) = stream::Bridge::new(&wakers);
        let gate = tcp::Gate::new(spec.limits.max_connections, spec.limits.max_per_address);
        let mut bound = Vec::new();
        let _guard = tasks.handle().enter();
        let mut listeners = Vec::new();
        for l in &spec.streams {
            let kind = l.kind.transport();
            let std = tcp::bind(l.addr).map_err(|e| {
                let hint = if e.kind() == io::ErrorKind::PermissionDenied && l.addr.port() < 1024 {
                    " (ports below 1024 need root or CAP_NET_BIND_SERVICE, which systemd/turnd.service grants)"
                } else {
                    ""
                };
                anyhow::anyhow!("cannot listen on {kind} {}: {e}{hint}", l.addr)
            })?;
            bound.push((std.local_addr()?, kind));
            listeners.push((tokio::net::TcpListener::from_std(std)?, l.kind.clone()));
        }
        // Only once every bind worked: nothing runs if one fails.
        for (listener, kind) in listeners {
            tcp::spawn_accept(tasks, listener, kind, bridge.clone(), gate.clone(), spec.limits);
        }
        (bound, inboxes, Some(gate))
    };
    let mut threads = Vec::new();
    for (i, (listeners, poll)) in per_worker.into_iter().zip(polls).enumerate() {
        let core = Server::new(
            spec.core.clone(),
            spec.shared.clone(),
            spec.seed.wrapping_add(i as u64),
            spec.nonce_key,
        )
        .with_worker(u16::try_from(i).context("too many workers")?);
        let inbox = (!inboxes.is_empty()).then(|| inboxes.remove(0));
        let routes = match &workers.xdp {
            Some(x) => Some(x.routes(i).map_err(|e| anyhow::anyhow!("xdp maps: {e}"))?),
            None => None,
        };
        let worker = udp::Worker::new(i, poll, core, listeners, inbox, workers.clone(), routes)?;
        threads.push(
            std::thread::Builder::new()
                .name(format!("turnd-worker-{i}"))
                .spawn(move || worker.run())?,
        );
    }
    let stopping = workers.clone();
    tasks.on_cancel(move || stopping.stop());
    Ok(Relay {
        udp: addrs,
        streams,
        gate,
        shared: spec.shared,
        workers,
        threads,
    })
}

/// Loads and attaches the XDP program when `[xdp]` asks for it, to the
/// configured interfaces or those that carry the UDP listeners (`udp`, as
/// bound) and relay addresses.
fn start_xdp(
    spec: &RelaySpec,
    udp: &[SocketAddr],
    workers: usize,
) -> anyhow::Result<(Option<Arc<xdp::Offload>>, xdp::InForce)> {
    let c = &spec.core;
    let relay_ips: Vec<std::net::IpAddr> = [c.relay_ipv4.map(Into::into), c.relay_ipv6.map(Into::into)]
        .into_iter()
        .flatten()
        .collect();
    let interfaces = xdp::interfaces(&spec.xdp, udp, &relay_ips);
    let families = xdp::Families {
        v4: udp.iter().any(|a| a.is_ipv4()),
        v6: udp.iter().any(|a| a.is_ipv6()),
    };
    let (offload, in_force) =
        xdp::Offload::start(&spec.xdp, interfaces, families, workers).map_err(|e| anyhow::anyhow!("xdp: {e}"))?;
    match &in_force {
        xdp::InForce::Off => {}
        xdp::InForce::On { .. } => tracing::info!(xdp = %in_force, "ChannelData over UDP relayed in the kernel"),
        xdp::InForce::Fallback(_) => tracing::warn!(xdp = %in_force, "xdp mode auto"),
    }
    Ok((offload.map(Arc::new), in_force))
}

impl Relay {
    /// Every worker runs with `cfg` from its next loop turn on (they are
    /// woken for it).
    pub fn set_config(&self, cfg: Arc<CoreConfig>) {
        *self.workers.config.lock().unwrap_or_else(|p| p.into_inner()) = cfg;
        // The kernel path copies the host's settings (TTL, hop limits,
        // reverse-path filters, MACs): read again with the configuration.
        if let Some(x) = &self.workers.xdp {
            if let Err(e) = x.refresh() {
                tracing::warn!(error = %e, "xdp: cannot read the host's settings again");
            }
        }
        self.workers.epoch.fetch_add(1, Ordering::AcqRel);
        self.workers.wake_all();
    }

    /// Stops the workers and waits for them; their sockets close with them.
    pub fn stop(self) {
        self.workers.stop();
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// The time now, as the core takes it: the drivers read the clocks, the
/// core never does.
pub fn now() -> Now {
    Now {
        mono: std::time::Instant::now(),
        unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// Whether this host can open IPv6 sockets at all.
pub fn ipv6_available() -> bool {
    std::net::UdpSocket::bind("[::1]:0").is_ok()
}

pub fn io_error_is_af(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EAFNOSUPPORT) || e.raw_os_error() == Some(libc::EADDRNOTAVAIL)
}
