//! The applied policies and the ICC setting of a cluster, in etcd beside
//! the membership records: `<prefix>/cluster/policies/<name>` (the same
//! record as `policies/<name>.json` on one host) and `<prefix>/cluster/icc`.
//! Every node reads them (`follow.rs`) and enforces them on its own
//! containers. Errors name the etcd key, as the file store names the file.

use super::record::{parse_record, IccFile, Record, StoreError};
use crate::policy::Policy;
use crate::store::ClusterKv;
use std::path::PathBuf;

fn key_path(key: &str) -> PathBuf {
    PathBuf::from(format!("etcd:<prefix>/cluster/{key}"))
}

fn etcd<'a>(action: &'static str, key: &'a str) -> impl FnOnce(crate::store::StoreError) -> StoreError + 'a {
    move |e| StoreError::Io { action, path: key_path(key), cause: std::io::Error::other(e.to_string()) }
}

pub(super) fn load_all(kv: &dyn ClusterKv) -> Result<Vec<(Record, Policy)>, StoreError> {
    let listed = kv.list("policies/").map_err(etcd("read", "policies/"))?;
    listed.iter().map(|(key, bytes)| parse_record(&key_path(key), bytes)).collect()
}

pub(super) fn save(kv: &dyn ClusterKv, record: &Record) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(record).expect("records serialize");
    put(kv, &format!("policies/{}", record.name), bytes)
}

pub(super) fn put(kv: &dyn ClusterKv, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
    kv.put(key, bytes).map_err(etcd("write", key))
}

pub(super) fn remove(kv: &dyn ClusterKv, name: &str) -> Result<bool, StoreError> {
    let key = format!("policies/{name}");
    Ok(kv.take(&key).map_err(etcd("remove", &key))?.is_some())
}

pub(super) fn load_icc(kv: &dyn ClusterKv) -> Result<bool, StoreError> {
    match kv.get("icc").map_err(etcd("read", "icc"))? {
        Some(bytes) => serde_json::from_slice::<IccFile>(&bytes)
            .map(|f| f.docker0_icc)
            .map_err(|e| StoreError::Damaged { path: key_path("icc"), reason: e.to_string() }),
        None => Ok(true),
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::Store;
    use super::*;
    use crate::segregation::api::PolicySource;
    use crate::store::memory_kv::MemoryKv;
    use std::sync::Arc;

    #[test]
    fn the_cluster_store_keeps_policies_and_icc_like_the_files() {
        let kv = Arc::new(MemoryKv::default());
        let store = Store::cluster(kv.clone());
        assert!(store.load_all().unwrap().is_empty() && store.load_icc().unwrap());
        let source = PolicySource {
            file: "shop.yaml".into(),
            text: "version: 1\nproject: shop\nservices:\n  db: {}\n".into(),
            dir_project: None,
        };
        let record = Record { name: "shop".into(), source, applied_at: 1, grants: Vec::new() };
        store.save(&record).unwrap();
        store.save_icc(false).unwrap();
        let again = Store::cluster(kv.clone());
        assert_eq!(again.load_all().unwrap()[0].0, record);
        assert!(!again.load_icc().unwrap());
        kv.put("policies/bad", b"{".to_vec()).unwrap();
        let err = again.load_all().unwrap_err().to_string();
        assert!(err.contains("etcd:<prefix>/cluster/policies/bad is damaged"), "{err}");
        assert!(again.remove("shop").unwrap() && !again.remove("shop").unwrap());
    }
}
