//! The drivers' side of [`SharedState`]: the cores of every worker share one
//! [`Pool`] behind a mutex, taken on the control path only (Allocate,
//! expiry, reservations) and for a peer on turnd's own address.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};

use crate::proto::shared::{Pool, SharedState};
use crate::proto::{RelayHandle, Transport};

/// Where draining sends new clients, by the transport they came over
/// (UDP, TCP, TLS) and the family of the address they reached (IPv4,
/// IPv6): a live sibling's listener of the same kind.
pub type Alternates = [[Option<SocketAddr>; 2]; 3];

/// Cross-worker state: relay ports, allocation counts, reservations, live
/// relays, draining.
#[derive(Debug)]
pub struct Shared {
    pool: Mutex<Pool>,
    draining: AtomicBool,
    /// Told when the last allocation ends while draining.
    drained: tokio::sync::Notify,
    /// Set by the fleet's poller ([`crate::cluster`]); empty without one.
    alternates: RwLock<Alternates>,
}

impl Shared {
    pub fn new(min_port: u16, max_port: u16) -> Self {
        Self {
            pool: Mutex::new(Pool::new(min_port, max_port)),
            draining: AtomicBool::new(false),
            drained: tokio::sync::Notify::new(),
            alternates: RwLock::new(Alternates::default()),
        }
    }

    /// From now on every worker refuses new allocations (300 with
    /// ALTERNATE-SERVER when one is configured, else 508).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.tell_if_drained(&self.lock());
    }

    /// Resolves once draining has started and no allocation is left.
    pub async fn drained(&self) {
        loop {
            let told = self.drained.notified();
            if self.draining() && self.lock().total == 0 {
                return;
            }
            told.await;
        }
    }

    /// Where new clients go while draining (see [`Alternates`]).
    pub fn set_alternates(&self, a: Alternates) {
        *self.alternates.write().unwrap_or_else(|e| e.into_inner()) = a;
    }

    /// Whether turnd is draining (SIGTERM).
    pub fn is_draining(&self) -> bool {
        self.draining()
    }

    fn tell_if_drained(&self, pool: &Pool) {
        if pool.total == 0 && self.draining() {
            self.drained.notify_waiters();
        }
    }

    /// Locks the pool (metrics and tests read it). A worker that panicked
    /// while holding the lock left counts that are still consistent (every
    /// update is a single step), so a poisoned lock is used as is.
    pub fn lock(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SharedState for Shared {
    fn with_pool(&self, f: &mut dyn FnMut(&mut Pool)) {
        let mut pool = self.lock();
        f(&mut pool);
        self.tell_if_drained(&pool);
    }

    fn relay_at(&self, addr: SocketAddr) -> Option<RelayHandle> {
        self.lock().relay_at(addr)
    }

    fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    fn alternate(&self, transport: Transport, local: SocketAddr) -> Option<SocketAddr> {
        let a = self.alternates.read().unwrap_or_else(|e| e.into_inner());
        a[transport as usize][usize::from(local.is_ipv6())]
    }
}
