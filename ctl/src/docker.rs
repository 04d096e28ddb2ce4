//! The Docker Engine connection: bollard over the local unix socket, API
//! version negotiated (the engine here is 20.10 / API 1.41).

use crate::attest::Attestor;
use bollard::Docker;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker daemon at {socket}: {reason}. Is dockerd running?")]
    Unreachable { socket: String, reason: String },
}

/// Connects and negotiates the API version.
pub async fn connect(_socket: &Path) -> Result<Docker, DockerError> {
    todo!("being written")
}

/// "ok (API 1.41, engine 20.10.24)" or what went wrong, for `segctl status`.
pub async fn describe(_docker: &Docker) -> String {
    todo!("being written")
}

/// [`crate::attest::ContainerLookup`] backed by the real engine.
pub struct DockerLookup {
    pub docker: Docker,
}

/// Follows the engine's container events and drops cached identities of
/// containers that die or are destroyed; reconnects with backoff.
pub fn watch_container_events(_docker: Docker, _attestor: Arc<Attestor>) -> tokio::task::JoinHandle<()> {
    todo!("being written")
}
