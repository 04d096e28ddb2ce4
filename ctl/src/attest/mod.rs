//! Workload identity by attestation: the agent socket's peer, pinned at
//! accept ([`PinnedPeer`]: a pidfd, or the start time where pidfds are
//! missing) → `/proc/<pid>/cgroup` → container id → Docker inspect (cached)
//! → labels → [`Identity`] ([`crate::identity`]). The cgroup is trusted only if the pinned
//! process is still alive after it was read, so a PID reused meanwhile is
//! refused.
//!
//! Messages never name host PIDs: they are shown to the caller, and a host
//! PID tells a container about the host (the access log has the PID in its
//! own field).
//!
//! - [`peer`]: pinning the caller of a connection.
//! - [`procfs`]: pure parsing of `/proc/<pid>/stat` and `/proc/<pid>/cgroup`.
//! - `cache`: the bounded, coalescing inspection cache.

mod cache;
pub mod peer;
pub mod procfs;
#[cfg(test)]
mod tests;

use crate::identity::{identity_from_labels, LabelError};
use futures_util::future::BoxFuture;
use seg_common::api::{BadLabel, Identity};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use cache::DEFAULT_CAPACITY;
pub use peer::{PinError, PinnedPeer};
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
    /// Its bind mounts (source on the host, writable or not).
    pub binds: Vec<BindMount>,
}

/// A host path mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub writable: bool,
}

/// The first writable bind mount through which a container could change
/// `dir` (the mount of `dir` itself or of one of its parents).
pub fn writable_mount_of<'a>(info: &'a ContainerInfo, dir: &Path) -> Option<&'a BindMount> {
    info.binds.iter().find(|b| b.writable && dir.starts_with(&b.source))
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
    #[error("the caller is not in a container; the agent socket only serves containers")]
    NotAContainer { pid: i32 },
    #[error("the process that opened this connection has exited; connect from the process that makes the requests")]
    ProcessGone { pid: i32 },
    #[error("container {container_id} has no seg identity: label it com.docker.compose.service, seg.for or seg.service")]
    NoIdentity { container_id: String },
    #[error("cannot identify container {container_id}: {cause}")]
    Lookup { container_id: String, cause: LookupError },
    #[error("the caller's PID is not visible to the controller; run the controller in the host PID namespace (pid: host)")]
    InvisiblePid { pid: i32 },
    #[error("cannot identify the caller: {cause}")]
    Proc { pid: i32, cause: ProcError },
    #[error("container {container_id} is not running; refused")]
    NotRunning { container_id: String },
    #[error(
        "container {container_id} has an invalid identity label: {cause}; fix the label and recreate it"
    )]
    BadLabel { container_id: String, cause: BadLabel },
    #[error(
        "container {container_id} mounts {host_path} read-write ({}), through which it could remove or \
         replace the agent socket; mount the agent directory read-only (:ro) and recreate the container",
        .mount.display()
    )]
    WritableAgentMount { container_id: String, host_path: String, mount: PathBuf },
}

/// Maps agent-socket callers to identities; caches inspections per container.
pub struct Attestor {
    lookup: Arc<dyn ContainerLookup>,
    proc_root: PathBuf,
    cache: cache::InspectCache,
    /// Containers that can write here (the agent directory) are refused.
    agent_dir: Option<PathBuf>,
}

impl Attestor {
    /// `proc_root` is `/proc` in production, a fixture directory in tests.
    pub fn new(lookup: Arc<dyn ContainerLookup>, proc_root: PathBuf) -> Attestor {
        Attestor::with_capacity(lookup, proc_root, DEFAULT_CAPACITY)
    }

    /// Like [`Attestor::new`], remembering at most `capacity` containers.
    pub fn with_capacity(lookup: Arc<dyn ContainerLookup>, proc_root: PathBuf, capacity: usize) -> Attestor {
        Attestor { lookup, proc_root, cache: cache::InspectCache::new(capacity), agent_dir: None }
    }

    /// Refuses containers with a writable bind mount of `dir` or a parent.
    pub fn refusing_writable_mounts_of(mut self, dir: PathBuf) -> Attestor {
        self.agent_dir = Some(dir);
        self
    }

    /// Who the pinned caller is. Reads procfs synchronously: these are tiny
    /// in-memory kernel files, not disk I/O.
    pub async fn attest(&self, peer: &PinnedPeer) -> Result<Attested, AttestError> {
        let pid = peer.pid;
        if pid <= 0 {
            return Err(AttestError::InvisiblePid { pid });
        }
        let proc_err = |source| match source {
            ProcError::Gone { pid } => AttestError::ProcessGone { pid },
            cause => AttestError::Proc { pid, cause },
        };
        let container = procfs::read_container_id(&self.proc_root, pid).map_err(proc_err)?;
        // The cgroup read above was of the pinned process only if it is
        // still alive now (a PID is freed only after its process is reaped).
        if !peer.is_alive() {
            return Err(AttestError::ProcessGone { pid });
        }
        let container_id = container.ok_or(AttestError::NotAContainer { pid })?;
        let info = self.inspect(&container_id).await?;
        // Gone while Docker answered: refuse rather than hand an identity to
        // a connection whose process no longer exists.
        if !peer.is_alive() {
            return Err(AttestError::ProcessGone { pid });
        }
        if !info.running {
            return Err(AttestError::NotRunning { container_id });
        }
        if let Some(bind) = self.agent_dir.as_deref().and_then(|dir| writable_mount_of(&info, dir)) {
            return Err(AttestError::WritableAgentMount {
                container_id: container_id.clone(),
                host_path: bind.source.display().to_string(),
                mount: bind.destination.clone().into(),
            });
        }
        let identity = identity_from_labels(&info.labels).map_err(|e| match e {
            LabelError::Missing => AttestError::NoIdentity { container_id: container_id.clone() },
            LabelError::Invalid(cause) => AttestError::BadLabel { container_id: container_id.clone(), cause },
        })?;
        Ok(Attested { identity, container_id, container_name: info.name.clone() })
    }

    /// The cached or freshly looked-up inspection of `id`, checked to be that container.
    async fn inspect(&self, id: &str) -> Result<Arc<ContainerInfo>, AttestError> {
        let lookup_err = |cause| AttestError::Lookup { container_id: id.to_owned(), cause };
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
