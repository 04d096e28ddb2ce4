//! Workload identity by attestation: the agent socket's peer PID
//! (`SO_PEERCRED`) → its start time → `/proc/<pid>/cgroup` → container id →
//! Docker inspect (cached) → compose labels → [`Identity`]. The start time is
//! read again after the lookup so a PID reused meanwhile is refused.
//!
//! - [`procfs`]: pure parsing of `/proc/<pid>/stat` and `/proc/<pid>/cgroup`.
//! - [`labels`]: [`labels::identity_from_labels`], the label precedence rules.
//! - `cache`: the bounded, coalescing inspection cache.

mod cache;
pub mod labels;
pub mod procfs;
#[cfg(test)]
mod tests;

use futures_util::future::BoxFuture;
use seg_common::api::{BadLabel, Identity};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use cache::DEFAULT_CAPACITY;
pub use labels::{identity_from_labels, LabelError};
pub use procfs::ProcError;

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
    #[error("asked Docker for container {asked} but got {got}; is the socket the real Docker daemon?")]
    WrongContainer { asked: String, got: String },
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
    #[error("peer PID {pid} is not visible to the controller; run it in the host PID namespace (pid: host)")]
    InvisiblePid { pid: i32 },
    #[error("cannot identify process {pid}: {source}")]
    Proc { pid: i32, source: ProcError },
    #[error("container {container_id} is not running; refused")]
    NotRunning { container_id: String },
    #[error(
        "container {container_id} has an invalid identity label: {source}; fix the label and recreate it"
    )]
    BadLabel { container_id: String, source: BadLabel },
}

/// Maps agent-socket callers to identities; caches inspections per container.
pub struct Attestor {
    lookup: Arc<dyn ContainerLookup>,
    proc_root: PathBuf,
    cache: cache::InspectCache,
}

impl Attestor {
    /// `proc_root` is `/proc` in production, a fixture directory in tests.
    pub fn new(lookup: Arc<dyn ContainerLookup>, proc_root: PathBuf) -> Attestor {
        Attestor::with_capacity(lookup, proc_root, DEFAULT_CAPACITY)
    }

    /// Like [`Attestor::new`], remembering at most `capacity` containers.
    pub fn with_capacity(lookup: Arc<dyn ContainerLookup>, proc_root: PathBuf, capacity: usize) -> Attestor {
        Attestor { lookup, proc_root, cache: cache::InspectCache::new(capacity) }
    }

    /// Who process `pid` (host PID namespace) is. Reads procfs synchronously:
    /// these are tiny in-memory kernel files, not disk I/O.
    pub async fn attest(&self, pid: i32) -> Result<Attested, AttestError> {
        // SO_PEERCRED reports 0 for a peer outside our PID namespace.
        if pid <= 0 {
            return Err(AttestError::InvisiblePid { pid });
        }
        let proc_err = |source| match source {
            ProcError::Gone { pid } => AttestError::ProcessGone { pid },
            source => AttestError::Proc { pid, source },
        };
        let started = procfs::read_start_time(&self.proc_root, pid).map_err(proc_err)?;
        let container_id = procfs::read_container_id(&self.proc_root, pid)
            .map_err(proc_err)?
            .ok_or(AttestError::NotAContainer { pid })?;
        let info = self.inspect(&container_id).await?;
        // The PID may have been reused while we waited on Docker: only the
        // same process (same start time) may keep the identity we found.
        match procfs::read_start_time(&self.proc_root, pid) {
            Ok(again) if again == started => {}
            Ok(_) => return Err(AttestError::PidReused { pid }),
            Err(e) => return Err(proc_err(e)),
        }
        if !info.running {
            return Err(AttestError::NotRunning { container_id });
        }
        let identity = identity_from_labels(&info.labels).map_err(|e| match e {
            LabelError::Missing => AttestError::NoIdentity { container_id: container_id.clone() },
            LabelError::Invalid(source) => {
                AttestError::BadLabel { container_id: container_id.clone(), source }
            }
        })?;
        Ok(Attested { identity, container_id, container_name: info.name.clone() })
    }

    /// The cached or freshly looked-up inspection of `id`, checked to be that container.
    async fn inspect(&self, id: &str) -> Result<Arc<ContainerInfo>, AttestError> {
        let lookup_err = |source| AttestError::Lookup { container_id: id.to_owned(), source };
        let info = self.cache.get_or_inspect(id, self.lookup.as_ref()).await.map_err(lookup_err)?;
        if info.id != id {
            self.cache.forget(id);
            return Err(lookup_err(LookupError::WrongContainer {
                asked: id.to_owned(),
                got: info.id.clone(),
            }));
        }
        Ok(info)
    }

    /// Drops the cached inspection of a container (on `die`/`destroy`).
    pub fn forget(&self, container_id: &str) {
        self.cache.forget(container_id);
    }

    /// Drops every cached inspection (after a gap in the event stream).
    pub fn forget_all(&self) {
        self.cache.clear();
    }

    /// Whether an inspection of `container_id` is cached (for tests and status).
    pub fn is_cached(&self, container_id: &str) -> bool {
        self.cache.contains(container_id)
    }

    /// How many containers are cached or being inspected.
    pub fn cached_count(&self) -> usize {
        self.cache.len()
    }
}
