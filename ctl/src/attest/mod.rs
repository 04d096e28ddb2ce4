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

#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error("process {pid} is not in a container; the agent socket only serves containers")]
    NotAContainer { pid: i32 },
    #[error("process {pid} is gone")]
    ProcessGone { pid: i32 },
    #[error("process {pid} changed while it was being identified (PID reused); refused")]
    PidReused { pid: i32 },
    #[error("container {container_id} has no seg identity: label it com.docker.compose.service, seg.for or seg.service")]
    NoIdentity { container_id: String },
    #[error("cannot identify container {container_id}: {source}")]
    Lookup { container_id: String, source: LookupError },
}

/// Maps agent-socket callers to identities; caches inspections per container.
pub struct Attestor {
    // fields: being written
}

impl Attestor {
    /// `proc_root` is `/proc` in production, a fixture directory in tests.
    pub fn new(_lookup: std::sync::Arc<dyn ContainerLookup>, _proc_root: std::path::PathBuf) -> Attestor {
        todo!("being written")
    }

    pub async fn attest(&self, _pid: i32) -> Result<Attested, AttestError> {
        todo!("being written")
    }

    /// Drops the cached inspection of a container (on `die`/`destroy`).
    pub fn forget(&self, _container_id: &str) {
        todo!("being written")
    }
}
