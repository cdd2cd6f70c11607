//! What the core counts: plain integers, bumped on the hot path without a
//! lock or an atomic; the driver copies them out once a second for
//! `/metrics` ([`crate::metrics`]).

use super::addr::Transport;
use super::wire::ErrorCode;

/// Why an Allocate was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UserQuota,
    TotalQuota,
    NoRelayPort,
    Draining,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [Self::UserQuota, Self::TotalQuota, Self::NoRelayPort, Self::Draining];

    pub fn label(self) -> &'static str {
        match self {
            Self::UserQuota => "user_quota",
            Self::TotalQuota => "total_quota",
            Self::NoRelayPort => "no_relay_port",
            Self::Draining => "draining",
        }
    }
}

/// Why a signed request did not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    StaleNonce,
    UnknownUser,
    Expired,
    BadIntegrity,
    /// Signed by another user than the allocation's (441).
    WrongUser,
}

impl AuthFailure {
    pub const ALL: [AuthFailure; 5] = [
        Self::StaleNonce,
        Self::UnknownUser,
        Self::Expired,
        Self::BadIntegrity,
        Self::WrongUser,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::StaleNonce => "stale_nonce",
            Self::UnknownUser => "unknown_user",
            Self::Expired => "expired",
            Self::BadIntegrity => "bad_integrity",
            Self::WrongUser => "wrong_user",
        }
    }
}

/// Client transports, in the order of the per-transport arrays.
pub const TRANSPORTS: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];

#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}

impl Traffic {
    #[inline]
    pub(super) fn count(&mut self, bytes: usize) {
        self.packets += 1;
        self.bytes += bytes as u64;
    }
}

impl std::ops::AddAssign for Traffic {
    fn add_assign(&mut self, other: Traffic) {
        self.packets += other.packets;
        self.bytes += other.bytes;
    }
}

/// Counters of what the core did since it started.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub allocations_created: u64,
    pub allocations_expired: u64,
    /// Deleted by the client (Refresh 0), its connection closing, or an
    /// operator.
    pub allocations_deleted: u64,
    pub refused: [u64; Refusal::ALL.len()],
    pub auth_failures: [u64; AuthFailure::ALL.len()],
    /// Error answers, by [`ErrorCode::slot`].
    pub errors: [u64; ErrorCode::CODES.len()],
    /// Relayed payload by client transport ([`TRANSPORTS`] index).
    pub to_peer: [Traffic; 3],
    pub to_client: [Traffic; 3],
    /// Datagrams and messages dropped (malformed, no permission, …).
    pub dropped: u64,
    /// 401/438 answers not sent: the source address was over its rate.
    pub challenges_limited: u64,
    /// Packets dropped because their allocation was over `relay.max-bps` or
    /// their user over `relay.max-bps-per-user`.
    pub over_bandwidth: u64,
    /// Payload handed from one allocation of this turnd to another inside
    /// the process (also counted in `to_peer` and `to_client`).
    pub internal: Traffic,
}

impl Stats {
    #[inline]
    pub(super) fn relayed_to_peer(&mut self, t: Transport, bytes: usize) {
        self.to_peer[t as usize].count(bytes);
    }

    #[inline]
    pub(super) fn relayed_to_client(&mut self, t: Transport, bytes: usize) {
        self.to_client[t as usize].count(bytes);
    }

    /// What a driver relayed itself for clients on `t`.
    pub(super) fn credit(&mut self, t: Transport, r: &super::server::Relayed) {
        self.to_peer[t as usize] += Traffic {
            packets: r.to_peer_packets,
            bytes: r.to_peer_bytes,
        };
        self.to_client[t as usize] += Traffic {
            packets: r.to_client_packets,
            bytes: r.to_client_bytes,
        };
    }

    pub(super) fn error(&mut self, code: ErrorCode) {
        self.errors[code.slot()] += 1;
    }

    /// Adds `other` in (the sum over workers).
    pub fn add(&mut self, other: &Stats) {
        self.allocations_created += other.allocations_created;
        self.allocations_expired += other.allocations_expired;
        self.allocations_deleted += other.allocations_deleted;
        self.dropped += other.dropped;
        self.challenges_limited += other.challenges_limited;
        self.over_bandwidth += other.over_bandwidth;
        self.internal += other.internal;
        let sum = |a: &mut [u64], b: &[u64]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        sum(&mut self.refused, &other.refused);
        sum(&mut self.auth_failures, &other.auth_failures);
        sum(&mut self.errors, &other.errors);
        let mine = self.to_peer.iter_mut().chain(self.to_client.iter_mut());
        for (a, b) in mine.zip(other.to_peer.iter().chain(&other.to_client)) {
            *a += *b;
        }
    }
}
