//! Stateless nonces ([RFC 8489 §9.2](https://www.rfc-editor.org/rfc/rfc8489#section-9.2)):
//! the issue time and an HMAC over it and the client's IP address, so the
//! server keeps nothing per client and a nonce cannot be moved to another
//! address or stretched past its lifetime.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha1::Sha1;

pub struct Nonces {
    key: [u8; 32],
    lifetime_secs: u64,
}

/// What a received nonce is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    /// Expired, minted by another key (a restart) or for another address: the
    /// client gets 438 and a fresh one.
    Stale,
}

impl Nonces {
    /// Nonces from now on are stale after `secs` (a reload).
    pub fn set_lifetime(&mut self, secs: u64) {
        self.lifetime_secs = secs;
    }

    pub fn new(key: [u8; 32], lifetime_secs: u64) -> Self {
        Self {
            key,
            lifetime_secs: lifetime_secs.max(1),
        }
    }

    fn mac(&self, issued: u64, ip: IpAddr) -> [u8; 8] {
        let mut m = <Hmac<Sha1> as Mac>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        m.update(&issued.to_be_bytes());
        match ip {
            IpAddr::V4(a) => m.update(&a.octets()),
            IpAddr::V6(a) => m.update(&a.octets()),
        }
        let out = m.finalize().into_bytes();
        let mut short = [0u8; 8];
        short.copy_from_slice(&out[..8]);
        short
    }

    /// A nonce for `ip` issued at `now_unix`: 32 hex digits.
    pub fn issue(&self, ip: IpAddr, now_unix: u64) -> String {
        let mut s = format!("{now_unix:016x}");
        for b in self.mac(now_unix, ip) {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    pub fn check(&self, nonce: &str, ip: IpAddr, now_unix: u64) -> NonceCheck {
        let (Some(ts), Some(mac)) = (nonce.get(..16), nonce.get(16..)) else {
            return NonceCheck::Stale;
        };
        let Ok(issued) = u64::from_str_radix(ts, 16) else {
            return NonceCheck::Stale;
        };
        let expected: String = self.mac(issued, ip).iter().map(|b| format!("{b:02x}")).collect();
        let fresh = issued <= now_unix.saturating_add(5) && now_unix.saturating_sub(issued) < self.lifetime_secs;
        if fresh && subtle::ConstantTimeEq::ct_eq(mac.as_bytes(), expected.as_bytes()).into() {
            NonceCheck::Valid
        } else {
            NonceCheck::Stale
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_lifecycle() {
        let n = Nonces::new([7; 32], 600);
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        let nonce = n.issue(ip, 1000);
        assert_eq!(nonce.len(), 32);
        assert_eq!(n.check(&nonce, ip, 1000), NonceCheck::Valid);
        assert_eq!(n.check(&nonce, ip, 1599), NonceCheck::Valid);
        assert_eq!(n.check(&nonce, ip, 1600), NonceCheck::Stale);
        assert_eq!(n.check(&nonce, other, 1000), NonceCheck::Stale);
        assert_eq!(Nonces::new([8; 32], 600).check(&nonce, ip, 1000), NonceCheck::Stale);
        assert_eq!(n.check("zz", ip, 1000), NonceCheck::Stale);
        assert_eq!(n.check("", ip, 1000), NonceCheck::Stale);
        assert_eq!(n.check("ééééééééééééééééééé", ip, 1000), NonceCheck::Stale);
    }
}
