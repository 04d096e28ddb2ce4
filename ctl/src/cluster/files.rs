//! What a node of a cluster keeps in `<state-dir>/cluster/` (0700, files 0600):
//!
//! | file | what |
//! |---|---|
//! | `cluster.json` | [`ClusterConfig`]: this node's name, etcd, its endpoint, the CA node's URL |
//! | `ca.crt` | the cluster CA's certificate |
//! | `etcd-ca.crt` | the CA of etcd's members |
//! | `node.pem` | this node's certificate and private key, in one file so that a renewal replaces both at once |
//! | `kek` | the cluster's key-encryption key (32 bytes) |
//! | `ca.key` | the cluster CA's private key: only on the node where `cluster init` ran |
//!
//! `cluster init` and `cluster join` write the whole directory under a
//! temporary name and rename it into place: a node is in a cluster with
//! every file, or not at all.

use super::ClusterError;
use crate::store::disk;
use seg_common::secret::SecretBytes;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const DIR: &str = "cluster";
const CONFIG: &str = "cluster.json";
const CA_CERT: &str = "ca.crt";
const ETCD_CA: &str = "etcd-ca.crt";
const NODE_PEM: &str = "node.pem";
pub const KEK: &str = "kek";
const CA_KEY: &str = "ca.key";
/// Bound on any of these files.
const MAX_FILE: u64 = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub format: u32,
    pub node_name: String,
    pub etcd_endpoints: Vec<String>,
    pub etcd_prefix: String,
    /// This node's etcd client certificate and key (the operator's files).
    pub etcd_identity: Option<(PathBuf, PathBuf)>,
    /// Where this node's endpoint listens (`ADDR:PORT`).
    pub listen: String,
    /// How the other nodes and admins reach it (`HOST:PORT`).
    pub advertise: String,
    /// The CA node's endpoint (`https://HOST:PORT`): renewals go there.
    pub ca_url: String,
}

/// Everything a node of the cluster keeps.
pub struct Bundle {
    pub config: ClusterConfig,
    pub ca_cert: String,
    pub etcd_ca: String,
    pub node_cert: String,
    pub node_key: SecretBytes,
    pub kek: SecretBytes,
    /// Only on the CA node.
    pub ca_key: Option<SecretBytes>,
}

pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join(DIR)
}

pub fn exists(state_dir: &Path) -> bool {
    dir(state_dir).join(CONFIG).exists()
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ClusterError + 'a {
    move |cause| ClusterError::Files { action, path: path.to_owned(), cause: cause.to_string() }
}

fn store_err(e: crate::store::StoreError) -> ClusterError {
    ClusterError::Files { action: "using", path: PathBuf::new(), cause: e.to_string() }
}

/// Writes `bundle` as `<state>/cluster/`, which must not exist yet.
pub fn install(state_dir: &Path, bundle: &Bundle) -> Result<(), ClusterError> {
    let target = dir(state_dir);
    if target.exists() {
        return Err(ClusterError::AlreadyMember { dir: target });
    }
    disk::ensure_private_dir(state_dir).map_err(store_err)?;
    let staging = state_dir.join(format!(".{DIR}.{:016x}.tmp", fastrand::u64(..)));
    let written = write_files(&staging, bundle).and_then(|()| {
        std::fs::rename(&staging, &target).map_err(io("renaming into place", &target))?;
        disk::fsync_dir(state_dir).map_err(store_err)
    });
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    written
}

fn write_files(staging: &Path, bundle: &Bundle) -> Result<(), ClusterError> {
    disk::ensure_private_dir(staging).map_err(store_err)?;
    let config = serde_json::to_vec_pretty(&bundle.config).expect("the config serializes");
    let node = super::pem_pair(&bundle.node_cert, &bundle.node_key);
    let mut files: Vec<(&str, &[u8])> = vec![
        (CONFIG, &config),
        (CA_CERT, bundle.ca_cert.as_bytes()),
        (ETCD_CA, bundle.etcd_ca.as_bytes()),
        (NODE_PEM, node.expose()),
        (KEK, bundle.kek.expose()),
    ];
    if let Some(key) = &bundle.ca_key {
        files.push((CA_KEY, key.expose()));
    }
    for (name, bytes) in files {
        disk::replace(staging, name, bytes).map_err(store_err)?;
    }
    disk::fsync_dir(staging).map_err(store_err)
}

/// Replaces this node's certificate and key together (a renewal).
pub fn replace_node_pem(state_dir: &Path, cert: &str, key: &SecretBytes) -> Result<(), ClusterError> {
    let dir = dir(state_dir);
    let node = super::pem_pair(cert, key);
    disk::replace(&dir, NODE_PEM, node.expose()).map_err(store_err)?;
    disk::fsync_dir(&dir).map_err(store_err)
}

pub fn load_config(state_dir: &Path) -> Result<ClusterConfig, ClusterError> {
    let path = dir(state_dir).join(CONFIG);
    let (raw, _) = disk::read_regular(&path, MAX_FILE).map_err(store_err)?;
    serde_json::from_slice(&raw).map_err(|e| ClusterError::Files {
        action: "reading",
        path,
        cause: format!("{e}; restore the file from a backup or join the cluster again"),
    })
}

pub fn read_text(state_dir: &Path, name: &str) -> Result<String, ClusterError> {
    let path = dir(state_dir).join(name);
    let (raw, _) = disk::read_regular(&path, MAX_FILE).map_err(store_err)?;
    String::from_utf8(raw).map_err(|_| io("reading", &path)(std::io::Error::other("not text")))
}

/// A private file (0600, ours) read into locked memory.
pub fn read_private(path: &Path) -> Result<SecretBytes, ClusterError> {
    let (raw, meta) = disk::read_regular(path, MAX_FILE).map_err(store_err)?;
    let raw = zeroize::Zeroizing::new(raw);
    disk::check_private_file(path, &meta).map_err(store_err)?;
    Ok(SecretBytes::from_slice(&raw))
}

pub fn ca_cert(state_dir: &Path) -> Result<String, ClusterError> {
    read_text(state_dir, CA_CERT)
}

pub fn etcd_ca_path(state_dir: &Path) -> PathBuf {
    dir(state_dir).join(ETCD_CA)
}

pub fn kek_path(state_dir: &Path) -> PathBuf {
    dir(state_dir).join(KEK)
}

pub fn node_pem(state_dir: &Path) -> Result<SecretBytes, ClusterError> {
    read_private(&dir(state_dir).join(NODE_PEM))
}

/// The CA's key, when this node holds it.
pub fn ca_key(state_dir: &Path) -> Result<Option<SecretBytes>, ClusterError> {
    let path = dir(state_dir).join(CA_KEY);
    if !path.exists() {
        return Ok(None);
    }
    read_private(&path).map(Some)
}

/// What `segctl cluster admin-cert --out DIR` writes (DIR 0700, files 0600):
/// `ca.crt`, `admin.crt`, `admin.key` — read back by `remote::admin_config`.
pub fn write_admin_dir(out: &Path, ca_cert: &str, cert: &str, key: &SecretBytes) -> Result<(), ClusterError> {
    disk::ensure_private_dir(out).map_err(store_err)?;
    for (name, bytes) in
        [("ca.crt", ca_cert.as_bytes()), ("admin.crt", cert.as_bytes()), ("admin.key", key.expose())]
    {
        disk::replace(out, name, bytes).map_err(store_err)?;
    }
    disk::fsync_dir(out).map_err(store_err)
}
