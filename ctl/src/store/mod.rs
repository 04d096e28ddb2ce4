//! Secret storage behind one narrow trait. The embedded backend
//! ([`embedded::EmbeddedStore`]) seals every version with AES-256-GCM;
//! [`memory::MemoryStore`] is the fake for unit tests.

pub(crate) mod disk;
pub mod embedded;
pub mod envelope;
pub mod etcd;
mod etcd_cache;
mod etcd_conn;
mod etcd_fresh;
mod etcd_kv;
mod etcd_nodes;
mod etcd_registry;
pub mod memory;
#[cfg(any(test, feature = "fakes"))]
pub mod memory_kv;
mod record;
pub mod seal;

use seg_common::api::{GrantTarget, Hooks};
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
    /// Pre- and post-rotate commands, run by the controller.
    pub hooks: Hooks,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    pub updated_at: u64,
}

/// A change of one secret made by another writer (another node of a
/// cluster), as the store learnt it: its metadata before and after
/// (`None`: absent). Never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreChange {
    pub before: Option<SecretMeta>,
    pub after: Option<SecretMeta>,
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
    #[error("{action} {path}: {cause}")]
    Io { action: &'static str, path: PathBuf, cause: std::io::Error },
    #[error("{path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{0}")]
    BadHook(String),
    /// Another writer (another node) changed the secret between this
    /// write's read and its commit (cluster store).
    #[error(
        "secret {name} was changed by another writer while this change was being made: nothing was written; \
         read it again and retry"
    )]
    Conflict { name: SecretName },
    /// etcd did not answer (cluster store); `outcome` says what became of
    /// the request and what to do.
    #[error("etcd at {endpoints} is unreachable or has no quorum ({cause}): {outcome}")]
    Unreachable { endpoints: String, cause: String, outcome: &'static str },
}

/// Where secrets live. Methods are synchronous. Reads (`get`,
/// `get_version`, `meta`, `list`) must be served from memory without
/// blocking — the agent API calls them inline on its hot path; writes may do
/// file I/O and are run on the blocking pool.
pub trait SecretStore: Send + Sync {
    /// Stores a new version and makes it current; `ttl_ms` of `None` keeps
    /// the existing lease TTL (or the default for a new secret).
    fn put(&self, name: &SecretName, value: &SecretBytes, ttl_ms: Option<u64>) -> Result<u64, StoreError>;
    fn get(&self, name: &SecretName) -> Result<SecretVersion, StoreError>;
    fn meta(&self, name: &SecretName) -> Result<SecretMeta, StoreError>;
    fn list(&self) -> Result<Vec<SecretMeta>, StoreError>;
    fn remove(&self, name: &SecretName) -> Result<(), StoreError>;
    /// Applies `change` to `name`'s metadata in one write. `change` says
    /// whether it changed anything; only then is the record written (with
    /// a new `updated_at`). Returns that answer. The one primitive behind
    /// grants, TTLs and hooks, so every backend changes them alike.
    fn change_meta(
        &self,
        name: &SecretName,
        change: &mut dyn FnMut(&mut SecretMeta) -> bool,
    ) -> Result<bool, StoreError>;
    /// Returns whether the grant was new.
    fn grant(&self, name: &SecretName, to: &GrantTarget) -> Result<bool, StoreError> {
        self.change_meta(name, &mut |meta| meta.grants.insert(to.clone()))
    }
    /// Returns whether the grant existed.
    fn revoke(&self, name: &SecretName, from: &GrantTarget) -> Result<bool, StoreError> {
        self.change_meta(name, &mut |meta| meta.grants.remove(from))
    }
    fn set_ttl(&self, name: &SecretName, ttl_ms: u64) -> Result<(), StoreError> {
        check_ttl(ttl_ms)?;
        self.change_meta(name, &mut |meta| std::mem::replace(&mut meta.ttl_ms, ttl_ms) != ttl_ms)?;
        Ok(())
    }
    /// Replaces the hooks of `name`; returns whether they changed.
    fn set_hooks(&self, name: &SecretName, hooks: &Hooks) -> Result<bool, StoreError> {
        check_hooks(hooks)?;
        self.change_meta(name, &mut |meta| std::mem::replace(&mut meta.hooks, hooks.clone()) != *hooks)
    }
    /// Short backend name for `segctl status`.
    fn kind(&self) -> &'static str;
    /// Changes made by other writers (other nodes), so that this node can
    /// push them to its own sidecars; `None` for a store nobody else
    /// writes. A listener that falls behind gets `Lagged` and should treat
    /// every secret as changed.
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<StoreChange>> {
        None
    }
    /// A kept version of a secret: the current one or the one before it
    /// (kept for a rotation grace period). `Ok(None)` when that version is
    /// not kept; `NotFound` when the secret does not exist.
    fn get_version(&self, name: &SecretName, version: u64) -> Result<Option<SecretVersion>, StoreError> {
        let current = self.get(name)?;
        Ok((current.version == version).then_some(current))
    }
}

/// Where the nodes of a cluster publish what only each of them knows (its
/// consumers and their acknowledged versions), each under a lease, so a
/// dead node's report disappears (`etcd_nodes.rs`). Reports are opaque
/// bytes here: the node decides what is in them.
pub trait NodeRegistry: Send + Sync {
    /// Replaces this node's report. Blocking (call it off the async workers).
    fn publish(&self, node: &str, report: Vec<u8>) -> Result<(), StoreError>;
    /// Removes this node's report (a clean stop). Blocking.
    fn withdraw(&self, node: &str) -> Result<(), StoreError>;
    /// Every node's last report (this node's too), by node name.
    fn reports(&self) -> std::collections::BTreeMap<String, std::sync::Arc<Vec<u8>>>;
    /// Bumped whenever `reports` changes.
    fn changed(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// The records of cluster membership (`crate::cluster`): plain keys under
/// `<prefix>/cluster/` in etcd. Keys are relative to that prefix; values are
/// opaque bytes. Blocking, like the store's writes.
pub trait ClusterKv: Send + Sync + std::fmt::Debug {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every key under `prefix` (relative) with its value, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError>;
    /// Writes `key` only if it does not exist; `false` when it did.
    fn create(&self, key: &str, value: Vec<u8>) -> Result<bool, StoreError>;
    /// Deletes `key` and returns what it held, in one transaction: of two
    /// callers taking the same key, one gets it (one-time tokens).
    fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

/// How many versions a secret keeps: the current one and the previous one.
pub const KEPT_VERSIONS: usize = 2;

/// The value limit every backend enforces.
pub fn check_value(value: &SecretBytes) -> Result<(), StoreError> {
    let limit = seg_common::name::MAX_VALUE_LEN;
    if value.len() > limit {
        return Err(StoreError::TooLarge { len: value.len(), limit });
    }
    Ok(())
}

/// The lease TTL range every backend enforces.
pub fn check_ttl(ttl_ms: u64) -> Result<(), StoreError> {
    use seg_common::api::{MAX_TTL_MS, MIN_TTL_MS};
    if !(MIN_TTL_MS..=MAX_TTL_MS).contains(&ttl_ms) {
        return Err(StoreError::BadTtl { ttl_ms });
    }
    Ok(())
}

/// The hook checks every backend enforces.
pub fn check_hooks(hooks: &Hooks) -> Result<(), StoreError> {
    for (which, spec) in [("pre-rotate", &hooks.pre_rotate), ("post-rotate", &hooks.post_rotate)] {
        if let Some(problem) = spec.as_ref().and_then(|s| s.problem()) {
            return Err(StoreError::BadHook(format!("{which} hook: {problem}")));
        }
    }
    Ok(())
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub use embedded::EmbeddedStore;
pub use memory::MemoryStore;
