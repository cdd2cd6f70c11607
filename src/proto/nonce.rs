//! Stateless nonces ([RFC 8489 §9.2](https://www.rfc-editor.org/rfc/rfc8489#section-9.2)):
//! the issue time and an HMAC over it and the client's IP address, so the
//! server keeps nothing per client and a nonce cannot be moved to another
//! address or stretched past its lifetime.

use std::net::IpAddr;

use base64::Engine;
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

    /// 40 bits of HMAC-SHA1(key, issued ‖ ip): a forged nonce saves an
    /// attacker one round trip and nothing else (requests still need the
    /// password's key), and the short nonce keeps 401 answers small.
    fn mac(&self, issued: u32, ip: IpAddr) -> [u8; MAC_LEN] {
        let mut m = <Hmac<Sha1> as Mac>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        m.update(&issued.to_be_bytes());
        match ip {
            IpAddr::V4(a) => m.update(&a.octets()),
            IpAddr::V6(a) => m.update(&a.octets()),
        }
        let out = m.finalize().into_bytes();
        let mut short = [0u8; MAC_LEN];
        short.copy_from_slice(&out[..MAC_LEN]);
        short
    }

    /// A nonce for `ip` issued at `now_unix`: base64url of the issue time
    /// (32 bits) and the MAC, 12 characters.
    pub fn issue(&self, ip: IpAddr, now_unix: u64) -> String {
        let issued = now_unix as u32;
        let mut raw = [0u8; 4 + MAC_LEN];
        raw[..4].copy_from_slice(&issued.to_be_bytes());
        raw[4..].copy_from_slice(&self.mac(issued, ip));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn check(&self, nonce: &str, ip: IpAddr, now_unix: u64) -> NonceCheck {
        let mut raw = [0u8; 4 + MAC_LEN];
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode_slice(nonce.as_bytes(), &mut raw);
        if nonce.len() != NONCE_CHARS || decoded != Ok(raw.len()) {
            return NonceCheck::Stale;
        }
        let issued = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let now = now_unix as u32;
        let fresh = issued <= now.wrapping_add(5) && u64::from(now.wrapping_sub(issued)) < self.lifetime_secs;
        if fresh && bool::from(subtle::ConstantTimeEq::ct_eq(&raw[4..], &self.mac(issued, ip)[..])) {
            NonceCheck::Valid
        } else {
            NonceCheck::Stale
        }
    }
}

const MAC_LEN: usize = 5;
/// base64 of 4 + 5 bytes.
const NONCE_CHARS: usize = 12;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_lifecycle() {
        let n = Nonces::new([7; 32], 600);
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        let nonce = n.issue(ip, 1000);
        assert_eq!(nonce.len(), 12);
        assert_eq!(n.check(&nonce, ip, 1000), NonceCheck::Valid);
        assert_eq!(n.check(&nonce, ip, 1599), NonceCheck::Valid);
        assert_eq!(n.check(&nonce, ip, 1600), NonceCheck::Stale);
        assert_eq!(n.check(&nonce, other, 1000), NonceCheck::Stale);
        assert_eq!(Nonces::new([8; 32], 600).check(&nonce, ip, 1000), NonceCheck::Stale);
        assert_eq!(n.check("zz", ip, 1000), NonceCheck::Stale);
        assert_eq!(n.check("", ip, 1000), NonceCheck::Stale);
        assert_eq!(n.check("ééééééééééééééééééé", ip, 1000), NonceCheck::Stale);
        assert_eq!(n.check("éééééé", ip, 1000), NonceCheck::Stale);
        // One character changed: stale.
        let mut forged = nonce.clone().into_bytes();
        forged[11] = if forged[11] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).expect("ascii");
        assert_eq!(n.check(&forged, ip, 1000), NonceCheck::Stale);
    }
}
