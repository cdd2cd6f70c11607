//! A token bucket per source IP address, with injected time: how many
//! 401/438 challenges one address gets
//! (`auth.challenges-per-second`, bursts of twice that).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Addresses tracked at most; past this, idle ones are forgotten first.
const MAX_TRACKED: usize = 100_000;

pub struct PerAddress {
    rate: f64,
    burst: f64,
    buckets: HashMap<IpAddr, (f64, Instant), ahash::RandomState>,
}

impl PerAddress {
    /// `per_second` tokens a second, at most `2 × per_second` saved up;
    /// 0 means no limit.
    pub fn new(per_second: u32) -> Self {
        Self {
            rate: f64::from(per_second),
            burst: f64::from(per_second) * 2.0,
            buckets: HashMap::default(),
        }
    }

    /// Takes one token for `ip`; false when there is none.
    pub fn take(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        if self.buckets.len() >= MAX_TRACKED && !self.buckets.contains_key(&ip) {
            self.forget_idle(now);
        }
        let (rate, burst) = (self.rate, self.burst);
        let (tokens, last) = self.buckets.entry(ip).or_insert((burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Drops addresses whose bucket has refilled (they lose nothing).
    pub fn forget_idle(&mut self, now: Instant) {
        let full = Duration::from_secs_f64(self.burst / self.rate.max(1.0));
        self.buckets
            .retain(|_, (_, last)| now.saturating_duration_since(*last) < full);
    }

    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_the_rate() {
        let mut b = PerAddress::new(10);
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        let t = Instant::now();
        assert_eq!(
            (0..25).filter(|_| b.take(ip, t)).count(),
            20,
            "a burst of twice the rate"
        );
        assert!(b.take(other, t), "other addresses are not affected");
        assert!(!b.take(ip, t + Duration::from_millis(50)));
        assert!(b.take(ip, t + Duration::from_millis(110)), "one token per 100 ms");
        b.forget_idle(t + Duration::from_secs(10));
        assert_eq!(b.tracked(), 0);
        let mut off = PerAddress::new(0);
        assert!((0..1000).all(|_| off.take(ip, t)));
    }
}
