//! What the controller persists for segregation, under its state directory:
//! `policies/<name>.json` (one applied policy each: its source text, so a
//! restart re-reads exactly what was applied) and `icc.json` (the docker0
//! ICC setting). Every write is atomic: temp file, fsync, rename, fsync dir.

use crate::policy::Policy;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub use super::record::{name_of, Record, StoreError, STANDALONE};
use super::record::{parse_record, IccFile};

/// Where the applied policies and the ICC setting live: this node's state
/// directory, or, on a node of a cluster, the cluster store in etcd
/// (`store_cluster.rs`), shared by every node.
pub struct Store {
    dir: PathBuf,
    icc_file: PathBuf,
    cluster: Option<std::sync::Arc<dyn crate::store::ClusterKv>>,
}

impl Store {
    /// Creates `<state>/policies` (0700) if needed.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let dir = state_dir.join("policies");
        fs::create_dir_all(&dir).map_err(|cause| StoreError::Io {
            action: "create",
            path: dir.clone(),
            cause,
        })?;
        Ok(Store { dir, icc_file: state_dir.join("icc.json"), cluster: None })
    }

    /// The cluster's policies (`<prefix>/cluster/policies/NAME`, `…/icc`).
    pub fn cluster(kv: std::sync::Arc<dyn crate::store::ClusterKv>) -> Store {
        Store { dir: PathBuf::new(), icc_file: PathBuf::new(), cluster: Some(kv) }
    }

    pub fn is_shared(&self) -> bool {
        self.cluster.is_some()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Every stored policy with its parsed form, sorted by name. A file that
    /// does not read is an error: starting with a policy silently missing
    /// would open what it closes.
    pub fn load_all(&self) -> Result<Vec<(Record, Policy)>, StoreError> {
        if let Some(kv) = &self.cluster {
            return super::store_cluster::load_all(kv.as_ref());
        }
        let io = |cause| StoreError::Io { action: "read", path: self.dir.clone(), cause };
        let mut paths: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        paths.iter().map(|p| load_one(p)).collect()
    }

    pub fn save(&self, record: &Record) -> Result<(), StoreError> {
        if let Some(kv) = &self.cluster {
            return super::store_cluster::save(kv.as_ref(), record);
        }
        let bytes = serde_json::to_vec_pretty(record).expect("records serialize");
        write_atomically(&self.path(&record.name), &bytes)
    }

    /// Removes a stored policy; `false` if there was none.
    pub fn remove(&self, name: &str) -> Result<bool, StoreError> {
        if let Some(kv) = &self.cluster {
            return super::store_cluster::remove(kv.as_ref(), name);
        }
        let path = self.path(name);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir).map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(cause) => Err(StoreError::Io { action: "remove", path, cause }),
        }
    }

    /// The docker0 ICC setting; on (Docker's default) when never set.
    pub fn load_icc(&self) -> Result<bool, StoreError> {
        if let Some(kv) = &self.cluster {
            return super::store_cluster::load_icc(kv.as_ref());
        }
        match fs::read(&self.icc_file) {
            Ok(bytes) => serde_json::from_slice::<IccFile>(&bytes)
                .map(|f| f.docker0_icc)
                .map_err(|e| StoreError::Damaged { path: self.icc_file.clone(), reason: e.to_string() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(cause) => Err(StoreError::Io { action: "read", path: self.icc_file.clone(), cause }),
        }
    }

    pub fn save_icc(&self, enabled: bool) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(&IccFile { docker0_icc: enabled }).expect("serializes");
        if let Some(kv) = &self.cluster {
            return super::store_cluster::put(kv.as_ref(), "icc", bytes);
        }
        write_atomically(&self.icc_file, &bytes)
    }
}

fn load_one(path: &Path) -> Result<(Record, Policy), StoreError> {
    let bytes =
        fs::read(path).map_err(|cause| StoreError::Io { action: "read", path: path.to_owned(), cause })?;
    parse_record(path, &bytes)
}

/// Temp file (0600) in the same directory, fsync, rename, fsync the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}-{:08x}.tmp", std::process::id(), fastrand::u32(..)));
    let fail = |action: &'static str| move |cause| StoreError::Io { action, path: path.to_owned(), cause };
    let result = (|| {
        let mut file =
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(fail("create"))?;
        file.write_all(bytes).map_err(fail("write"))?;
        file.sync_all().map_err(fail("fsync"))?;
        fs::rename(&tmp, path).map_err(fail("rename into"))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|cause| StoreError::Io {
        action: "fsync",
        path: dir.to_owned(),
        cause,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segregation::api::PolicySource;

    fn record(name: &str, text: &str) -> Record {
        let source = PolicySource { file: format!("{name}.yaml"), text: text.into(), dir_project: None };
        Record { name: name.into(), source, applied_at: 1, grants: Vec::new() }
    }

    #[test]
    fn policies_and_icc_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.load_all().unwrap().is_empty());
        assert!(store.load_icc().unwrap(), "ICC is on until someone turns it off");
        let shop = record("shop", "version: 1\nproject: shop\nservices:\n  db: {}\n");
        store.save(&shop).unwrap();
        store.save(&record(STANDALONE, "version: 1\nservices:\n  vault: {}\n")).unwrap();
        let loaded = store.load_all().unwrap();
        let names: Vec<&str> = loaded.iter().map(|(r, _)| r.name.as_str()).collect();
        assert_eq!(names, [STANDALONE, "shop"]);
        assert_eq!(loaded[1].0, shop);
        assert!(store.remove("shop").unwrap() && !store.remove("shop").unwrap());
        store.save_icc(false).unwrap();
        assert!(!Store::open(dir.path()).unwrap().load_icc().unwrap());
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("policies")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp files left behind");
    }

    #[test]
    fn damaged_files_stop_the_load_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fs::write(dir.path().join("policies/x.json"), "{").unwrap();
        let err = store.load_all().unwrap_err().to_string();
        assert!(err.contains("policies/x.json is damaged"), "{err}");
        fs::remove_file(dir.path().join("policies/x.json")).unwrap();
        store.save(&record("shop", "version: 2\n")).unwrap();
        let err = store.load_all().unwrap_err().to_string();
        assert!(err.contains("no longer reads cleanly") && err.contains("shop.yaml:1:10"), "{err}");
        store.save(&record("shop", "version: 1\nproject: other\n")).unwrap();
        assert!(store.load_all().unwrap_err().to_string().contains("holds `other`"));
    }
}
