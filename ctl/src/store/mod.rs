//! Secret storage behind one narrow trait. The embedded backend
//! ([`embedded::EmbeddedStore`]) seals every version with AES-256-GCM;
//! [`memory::MemoryStore`] is the fake for unit tests.

pub mod embedded;
pub mod memory;
pub mod seal;

use seg_common::api::GrantTarget;
use seg_common::name::SecretName;
use seg_common::secret::SecretBytes;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// What is known about a secret, without its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMeta {
    pub name: SecretName,
    /// Current version; versions start at 1 and only grow.
    pub version: u64,
    pub ttl_ms: u64,
    pub grants: BTreeSet<GrantTarget>,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    pub updated_at: u64,
}

/// The current value of a secret with the lease it is handed out under.
#[derive(Debug)]
pub struct SecretVersion {
    pub value: SecretBytes,
    pub version: u64,
    pub ttl_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("secret {0} does not exist")]
    NotFound(SecretName),
    #[error("secret value is {len} bytes; the limit is {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("lease TTL {ttl_ms} ms is out of range: use 1s to 24h")]
    BadTtl { ttl_ms: u64 },
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// Where secrets live. Methods are synchronous: the embedded store does a
/// few small file operations per call.
pub trait SecretStore: Send + Sync {
    /// Stores a new version and makes it current; `ttl_ms` of `None` keeps
    /// the existing lease TTL (or the default for a new secret).
    fn put(&self, name: &SecretName, value: &SecretBytes, ttl_ms: Option<u64>) -> Result<u64, StoreError>;
    fn get(&self, name: &SecretName) -> Result<SecretVersion, StoreError>;
    fn meta(&self, name: &SecretName) -> Result<SecretMeta, StoreError>;
    fn list(&self) -> Result<Vec<SecretMeta>, StoreError>;
    fn remove(&self, name: &SecretName) -> Result<(), StoreError>;
    /// Returns whether the grant was new.
    fn grant(&self, name: &SecretName, to: &GrantTarget) -> Result<bool, StoreError>;
    /// Returns whether the grant existed.
    fn revoke(&self, name: &SecretName, from: &GrantTarget) -> Result<bool, StoreError>;
    fn set_ttl(&self, name: &SecretName, ttl_ms: u64) -> Result<(), StoreError>;
    /// Short backend name for `segctl status`.
    fn kind(&self) -> &'static str;
}

pub use embedded::EmbeddedStore;
pub use memory::MemoryStore;
