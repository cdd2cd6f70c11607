//! Credentials: the TURN REST API shared-secret scheme and static users.
//!
//! Everything here is a pure function of its arguments (the time comes in as
//! unix seconds), so the scheme is tested with known answers.
//!
//! REST scheme (draft-uberti-behave-turn-rest, coturn `use-auth-secret`):
//! username `<unix-expiry>` or `<unix-expiry>:<user>`, password
//! `base64(HMAC-SHA1(secret, username))`. The long-term key of
//! [RFC 8489 §9.2.2](https://www.rfc-editor.org/rfc/rfc8489#section-9.2.2) is
//! then `MD5(username ":" realm ":" password)`.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;

use crate::secret::Secret;

/// The 16-byte long-term credential key (MD5 of `user:realm:password`);
/// never printed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key(pub [u8; 16]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(…)")
    }
}

impl std::ops::Deref for Key {
    type Target = [u8; 16];
    fn deref(&self) -> &[u8; 16] {
        &self.0
    }
}

/// Why a username got no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the REST username expired")]
    Expired,
    #[error("unknown user")]
    UnknownUser,
}

/// A static user's secret as written in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaticSecret {
    Password(Secret),
    /// coturn style `0x<hex md5(user:realm:pass)>`.
    Key(Key),
}

impl StaticSecret {
    /// Parses a config value: `0x` followed by 32 hex digits is a key,
    /// anything else a password.
    pub fn parse(s: &Secret) -> Self {
        if let Some(hex) = s.expose().strip_prefix("0x") {
            if let Some(key) = parse_hex_key(hex) {
                return StaticSecret::Key(key);
            }
        }
        StaticSecret::Password(s.clone())
    }
}

fn parse_hex_key(hex: &str) -> Option<Key> {
    if hex.len() != 32 {
        return None;
    }
    let mut key = [0u8; 16];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Key(key))
}

/// The long-term key for a user, realm and password.
pub fn long_term_key(username: &str, realm: &str, password: &str) -> Key {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    Key(h.finalize().into())
}

/// The REST password for `username`: `base64(HMAC-SHA1(secret, username))`.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A REST username and password valid until `now_unix + ttl`.
pub fn rest_credentials(
    secret: &[u8],
    user: Option<&str>,
    ttl: Duration,
    now_unix: u64,
    separator: char,
) -> (String, String) {
    let expiry = now_unix.saturating_add(ttl.as_secs());
    let username = match user {
        Some(u) if !u.is_empty() => format!("{expiry}{separator}{u}"),
        _ => expiry.to_string(),
    };
    let password = rest_password(secret, &username);
    (username, password)
}

/// The configured credentials: REST secrets (several at once, for rotation)
/// and static users.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub realm: String,
    pub secrets: Vec<Secret>,
    pub users: HashMap<String, StaticSecret>,
    pub separator: char,
}

impl Credentials {
    pub fn new(realm: impl Into<String>) -> Self {
        Self {
            realm: realm.into(),
            secrets: Vec::new(),
            users: HashMap::new(),
            separator: ':',
        }
    }

    /// Every key `username` may have signed with, best guess first: a static
    /// user's key, or one key per REST secret. Several keys come back only
    /// during secret rotation; the caller tries each against the
    /// MESSAGE-INTEGRITY.
    pub fn keys_for(&self, username: &str, now_unix: u64) -> Result<Vec<Key>, AuthError> {
        if let Some(secret) = self.users.get(username) {
            return Ok(vec![match secret {
                StaticSecret::Password(p) => long_term_key(username, &self.realm, p.expose()),
                StaticSecret::Key(k) => *k,
            }]);
        }
        if self.secrets.is_empty() {
            return Err(AuthError::UnknownUser);
        }
        let expiry = self.rest_expiry(username).ok_or(AuthError::UnknownUser)?;
        if expiry < now_unix {
            return Err(AuthError::Expired);
        }
        Ok(self
            .secrets
            .iter()
            .map(|s| long_term_key(username, &self.realm, &rest_password(s.as_bytes(), username)))
            .collect())
    }

    /// The expiry of a REST username (`<expiry>` or `<expiry>:<user>`).
    fn rest_expiry(&self, username: &str) -> Option<u64> {
        let ts = username.split(self.separator).next().unwrap_or(username);
        if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        ts.parse().ok()
    }

    /// Who a username counts against for the per-user quota: the `<user>`
    /// part of a REST username (its expiry changes with every credential), or
    /// the whole name.
    pub fn quota_name<'a>(&self, username: &'a str) -> &'a str {
        if self.users.contains_key(username) || self.rest_expiry(username).is_none() {
            return username;
        }
        match username.split_once(self.separator) {
            Some((_, user)) if !user.is_empty() => user,
            _ => username,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known answers computed independently with Python's standard library:
    // `base64.b64encode(hmac.new(SECRET, USER, hashlib.sha1).digest())` and
    // `hashlib.md5(b"USER:REALM:PASS").hexdigest()`.
    #[test]
    fn rest_password_known_answer() {
        assert_eq!(
            rest_password(b"north", "1700000000:alice"),
            "Cd/49soE35ICqcJF/bCTn8Z4OyE="
        );
        assert_eq!(rest_password(b"logen", "1893456000"), "49MvrgP0mfN5H2ODCE5wFCJbeMY=");
    }

    #[test]
    fn long_term_key_known_answer() {
        let k = long_term_key("user", "realm", "pass");
        assert_eq!(hex(&k[..]), "8493fbc53ba582fb4c044c456bdc40eb");
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn static_secret_parses_coturn_keys() {
        let parse = |s: &str| StaticSecret::parse(&Secret::from(s));
        let k = parse("0x8493fbc53ba582fb4c044c456bdc40eb");
        assert_eq!(k, StaticSecret::Key(long_term_key("user", "realm", "pass")));
        assert_eq!(parse("0xnothex"), StaticSecret::Password("0xnothex".into()));
        assert_eq!(parse("hunter2"), StaticSecret::Password("hunter2".into()));
        assert!(!format!("{:?}", parse("hunter2")).contains("hunter2"));
    }

    #[test]
    fn rest_usernames_expire_and_rotate() {
        let mut c = Credentials::new("example.org");
        c.secrets = vec!["old".into(), "new".into()];
        let (u, p) = rest_credentials(b"new", Some("alice"), Duration::from_secs(60), 1000, ':');
        assert_eq!(u, "1060:alice");
        let keys = c.keys_for(&u, 1000).expect("valid");
        assert_eq!(keys.len(), 2);
        assert!(keys.contains(&long_term_key(&u, "example.org", &p)));
        assert_eq!(c.keys_for(&u, 1061), Err(AuthError::Expired));
        assert_eq!(c.keys_for(&u, 1060).map(|k| k.len()), Ok(2));
        assert_eq!(c.keys_for("alice", 1000), Err(AuthError::UnknownUser));
        assert_eq!(c.keys_for("12x:alice", 1000), Err(AuthError::UnknownUser));
        assert_eq!(c.quota_name(&u), "alice");
        assert_eq!(c.quota_name("1060"), "1060");
    }

    #[test]
    fn static_users_win_over_rest_parsing() {
        let mut c = Credentials::new("r");
        c.secrets = vec!["s".into()];
        c.users.insert("123".into(), StaticSecret::Password("pw".into()));
        assert_eq!(
            c.keys_for("123", 10_000).expect("static"),
            vec![long_term_key("123", "r", "pw")]
        );
    }
}
