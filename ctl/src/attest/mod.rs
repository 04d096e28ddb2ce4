//! Workload identity by attestation: the agent socket's peer PID
//! (`SO_PEERCRED`) → its start time → `/proc/<pid>/cgroup` → container id →
//! Docker inspect (cached) → compose labels → [`Identity`]. The start time is
//! read again after the lookup so a PID reused meanwhile is refused.

use futures_util::future::BoxFuture;
use seg_common::api::Identity;
use std::collections::BTreeMap;

/// What the controller needs to know of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Host PID of the container's init process (0 when not running).
    pub pid: i64,
    pub running: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("container {0} does not exist")]
    NoSuchContainer(String),
    #[error("Docker API: {0}")]
    Docker(String),
}

/// The narrow Docker seam the attestor needs (a fake in unit tests).
pub trait ContainerLookup: Send + Sync {
    fn inspect<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<ContainerInfo, LookupError>>;
}

/// The result of a successful attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    pub identity: Identity,
    pub container_id: String,
    pub container_name: String,
}
