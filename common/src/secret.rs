//! [`SecretBytes`]: the only type that holds a secret value in seg.
//!
//! It cannot be printed (`Debug` is redacted, there is no `Display` or
//! `Serialize`), cannot be cloned by accident, never reallocates, and wipes
//! its bytes when dropped.

use crate::sys::LockedBuf;
use std::fmt;

pub struct SecretBytes(LockedBuf);

impl SecretBytes {
    /// A zero-filled secret of exactly `len` bytes, to be filled in place
    /// (e.g. by reading a body of known length straight into it).
    pub fn zeroed(len: usize) -> SecretBytes {
        SecretBytes(LockedBuf::zeroed(len))
    }

    /// Copies `bytes` into a new secret. The caller remains responsible for
    /// wiping its own copy.
    pub fn from_slice(bytes: &[u8]) -> SecretBytes {
        let mut s = SecretBytes::zeroed(bytes.len());
        s.as_mut_bytes().copy_from_slice(bytes);
        s
    }

    pub fn expose(&self) -> &[u8] {
        self.0.as_slice()
    }

    pub fn as_mut_bytes(&mut self) -> &mut [u8] {
        self.0.as_mut_slice()
    }

    pub fn len(&self) -> usize {
        self.0.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An explicit copy; there is deliberately no `Clone`.
    pub fn duplicate(&self) -> SecretBytes {
        SecretBytes::from_slice(self.expose())
    }

    /// Compares without an early exit, so timing does not tell how many
    /// leading bytes matched.
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        let mine = self.expose();
        if mine.len() != other.len() {
            return false;
        }
        mine.iter().zip(other).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    pub fn is_locked(&self) -> bool {
        self.0.is_locked()
    }

    /// Keeps the first `len` bytes (no reallocation; the rest is wiped at
    /// once): decrypting in place leaves the tag's room behind the plaintext.
    pub fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<redacted {} bytes>)", self.len())
    }
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other.expose())
    }
}

impl Eq for SecretBytes {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_the_prefix_and_wipes_the_rest() {
        let mut s = SecretBytes::from_slice(b"plaintext+tag");
        s.truncate(9);
        assert!(s.ct_eq(b"plaintext") && s.len() == 9);
        s.truncate(20);
        assert_eq!(s.len(), 9, "never grows");
        s.truncate(0);
        assert!(s.is_empty());
    }

    #[test]
    fn debug_never_shows_the_bytes() {
        let s = SecretBytes::from_slice(b"hunter2");
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("7 bytes"));
    }

    #[test]
    fn constant_time_compare_matches_plain_compare() {
        let s = SecretBytes::from_slice(b"abc");
        assert!(s.ct_eq(b"abc"));
        assert!(!s.ct_eq(b"abd"));
        assert!(!s.ct_eq(b"ab"));
        assert_eq!(s, s.duplicate());
    }
}
