//! An in-memory [`ClusterKv`] for unit tests.

use super::{ClusterKv, StoreError};
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct MemoryKv {
    keys: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryKv {
    fn keys(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClusterKv for MemoryKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.keys().get(key).cloned())
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self
            .keys()
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.keys().insert(key.to_owned(), value);
        Ok(())
    }

    fn create(&self, key: &str, value: Vec<u8>) -> Result<bool, StoreError> {
        let mut keys = self.keys();
        if keys.contains_key(key) {
            return Ok(false);
        }
        keys.insert(key.to_owned(), value);
        Ok(true)
    }

    fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.keys().remove(key))
    }
}
