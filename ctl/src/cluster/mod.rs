//! Cluster membership (issue #11): the cluster's own CA, join tokens, node
//! and admin certificates, the records that say who is a member, and what
//! a node keeps of it on disk. Pure pieces and one narrow seam to etcd
//! ([`crate::store::ClusterKv`]); the endpoint that serves joins, renewals
//! and remote administration is `node::cluster_endpoint`, the commands
//! `cli::cluster`. See docs/cluster.md.
//!
//! - [`ca`]: the CA (rcgen), requests, what a peer's certificate says.
//! - [`token`]: join tokens (CA fingerprint + one-time secret).
//! - [`directory`]: the records under `<prefix>/cluster/` in etcd.
//! - [`files`]: what a node keeps in `<state-dir>/cluster/`.
//! - [`tls`]: rustls configurations; [`remote`]: one request to an endpoint.
//! - [`api`]: the endpoint's request and answer bodies.

pub mod api;
pub mod ca;
pub mod directory;
pub mod files;
pub mod remote;
pub mod tls;
pub mod token;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{what}: {cause}")]
    Certificate { what: &'static str, cause: String },
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Token(#[from] token::TokenError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("etcd key {key} is not a record seg can read ({cause}); remove it with etcdctl or restore it")]
    Corrupt { key: String, cause: String },
    #[error(
        "a seg cluster already exists under this etcd prefix (created on {created_on}): join it with a token \
         (`segctl cluster token` on one of its nodes), or give another --prefix"
    )]
    Exists { created_on: String },
    #[error(
        "this node is in a cluster already ({dir} exists): remove it from the cluster (`segctl cluster remove`) \
         and move the directory away first"
    )]
    AlreadyMember { dir: PathBuf },
    #[error("{action} {path}: {cause}", path = .path.display())]
    Files { action: &'static str, path: PathBuf, cause: String },
    #[error("cannot reach {url}: {cause}")]
    Unreachable { url: String, cause: String },
    #[error("{url} refused: {message}")]
    Refused { url: String, status: u16, message: String },
}

/// A node's (or an admin's) name: a DNS label's characters, so that it is
/// also an etcd key segment, a certificate's common name and a table cell.
pub fn check_name(name: &str) -> Result<(), ClusterError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !ok {
        return Err(ClusterError::BadRequest(format!(
            "node name {name:?} is not usable: use 1-63 letters, digits, `-`, `.` or `_` (--node-name)"
        )));
    }
    Ok(())
}

/// The host part of `HOST:PORT` (brackets of an IPv6 address removed).
pub fn host_of(address: &str) -> Result<String, ClusterError> {
    let bad = || ClusterError::BadRequest(format!("{address:?} is not HOST:PORT"));
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok(host.to_owned())
}

/// A certificate and its key as one PEM text in locked memory (what
/// rustls and `node.pem` take).
pub fn pem_pair(cert: &str, key: &seg_common::secret::SecretBytes) -> seg_common::secret::SecretBytes {
    let mut pair = seg_common::secret::SecretBytes::zeroed(cert.len() + key.len());
    pair.as_mut_bytes()[..cert.len()].copy_from_slice(cert.as_bytes());
    pair.as_mut_bytes()[cert.len()..].copy_from_slice(key.expose());
    pair
}

/// The host name, as a node's default name.
pub fn default_name() -> Result<String, ClusterError> {
    let path = std::path::Path::new("/proc/sys/kernel/hostname");
    let name = std::fs::read_to_string(path).map_err(|e| ClusterError::Files {
        action: "reading the host name from",
        path: path.into(),
        cause: format!("{e}; give --node-name"),
    })?;
    Ok(name.trim().to_owned())
}
