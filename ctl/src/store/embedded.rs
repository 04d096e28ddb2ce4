//! The embedded store: one sealed JSON file per secret under
//! `<state>/secrets/`, the AES-256-GCM master key in `<state>/master.key`.
//! See `docs/store.md` for the format and what a crash can do.
//!
//! Metadata and sealed blobs are loaded once at open and cached; a `get`
//! decrypts per call, so plaintext exists only in the returned
//! `SecretBytes`. Writers are serialized by one mutex and update the cache
//! only after the file is durably replaced, so the cache never runs ahead of
//! the disk. Readers take a read lock just long enough to clone an `Arc`.
//!
//! A removed secret that is put again starts over at version 1: nothing of
//! the old one is kept, and clients compare versions for equality only.

use super::record::{Record, SealedVersion, MAX_FILE_LEN};
use super::seal::{MasterKey, SealError};
use super::*;
use seg_common::api::DEFAULT_TTL_MS;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

const MASTER_KEY_FILE: &str = "master.key";
const SECRETS_DIR: &str = "secrets";

pub struct EmbeddedStore {
    state_dir: PathBuf,
    secrets_dir: PathBuf,
    key: MasterKey,
    cache: RwLock<BTreeMap<SecretName, Arc<Record>>>,
    writer: Mutex<()>,
    /// Holds the `flock` on the state directory.
    _lock: File,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").field("state_dir", &self.state_dir).field("key", &self.key).finish()
    }
}

impl EmbeddedStore {
    /// Opens (creating on first use) the store under `state_dir`.
    ///
    /// Fails, naming the file, when the master key is missing next to
    /// existing secrets, has the wrong size or loose permissions, does not
    /// match the secrets, or when any secret file is damaged: starting with
    /// secrets silently missing would be worse than not starting.
    pub fn open(state_dir: &Path) -> Result<EmbeddedStore, StoreError> {
        disk::ensure_private_dir(state_dir)?;
        let lock = disk::lock_dir(state_dir)?;
        disk::clean_temp_files(state_dir, MASTER_KEY_FILE)?;
        let secrets_dir = state_dir.join(SECRETS_DIR);
        disk::ensure_private_dir(&secrets_dir)?;
        disk::clean_temp_files(&secrets_dir, "")?;
        let files = secret_files(&secrets_dir)?;
        let key = MasterKey::load_or_create(&state_dir.join(MASTER_KEY_FILE), files.len())?;
        let mut cache = BTreeMap::new();
        for (name, path) in files {
            let (bytes, _) = disk::read_regular(&path, MAX_FILE_LEN)?;
            let record = Record::decode(&bytes, &name, key.id())
                .map_err(|e| StoreError::Corrupt { path: path.clone(), reason: e.to_string() })?;
            cache.insert(name, Arc::new(record));
        }
        tracing::debug!(dir = %state_dir.display(), secrets = cache.len(), key = key.id(), "opened embedded store");
        Ok(EmbeddedStore {
            state_dir: state_dir.to_path_buf(),
            secrets_dir,
            key,
            cache: RwLock::new(cache),
            writer: Mutex::new(()),
            _lock: lock,
        })
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The current or the previous version of `name`; `Ok(None)` when that
    /// version is not kept (any more).
    pub fn get_version(&self, name: &SecretName, version: u64) -> Result<Option<SecretVersion>, StoreError> {
        let record = self.cached(name)?;
        record.find(version).map(|v| self.unseal(&record, v)).transpose()
    }

    fn file_name(name: &SecretName) -> String {
        format!("{name}.json")
    }

    fn file_path(&self, name: &SecretName) -> PathBuf {
        self.secrets_dir.join(Self::file_name(name))
    }

    fn cached(&self, name: &SecretName) -> Result<Arc<Record>, StoreError> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        cache.get(name).cloned().ok_or_else(|| StoreError::NotFound(name.clone()))
    }

    /// The cache is only changed after a successful write, so a panic in
    /// another writer cannot have left it inconsistent: ignore poisoning.
    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unseal(&self, record: &Record, v: &SealedVersion) -> Result<SecretVersion, StoreError> {
        let value =
            self.key.open(&record.meta.name, v.version, &v.blob).map_err(|e| StoreError::Corrupt {
                path: self.file_path(&record.meta.name),
                reason: format!(
                    "version {} {e}; restore the file from backup or put the secret again",
                    v.version
                ),
            })?;
        Ok(SecretVersion { value, version: v.version, ttl_ms: record.meta.ttl_ms })
    }

    /// Replaces the file of `record`, publishes it in the cache, then makes
    /// the rename durable. Call with the writer lock held. A failing
    /// directory sync is still reported, but the cache already matches the
    /// file in place.
    fn commit(&self, record: Record) -> Result<(), StoreError> {
        let file_name = Self::file_name(&record.meta.name);
        disk::replace(&self.secrets_dir, &file_name, &record.encode(self.key.id()))?;
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        cache.insert(record.meta.name.clone(), Arc::new(record));
        drop(cache);
        disk::fsync_dir(&self.secrets_dir)
    }

    /// Applies `change` to a copy of the record of `name`; writes it only
    /// when `change` reports a modification. Returns what `change` returned.
    fn modify(
        &self,
        name: &SecretName,
        change: impl FnOnce(&mut SecretMeta) -> bool,
    ) -> Result<bool, StoreError> {
        let _writer = self.lock_writer();
        let mut record = Record::clone(&*self.cached(name)?);
        if !change(&mut record.meta) {
            return Ok(false);
        }
        record.meta.updated_at = now_secs();
        self.commit(record)?;
        Ok(true)
    }

    fn seal_error(&self, name: &SecretName, e: SealError) -> StoreError {
        let path = self.file_path(name);
        StoreError::Io { action: "sealing a new version of", path, cause: std::io::Error::other(e) }
    }
}

/// The `<name>.json` files of the secrets directory. Other entries are
/// ignored with a warning: they cannot be seg secrets.
fn secret_files(dir: &Path) -> Result<Vec<(SecretName, PathBuf)>, StoreError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(disk::io_err("listing directory", dir))? {
        let entry = entry.map_err(disk::io_err("listing directory", dir))?;
        let file_name = entry.file_name();
        let parsed = file_name.to_str().and_then(|n| n.strip_suffix(".json")).map(SecretName::parse);
        match parsed {
            Some(Ok(name)) => out.push((name, entry.path())),
            _ => tracing::warn!(file = %entry.path().display(), "ignoring a file that is not a seg secret"),
        }
    }
    out.sort();
    Ok(out)
}

impl SecretStore for EmbeddedStore {
    fn put(&self, name: &SecretName, value: &SecretBytes, ttl_ms: Option<u64>) -> Result<u64, StoreError> {
        check_value(value)?;
        if let Some(ttl) = ttl_ms {
            check_ttl(ttl)?;
        }
        let _writer = self.lock_writer();
        let now = now_secs();
        let mut record = match self.cached(name) {
            Ok(existing) => Record::clone(&*existing),
            Err(_) => Record::new(name, DEFAULT_TTL_MS, now),
        };
        let version = record.meta.version + 1;
        let blob = self.key.seal(name, version, value).map_err(|e| self.seal_error(name, e))?;
        record.push_version(SealedVersion { version, blob, created_at: now });
        if let Some(ttl) = ttl_ms {
            record.meta.ttl_ms = ttl;
        }
        self.commit(record)?;
        Ok(version)
    }

    fn get(&self, name: &SecretName) -> Result<SecretVersion, StoreError> {
        let record = self.cached(name)?;
        self.unseal(&record, &record.versions[0])
    }

    fn meta(&self, name: &SecretName) -> Result<SecretMeta, StoreError> {
        Ok(self.cached(name)?.meta.clone())
    }

    fn list(&self) -> Result<Vec<SecretMeta>, StoreError> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        Ok(cache.values().map(|r| r.meta.clone()).collect())
    }

    fn remove(&self, name: &SecretName) -> Result<(), StoreError> {
        let _writer = self.lock_writer();
        self.cached(name)?;
        disk::remove(&self.secrets_dir, &Self::file_name(name))?;
        self.cache.write().unwrap_or_else(|e| e.into_inner()).remove(name);
        disk::fsync_dir(&self.secrets_dir)
    }

    fn change_meta(
        &self,
        name: &SecretName,
        change: &mut dyn FnMut(&mut SecretMeta) -> bool,
    ) -> Result<bool, StoreError> {
        self.modify(name, change)
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn get_version(&self, name: &SecretName, version: u64) -> Result<Option<SecretVersion>, StoreError> {
        EmbeddedStore::get_version(self, name, version)
    }
}

#[cfg(test)]
#[path = "embedded_tests.rs"]
mod tests;
