//! The drivers' side of [`SharedState`]: the cores of every worker share one
//! [`Pool`] behind a mutex, taken on the control path only (Allocate,
//! expiry, reservations) and for a peer on turnd's own address.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::proto::shared::{Pool, SharedState};
use crate::proto::RelayHandle;

/// Cross-worker state: relay ports, allocation counts, reservations, live
/// relays, draining.
#[derive(Debug)]
pub struct Shared {
    pool: Mutex<Pool>,
    draining: AtomicBool,
    /// Told when the last allocation ends while draining.
    drained: tokio::sync::Notify,
}

impl Shared {
    pub fn new(min_port: u16, max_port: u16) -> Self {
        Self {
            pool: Mutex::new(Pool::new(min_port, max_port)),
            draining: AtomicBool::new(false),
            drained: tokio::sync::Notify::new(),
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
}
