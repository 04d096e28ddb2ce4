//! An in-memory [`SecretStore`] for unit tests of the rest of segctl. It
//! validates exactly like the embedded store (value size, TTL range,
//! versions from 1, current + previous version kept, a removed secret
//! restarts at 1) but keeps values unsealed in `SecretBytes`, on no disk.

use super::*;
use seg_common::api::DEFAULT_TTL_MS;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

struct Entry {
    meta: SecretMeta,
    /// Newest first, at most [`KEPT_VERSIONS`].
    versions: Vec<(u64, SecretBytes)>,
}

#[derive(Default)]
pub struct MemoryStore {
    secrets: Mutex<BTreeMap<SecretName, Entry>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryStore({} secrets)", self.lock().len())
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// The current or previous version of `name`; `Ok(None)` when not kept.
    pub fn get_version(&self, name: &SecretName, version: u64) -> Result<Option<SecretVersion>, StoreError> {
        let secrets = self.lock();
        let entry = secrets.get(name).ok_or_else(|| StoreError::NotFound(name.clone()))?;
        Ok(entry.versions.iter().find(|(v, _)| *v == version).map(|(v, value)| SecretVersion {
            value: value.duplicate(),
            version: *v,
            ttl_ms: entry.meta.ttl_ms,
        }))
    }

    /// A panic while holding the lock cannot leave a half-made entry (each
    /// change is one map operation), so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, BTreeMap<SecretName, Entry>> {
        self.secrets.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_meta<T>(&self, name: &SecretName, f: impl FnOnce(&mut SecretMeta) -> T) -> Result<T, StoreError> {
        let mut secrets = self.lock();
        let entry = secrets.get_mut(name).ok_or_else(|| StoreError::NotFound(name.clone()))?;
        Ok(f(&mut entry.meta))
    }
}

impl SecretStore for MemoryStore {
    fn put(&self, name: &SecretName, value: &SecretBytes, ttl_ms: Option<u64>) -> Result<u64, StoreError> {
        check_value(value)?;
        if let Some(ttl) = ttl_ms {
            check_ttl(ttl)?;
        }
        let now = now_secs();
        let mut secrets = self.lock();
        let entry = secrets.entry(name.clone()).or_insert_with(|| Entry {
            meta: SecretMeta {
                name: name.clone(),
                version: 0,
                ttl_ms: DEFAULT_TTL_MS,
                grants: Default::default(),
                hooks: Default::default(),
                created_at: now,
                updated_at: now,
            },
            versions: Vec::new(),
        });
        let version = entry.meta.version + 1;
        entry.versions.insert(0, (version, value.duplicate()));
        entry.versions.truncate(KEPT_VERSIONS);
        entry.meta.version = version;
        entry.meta.updated_at = now;
        if let Some(ttl) = ttl_ms {
            entry.meta.ttl_ms = ttl;
        }
        Ok(version)
    }

    fn get(&self, name: &SecretName) -> Result<SecretVersion, StoreError> {
        let secrets = self.lock();
        let entry = secrets.get(name).ok_or_else(|| StoreError::NotFound(name.clone()))?;
        let (version, value) = &entry.versions[0];
        Ok(SecretVersion { value: value.duplicate(), version: *version, ttl_ms: entry.meta.ttl_ms })
    }

    fn meta(&self, name: &SecretName) -> Result<SecretMeta, StoreError> {
        self.with_meta(name, |meta| meta.clone())
    }

    fn list(&self) -> Result<Vec<SecretMeta>, StoreError> {
        Ok(self.lock().values().map(|e| e.meta.clone()).collect())
    }

    fn remove(&self, name: &SecretName) -> Result<(), StoreError> {
        self.lock().remove(name).map(drop).ok_or_else(|| StoreError::NotFound(name.clone()))
    }

    fn change_meta(
        &self,
        name: &SecretName,
        change: &mut dyn FnMut(&mut SecretMeta) -> bool,
    ) -> Result<bool, StoreError> {
        self.with_meta(name, |meta| touch(meta, change))
    }

    fn kind(&self) -> &'static str {
        "memory"
    }

    fn get_version(&self, name: &SecretName, version: u64) -> Result<Option<SecretVersion>, StoreError> {
        MemoryStore::get_version(self, name, version)
    }
}

/// Applies `change`; bumps `updated_at` when it reports a modification,
/// like the embedded store does.
fn touch(meta: &mut SecretMeta, change: impl FnOnce(&mut SecretMeta) -> bool) -> bool {
    let changed = change(meta);
    if changed {
        meta.updated_at = now_secs();
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> SecretName {
        SecretName::parse(s).unwrap()
    }

    #[test]
    fn behaves_like_the_embedded_store() {
        let store = MemoryStore::new();
        let v = |s: &str| SecretBytes::from_slice(s.as_bytes());
        assert_eq!(store.put(&name("db"), &v("a"), None).unwrap(), 1);
        assert_eq!(store.put(&name("db"), &v("b"), Some(2_000)).unwrap(), 2);
        assert_eq!(store.put(&name("db"), &v("c"), None).unwrap(), 3);
        let got = store.get(&name("db")).unwrap();
        assert!(got.value.ct_eq(b"c") && got.version == 3 && got.ttl_ms == 2_000);
        assert!(store.get_version(&name("db"), 2).unwrap().unwrap().value.ct_eq(b"b"));
        assert!(store.get_version(&name("db"), 1).unwrap().is_none());
        let g = GrantTarget::parse("shop/app").unwrap();
        assert!(store.grant(&name("db"), &g).unwrap() && !store.grant(&name("db"), &g).unwrap());
        assert!(store.revoke(&name("db"), &g).unwrap() && !store.revoke(&name("db"), &g).unwrap());
        assert!(matches!(store.set_ttl(&name("db"), 10), Err(StoreError::BadTtl { ttl_ms: 10 })));
        let big = SecretBytes::zeroed(seg_common::name::MAX_VALUE_LEN + 1);
        assert!(matches!(store.put(&name("db"), &big, None), Err(StoreError::TooLarge { .. })));
        assert_eq!(store.meta(&name("db")).unwrap().version, 3);
        assert_eq!(store.list().unwrap().len(), 1);
        store.remove(&name("db")).unwrap();
        assert!(matches!(store.get(&name("db")), Err(StoreError::NotFound(_))));
        assert!(matches!(store.grant(&name("db"), &g), Err(StoreError::NotFound(_))));
        assert_eq!(store.put(&name("db"), &v("again"), None).unwrap(), 1);
        assert_eq!(store.kind(), "memory");
    }
}
