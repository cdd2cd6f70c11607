//! The I/O drivers: worker threads that move bytes between sockets and the
//! [`crate::proto`] core.

pub mod socket;
pub mod stream;
pub mod tcp;
pub mod udp;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::Context;
use mio::{Poll, Waker};

use crate::proto::{CoreConfig, Server, Shared};

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
    pub fn name(&self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls(_) => "tls",
            Self::Auto { .. } => "auto",
        }
    }
}

/// How the rest of turnd steers running workers: stop, and the core
/// configuration they run with (a reload stores a new one and wakes them).
pub struct Control {
    shutdown: AtomicBool,
    epoch: AtomicU64,
    config: Mutex<Arc<CoreConfig>>,
    /// Loop turns of each worker, for the watchdog.
    turns: Vec<AtomicU64>,
}

impl Control {
    fn new(config: Arc<CoreConfig>, workers: usize) -> Self {
        Self {
            shutdown: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            config: Mutex::new(config),
            turns: (0..workers).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Worker `i` went once round its loop.
    pub fn turned(&self, i: usize) {
        if let Some(t) = self.turns.get(i) {
            t.fetch_add(1, Ordering::Relaxed);
        }
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
pub struct Spec {
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
}

/// A running relay: its bound addresses and the means to stop it.
pub struct Running {
    pub udp: Vec<SocketAddr>,
    /// Bound TCP, TLS and auto listeners, in the order of [`Spec::streams`].
    pub streams: Vec<(SocketAddr, &'static str)>,
    /// The runtime of the TCP and TLS connections, when there are any.
    runtime: Option<tokio::runtime::Runtime>,
    /// Cross-worker state: ports in use and allocation counts.
    pub shared: Arc<Shared>,
    control: Arc<Control>,
    wakers: Vec<Arc<Waker>>,
    threads: Vec<JoinHandle<()>>,
}

/// Binds every listener for every worker and starts the workers. Nothing runs
/// if any bind fails.
pub fn start(spec: Spec) -> anyhow::Result<Running> {
    let workers = spec.workers.max(1);
    // The first worker's binds fix port 0 to a real port for the others.
    let mut addrs = spec.udp.clone();
    let mut per_worker: Vec<Vec<udp::Listener>> = Vec::new();
    for _ in 0..workers {
        let mut ls = Vec::new();
        for addr in addrs.iter_mut() {
            let s = socket::bind_listener(*addr).with_context(|| format!("cannot listen on udp {addr}"))?;
            *addr = s.local_addr()?;
            ls.push(udp::Listener::new(s).with_context(|| format!("cannot set up udp {addr}"))?);
        }
        per_worker.push(ls);
    }
    let control = Arc::new(Control::new(spec.core.clone(), workers));
    let mut polls = Vec::new();
    let mut wakers = Vec::new();
    for _ in 0..workers {
        let poll = Poll::new()?;
        wakers.push(Arc::new(Waker::new(poll.registry(), udp::WAKER)?));
        polls.push(poll);
    }
    let (runtime, streams, mut inboxes) = if spec.streams.is_empty() {
        (None, Vec::new(), Vec::new())
    } else {
        let (bridge, inboxes) = stream::Bridge::new(&wakers);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("turnd-tcp")
            .enable_all()
            .build()
            .context("cannot start the TCP runtime")?;
        let gate = tcp::Gate::new(spec.limits);
        let mut bound = Vec::new();
        let _guard = rt.enter();
        let mut listeners = Vec::new();
        for l in &spec.streams {
            let kind = l.kind.name();
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
            tcp::spawn_accept(listener, kind, bridge.clone(), gate.clone());
        }
        (Some(rt), bound, inboxes)
    };
    let mut threads = Vec::new();
    for (i, (listeners, poll)) in per_worker.into_iter().zip(polls).enumerate() {
        let core = Server::new(
            spec.core.clone(),
            spec.shared.clone(),
            spec.seed.wrapping_add(i as u64),
            spec.nonce_key,
        );
        let inbox = (!inboxes.is_empty()).then(|| inboxes.remove(0));
        let worker = udp::Worker::new(i, poll, core, listeners, inbox, control.clone())?;
        threads.push(
            std::thread::Builder::new()
                .name(format!("turnd-worker-{i}"))
                .spawn(move || worker.run())?,
        );
    }
    Ok(Running {
        udp: addrs,
        streams,
        runtime,
        shared: spec.shared,
        control,
        wakers,
        threads,
    })
}

impl Running {
    /// Every worker runs with `cfg` from its next loop turn on (they are
    /// woken for it).
    pub fn set_config(&self, cfg: Arc<CoreConfig>) {
        *self.control.config.lock().unwrap_or_else(|p| p.into_inner()) = cfg;
        self.control.epoch.fetch_add(1, Ordering::AcqRel);
        for w in &self.wakers {
            let _ = w.wake();
        }
    }

    /// Whether every worker goes round its loop: they are woken, and each
    /// must turn within `limit` (for the systemd watchdog: a stuck worker
    /// stops the pings and systemd restarts turnd).
    pub fn workers_alive(&self, limit: std::time::Duration) -> bool {
        let before: Vec<u64> = self.control.turns.iter().map(|t| t.load(Ordering::Relaxed)).collect();
        for w in &self.wakers {
            let _ = w.wake();
        }
        let end = std::time::Instant::now() + limit;
        loop {
            let all = self
                .control
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

    /// Stops the workers and waits for them; their sockets close with them.
    pub fn stop(self) {
        if let Some(rt) = self.runtime {
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
        }
        self.control.shutdown.store(true, Ordering::Relaxed);
        for w in &self.wakers {
            let _ = w.wake();
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Whether this host can open IPv6 sockets at all.
pub fn ipv6_available() -> bool {
    std::net::UdpSocket::bind("[::1]:0").is_ok()
}

pub fn io_error_is_af(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EAFNOSUPPORT) || e.raw_os_error() == Some(libc::EADDRNOTAVAIL)
}
