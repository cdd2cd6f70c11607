//! What the workers' cores share: the relay port range, allocation counts
//! and budgets, reservations and the directory of live relays ([`Pool`],
//! plain data), reached through [`SharedState`], an interface the drivers
//! implement with whatever lock they choose (`net::Shared` takes a mutex on
//! the control path only). The core itself takes no lock; the one thing
//! relayed packets touch is a user's [`UserBudget`] (atomics, and only when
//! `relay.max-bps-per-user` is set).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rand::Rng;

use super::addr::RelayHandle;

/// The relay port range, as a bitmap of ports in use.
#[derive(Debug)]
pub struct PortPool {
    min: u16,
    max: u16,
    used: Vec<bool>,
    in_use: usize,
}

impl PortPool {
    pub fn new(min: u16, max: u16) -> Self {
        let (min, max) = (min.min(max), min.max(max));
        Self {
            min,
            max,
            used: vec![false; (max - min) as usize + 1],
            in_use: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.used.len()
    }

    pub fn in_use(&self) -> usize {
        self.in_use
    }

    fn idx(&self, port: u16) -> Option<usize> {
        (self.min..=self.max)
            .contains(&port)
            .then(|| (port - self.min) as usize)
    }

    fn is_free(&self, port: u16) -> bool {
        self.idx(port).is_some_and(|i| !self.used[i])
    }

    fn set(&mut self, port: u16, used: bool) {
        if let Some(i) = self.idx(port) {
            if self.used[i] != used {
                self.used[i] = used;
                if used {
                    self.in_use += 1;
                } else {
                    self.in_use -= 1;
                }
            }
        }
    }

    /// Takes a free port chosen at random
    /// ([RFC 8656 §7.2](https://www.rfc-editor.org/rfc/rfc8656#section-7.2) asks for unpredictable ports).
    /// With `even`, the port is even; with `pair`, `port + 1` is free too and
    /// taken as well (EVEN-PORT with the R bit).
    pub fn take(&mut self, rng: &mut impl Rng, even: bool, pair: bool) -> Option<u16> {
        let n = self.used.len();
        if self.in_use >= n {
            return None;
        }
        let start = rng.random_range(0..n);
        for k in 0..n {
            let port = self.min + ((start + k) % n) as u16;
            if even && port % 2 != 0 {
                continue;
            }
            if !self.is_free(port) {
                continue;
            }
            if pair {
                let Some(next) = port.checked_add(1) else { continue };
                if !self.is_free(next) {
                    continue;
                }
                self.set(next, true);
            }
            self.set(port, true);
            return Some(port);
        }
        None
    }

    pub fn release(&mut self, port: u16) {
        self.set(port, false);
    }
}

/// A port held for a later Allocate carrying RESERVATION-TOKEN
/// ([RFC 8656 §7.2](https://www.rfc-editor.org/rfc/rfc8656#section-7.2), EVEN-PORT R bit):
/// the one record of it, with the driver's socket that keeps the port from
/// the rest of the host. The socket goes where the reservation goes: to the
/// Allocate that redeems it, or closed when it expires.
#[derive(Debug)]
pub struct Reservation {
    pub ip: IpAddr,
    pub port: u16,
    pub expires: Instant,
    /// The socket bound at the port, once the driver has reported it.
    pub held: Option<Held>,
}

impl Reservation {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

/// Something a driver keeps open for a reservation (its bound socket),
/// opaque to the core, which only moves it and drops it.
pub struct Held(Box<dyn std::any::Any + Send>);

impl Held {
    pub fn new<T: std::any::Any + Send>(t: T) -> Self {
        Self(Box::new(t))
    }

    /// What the driver put in, if it is a `T`.
    pub fn into_inner<T: std::any::Any>(self) -> Option<T> {
        self.0.downcast::<T>().ok().map(|b| *b)
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held(..)")
    }
}

/// The shared state itself.
#[derive(Debug)]
pub struct Pool {
    pub ports: PortPool,
    /// Each user's allocation count and shared bandwidth budget.
    pub per_user: HashMap<String, (u32, Arc<UserBudget>)>,
    pub total: u32,
    pub reservations: HashMap<u64, Reservation>,
    /// Every live relayed address of this turnd, bound and advertised,
    /// with the relay it belongs to: a peer at one of them is another
    /// allocation of this process, reached without a trip through the
    /// kernel (and whatever the peer policy says of its address).
    relays: HashMap<SocketAddr, RelayHandle>,
    /// Allocations whose client has been silent for
    /// `relay.replace-idle-after`, by quota user, longest silent first
    /// (their own worker marks and unmarks them).
    idle: HashMap<String, Vec<RelayHandle>>,
    /// Idle allocations a newer one of the same user replaced, for their
    /// own worker to delete.
    replaced: Vec<RelayHandle>,
}

/// What [`Pool::admit`] grants.
#[derive(Debug)]
pub struct Admitted {
    /// The user's bandwidth budget, shared by its allocations.
    pub budget: Arc<UserBudget>,
    /// An idle allocation of the same user this one replaces (the quota
    /// was full): its worker deletes it.
    pub replaces: Option<RelayHandle>,
}

/// How a core reaches the [`Pool`] it shares with the other workers' cores.
pub trait SharedState: Send + Sync {
    /// Runs `f` on the pool, with no other core in it meanwhile.
    fn with_pool(&self, f: &mut dyn FnMut(&mut Pool));
    /// The live relay whose bound or advertised address is `addr` (asked
    /// per packet to a peer of turnd's own address).
    fn relay_at(&self, addr: SocketAddr) -> Option<RelayHandle>;
    /// Shutting down: new allocations are refused, existing ones go on.
    fn draining(&self) -> bool;
    /// Where a client that reached this turnd over `transport` on an
    /// address of the family of `local` is sent while it drains (300
    /// ALTERNATE-SERVER): a live sibling of the fleet (`[cluster]`), when
    /// one is known; otherwise the configured `alternate-server` applies.
    fn alternate(&self, transport: crate::proto::Transport, local: SocketAddr) -> Option<SocketAddr> {
        let _ = (transport, local);
        None
    }
}

impl dyn SharedState + '_ {
    /// [`SharedState::with_pool`] returning what `f` returns.
    pub fn with<R>(&self, f: impl FnOnce(&mut Pool) -> R) -> R {
        let mut f = Some(f);
        let mut out = None;
        self.with_pool(&mut |pool| {
            if let Some(f) = f.take() {
                out = Some(f(pool));
            }
        });
        out.expect("with_pool runs its closure once")
    }
}

impl Pool {
    pub fn new(min_port: u16, max_port: u16) -> Self {
        Self {
            ports: PortPool::new(min_port, max_port),
            per_user: HashMap::new(),
            total: 0,
            reservations: HashMap::new(),
            relays: HashMap::new(),
            idle: HashMap::new(),
            replaced: Vec::new(),
        }
    }

    /// The live relay whose bound or advertised address is `addr`.
    pub fn relay_at(&self, addr: SocketAddr) -> Option<RelayHandle> {
        self.relays.get(&addr).copied()
    }
}

impl Pool {
    /// Counts one more allocation for `user` and hands out the user's
    /// bandwidth budget (shared by all its allocations on every worker), or
    /// says which quota is full. A full quota with an idle allocation of
    /// the same user still admits: the idle one is replaced (see
    /// [`Admitted::replaces`]), so the count is back within the quota once
    /// it is deleted.
    pub fn admit(
        &mut self,
        user: &str,
        per_user_max: u32,
        total_max: u32,
        now: Instant,
    ) -> Result<Admitted, QuotaFull> {
        let full = if self.total >= total_max {
            Some(QuotaFull::Total)
        } else if self.per_user.get(user).is_some_and(|(n, _)| *n >= per_user_max) {
            Some(QuotaFull::User)
        } else {
            None
        };
        let replaces = match full {
            None => None,
            Some(full) => match self.idle.get_mut(user).filter(|l| !l.is_empty()) {
                Some(list) => {
                    let h = list.remove(0);
                    self.replaced.push(h);
                    Some(h)
                }
                None => return Err(full),
            },
        };
        let entry = self
            .per_user
            .entry(user.to_owned())
            .or_insert_with(|| (0, Arc::new(UserBudget::new(now))));
        entry.0 += 1;
        self.total += 1;
        Ok(Admitted {
            budget: entry.1.clone(),
            replaces,
        })
    }

    /// Takes back an admission whose allocation could not be made: the
    /// idle allocation it would have replaced stays.
    pub fn unadmit(&mut self, user: &str, admitted: &Admitted) {
        self.release(user, None);
        if let Some(h) = admitted.replaces {
            self.replaced.retain(|r| *r != h);
            self.set_idle(user, h, true);
        }
    }

    /// An allocation of `user` became idle (its client silent for the
    /// configured time) or active again.
    pub fn set_idle(&mut self, user: &str, relay: RelayHandle, idle: bool) {
        let list = self.idle.entry(user.to_owned()).or_default();
        list.retain(|h| *h != relay);
        if idle {
            list.push(relay);
        }
        if list.is_empty() {
            self.idle.remove(user);
        }
    }

    /// Replaced allocations of `worker`, handed over for deletion.
    pub fn take_replaced(&mut self, worker: u16) -> Vec<RelayHandle> {
        let mut mine = Vec::new();
        self.replaced.retain(|h| {
            let m = h.worker == worker;
            if m {
                mine.push(*h);
            }
            !m
        });
        mine
    }

    /// Makes `relay` reachable as a peer at its bound and advertised
    /// addresses.
    pub fn register_relay(&mut self, bound: SocketAddr, advertised: SocketAddr, relay: RelayHandle) {
        self.relays.insert(bound, relay);
        self.relays.insert(advertised, relay);
    }

    /// Every live relayed address (bound and advertised).
    pub fn relay_addresses(&self) -> Vec<SocketAddr> {
        self.relays.keys().copied().collect()
    }

    /// The allocation of `relay` is gone: its addresses stop being peers
    /// at once.
    pub fn unregister_relay(&mut self, bound: SocketAddr, advertised: SocketAddr, relay: RelayHandle) {
        for a in [bound, advertised] {
            if self.relays.get(&a) == Some(&relay) {
                self.relays.remove(&a);
            }
        }
        if self.relays.is_empty() && self.relays.capacity() > 64 {
            self.relays.shrink_to_fit();
        }
    }

    /// An allocation of `user` is gone (`relay`: it was live, and may have
    /// been marked idle or replaced).
    pub fn release(&mut self, user: &str, relay: Option<RelayHandle>) {
        if let Some(h) = relay {
            self.set_idle(user, h, false);
            self.replaced.retain(|r| *r != h);
        }
        if let Some((n, _)) = self.per_user.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(user);
            }
        }
        self.total = self.total.saturating_sub(1);
    }
}

/// One user's bandwidth budget per direction (`relay.max-bps-per-user`),
/// shared by its allocations across workers without a lock: each direction
/// is one atomic "theoretical arrival time" (GCRA), a token bucket holding
/// one second's worth, like the per-allocation limit.
#[derive(Debug)]
pub struct UserBudget {
    base: Instant,
    /// Nanoseconds after `base` when the bucket is full again.
    to_peer: AtomicU64,
    to_client: AtomicU64,
}

impl UserBudget {
    fn new(base: Instant) -> Self {
        Self {
            base,
            to_peer: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
        }
    }

    /// Takes `bytes` toward peers from a budget of `rate` bytes a second
    /// (0: no limit); false when they must be dropped.
    #[inline]
    pub fn to_peer(&self, bytes: usize, rate: u64, now: Instant) -> bool {
        rate == 0 || self.take(&self.to_peer, bytes, rate, now)
    }

    /// Like [`UserBudget::to_peer`], toward the user's clients.
    #[inline]
    pub fn to_client(&self, bytes: usize, rate: u64, now: Instant) -> bool {
        rate == 0 || self.take(&self.to_client, bytes, rate, now)
    }

    fn take(&self, tat: &AtomicU64, bytes: usize, rate: u64, now: Instant) -> bool {
        const SECOND: u64 = 1_000_000_000;
        let now = u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX / 2);
        let cost = u64::try_from(bytes as u128 * u128::from(SECOND) / u128::from(rate)).unwrap_or(u64::MAX / 2);
        let mut cur = tat.load(Ordering::Relaxed);
        loop {
            let next = cur.max(now).saturating_add(cost);
            if next > now.saturating_add(SECOND) {
                return false;
            }
            match tat.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(seen) => cur = seen,
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaFull {
    User,
    Total,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn ports_are_unique_until_exhausted_and_reusable() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut pool = PortPool::new(50000, 50009);
        let mut got: Vec<u16> = (0..10)
            .map(|_| pool.take(&mut rng, false, false).expect("free"))
            .collect();
        got.sort_unstable();
        assert_eq!(got, (50000..=50009).collect::<Vec<_>>());
        assert_eq!(pool.take(&mut rng, false, false), None);
        pool.release(50003);
        assert_eq!(pool.take(&mut rng, false, false), Some(50003));
    }

    #[test]
    fn even_pairs() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let mut pool = PortPool::new(50001, 50004);
        let p = pool.take(&mut rng, true, true).expect("pair");
        assert_eq!(p, 50002);
        assert_eq!(pool.in_use(), 2);
        assert_eq!(pool.take(&mut rng, true, true), None);
        assert_eq!(pool.take(&mut rng, true, false), Some(50004));
    }

    #[test]
    fn quotas() {
        let mut g = Pool::new(1, 2);
        assert!(g.admit("a", 1, 2, Instant::now()).is_ok());
        assert_eq!(g.admit("a", 1, 2, Instant::now()).err(), Some(QuotaFull::User));
        assert!(g.admit("b", 1, 2, Instant::now()).is_ok());
        assert_eq!(g.admit("c", 1, 2, Instant::now()).err(), Some(QuotaFull::Total));
        g.release("a", None);
        assert!(g.admit("a", 1, 2, Instant::now()).is_ok());
    }

    /// A full quota admits one more when the user has an idle allocation,
    /// which is handed to its worker as replaced; one per idle allocation.
    #[test]
    fn a_full_quota_replaces_an_idle_allocation_of_the_same_user() {
        use super::super::addr::RelayId;
        let h = |worker, id| RelayHandle {
            worker,
            relay: RelayId(id),
            serial: u64::from(id),
        };
        let now = Instant::now();
        let mut g = Pool::new(1, 9);
        g.admit("a", 2, 9, now).expect("first");
        g.admit("a", 2, 9, now).expect("second");
        g.admit("b", 2, 9, now).expect("b");
        g.set_idle("b", h(0, 3), true);
        assert_eq!(
            g.admit("a", 2, 9, now).err(),
            Some(QuotaFull::User),
            "b's idle one is not a's"
        );
        g.set_idle("a", h(1, 1), true);
        g.set_idle("a", h(0, 2), true);
        g.set_idle("a", h(0, 2), false);
        let third = g.admit("a", 2, 9, now).expect("replaces the idle one");
        assert_eq!(third.replaces, Some(h(1, 1)));
        assert_eq!(
            g.admit("a", 2, 9, now).err(),
            Some(QuotaFull::User),
            "nothing idle left"
        );
        assert!(g.take_replaced(0).is_empty());
        assert_eq!(g.take_replaced(1), [h(1, 1)]);
        // Deleted: counted out, and forgotten wherever it was listed.
        g.set_idle("a", h(0, 2), true);
        g.release("a", Some(h(0, 2)));
        g.release("a", Some(h(1, 1)));
        assert_eq!(g.per_user.get("a").map(|(n, _)| *n), Some(1));
        assert!(!g.idle.contains_key("a") && g.replaced.is_empty());
        // The total quota too: a's idle allocation makes room for a, not c.
        let mut g = Pool::new(1, 9);
        g.admit("a", 5, 1, now).expect("a");
        g.set_idle("a", h(0, 1), true);
        assert_eq!(g.admit("c", 5, 1, now).err(), Some(QuotaFull::Total));
        assert!(g.admit("a", 5, 1, now).is_ok_and(|a| a.replaces == Some(h(0, 1))));
    }

    #[test]
    fn a_user_budget_holds_one_second_and_refills() {
        let t0 = Instant::now();
        let mut s = Pool::new(1, 9);
        let a = s.admit("u", 5, 5, t0).expect("admitted").budget;
        let b = s.admit("u", 5, 5, t0).expect("admitted").budget;
        assert!(Arc::ptr_eq(&a, &b), "one budget per user");
        // 1000 B/s: ten 100-byte packets from either allocation, then none.
        let passed = (0..20).filter(|i| [&a, &b][i % 2].to_peer(100, 1000, t0)).count();
        assert_eq!(passed, 10);
        // The other direction has its own budget.
        assert!(a.to_client(1000, 1000, t0));
        assert!(!a.to_client(1, 1000, t0));
        // Half a second later, half of it is back.
        let t1 = t0 + std::time::Duration::from_millis(500);
        assert_eq!((0..10).filter(|_| b.to_peer(100, 1000, t1)).count(), 5);
        // No limit: everything passes.
        assert!(a.to_peer(65535, 0, t1));
        // The last allocation gone, a new one starts a fresh budget.
        for _ in 0..2 {
            s.release("u", None);
        }
        let c = s.admit("u", 5, 5, t1).expect("admitted").budget;
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(c.to_peer(1000, 1000, t1));
    }
}
