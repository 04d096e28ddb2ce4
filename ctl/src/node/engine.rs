//! The controller's link to the Docker engine. Docker may be down when the
//! controller starts (or start later): the admin API must work regardless,
//! so the connection is made in the background with backoff. There is one
//! [`Attestor`] for the controller's life; its container lookups go to
//! whichever Docker connection is current, so a host process is still told
//! `not_a_container` while Docker is down, and a container gets 503
//! `docker_unavailable`.

use super::admin::DockerStatus;
use super::agent::{Identify, IdentifyError};
use crate::attest::{Attested, Attestor, ContainerInfo, ContainerLookup, LookupError};
use crate::docker::{self, Backoff, DockerLookup};
use bollard::Docker;
use futures_util::future::BoxFuture;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// The current Docker client, or why there is none.
type Slot = Arc<RwLock<Result<Docker, String>>>;

fn current(slot: &Slot) -> Result<Docker, String> {
    slot.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// [`ContainerLookup`] over the current connection.
struct SlotLookup(Slot);

impl ContainerLookup for SlotLookup {
    fn inspect<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<ContainerInfo, LookupError>> {
        Box::pin(async move {
            let docker = current(&self.0)
                .map_err(|why| LookupError::Docker(format!("Docker is unreachable: {why}")))?;
            DockerLookup { docker }.inspect(id).await
        })
    }
}

pub struct EngineLink {
    slot: Slot,
    attestor: Arc<Attestor>,
}

impl EngineLink {
    /// `proc_root` is `/proc` in production.
    pub fn new(proc_root: PathBuf) -> Arc<EngineLink> {
        let slot: Slot = Arc::new(RwLock::new(Err("not connected yet".into())));
        let attestor = Arc::new(Attestor::new(Arc::new(SlotLookup(slot.clone())), proc_root));
        Arc::new(EngineLink { slot, attestor })
    }

    /// Connects in the background, retrying with backoff until it works;
    /// then starts the container-event watcher that keeps the cache honest.
    pub fn spawn_connect(self: &Arc<Self>, socket: PathBuf) -> tokio::task::JoinHandle<()> {
        let link = self.clone();
        tokio::spawn(async move {
            let mut backoff = Backoff::new();
            let mut attempts = 0u32;
            loop {
                match docker::connect(&socket).await {
                    Ok(docker) => return link.ready(docker),
                    Err(err) => {
                        attempts += 1;
                        if attempts == 1 {
                            tracing::error!(
                                "{err} Containers get 503 docker_unavailable until it answers; retrying."
                            );
                        } else {
                            tracing::debug!("Docker still unreachable (attempt {attempts}): {err}");
                        }
                        *link.slot.write().unwrap_or_else(|p| p.into_inner()) = Err(err.to_string());
                    }
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        })
    }

    fn ready(&self, docker: Docker) {
        // Detached: the watcher reconnects by itself for the controller's life.
        drop(docker::watch_container_events(docker.clone(), self.attestor.clone()));
        *self.slot.write().unwrap_or_else(|p| p.into_inner()) = Ok(docker);
        tracing::info!("connected to Docker; containers can be identified");
    }
}

impl Identify for EngineLink {
    fn identify(&self, pid: i32) -> BoxFuture<'_, Result<Attested, IdentifyError>> {
        Box::pin(async move { Ok(self.attestor.attest(pid).await?) })
    }
}

impl DockerStatus for EngineLink {
    fn describe(&self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            match current(&self.slot) {
                Ok(docker) => docker::describe(&docker).await,
                Err(why) => format!("unreachable, retrying: {why}"),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::AttestError;

    #[tokio::test]
    async fn without_docker_host_processes_are_still_refused_as_such() {
        let link = EngineLink::new("/proc".into());
        let me = std::process::id() as i32;
        let err = link.identify(me).await.unwrap_err();
        assert!(matches!(err, IdentifyError::Attest(AttestError::NotAContainer { .. })), "{err}");
        assert!(link.describe().await.starts_with("unreachable, retrying"));
    }

    #[tokio::test]
    async fn without_docker_containers_get_a_lookup_error() {
        let dir = tempfile::tempdir().unwrap();
        let pid_dir = dir.path().join("77");
        std::fs::create_dir_all(&pid_dir).unwrap();
        let stat = format!("77 (app) S {}\n", ["1"; 49].join(" "));
        std::fs::write(pid_dir.join("stat"), stat).unwrap();
        let id = "a".repeat(64);
        std::fs::write(pid_dir.join("cgroup"), format!("0::/system.slice/docker-{id}.scope\n")).unwrap();
        let link = EngineLink::new(dir.path().into());
        let err = link.identify(77).await.unwrap_err();
        let failure = err.into_failure();
        assert_eq!(
            (failure.status.as_u16(), failure.code),
            (503, "docker_unavailable"),
            "{}",
            failure.message
        );
    }
}
