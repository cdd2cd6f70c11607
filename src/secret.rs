//! Values that must never be printed: shared secrets, static passwords,
//! tokens, the page's access key. `Debug` shows only that one is there, so a
//! config or a credential set can be logged or compared whole; equality is
//! by value, in constant time; the memory is overwritten when one is
//! dropped. Files holding them (the generated secret, keys, the ACME
//! account) are written with [`write_private`].

use std::fmt;
use std::path::Path;

use anyhow::Context;

/// A secret string from the configuration or the data dir.
#[derive(Clone, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `given` is this secret, compared in constant time.
    pub fn matches(&self, given: &str) -> bool {
        subtle::ConstantTimeEq::ct_eq(self.0.as_bytes(), given.as_bytes()).into()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.matches(&other.0)
    }
}

impl Eq for Secret {}

/// Overwritten when dropped: a secret replaced by a reload, or a copy made
/// for one use, does not linger in freed memory.
impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// Creates `path` with mode 0600 and writes `contents`; fails if it exists.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed_compared_by_value() {
        let s = Secret::from("hunter2-hunter2");
        assert_eq!(format!("{s:?}"), "Secret(…)");
        assert!(!format!("{:?}", vec![s.clone()]).contains("hunter2"));
        assert_eq!(s, Secret::from("hunter2-hunter2"));
        assert_ne!(s, Secret::from("hunter3-hunter2"));
        assert!(s.matches("hunter2-hunter2") && !s.matches("hunter2"));
    }
}
