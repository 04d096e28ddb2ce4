//! The node's side of the shared [`DockerLink`]: attestation, post-rotate
//! signals and status. Docker may be down when the controller starts (or
//! start later): the admin API works regardless. There is one [`Attestor`]
//! for the controller's life; its container lookups go to the link's
//! current client, so a host process is still told `not_a_container` while
//! Docker is down, and a container gets 503 `docker_unavailable`.

use super::admin::DockerStatus;
use super::agent::{Identify, IdentifyError};
use super::rotation_state::{AppContainer, Containers, ContainersError};
use crate::attest::{Attested, Attestor, ContainerInfo, ContainerLookup, LookupError, PinnedPeer};
use crate::docker::map::{from_summary, Known};
use crate::docker::{self, DockerLink, DockerLookup, Kind, Notice, Subscription};
use crate::identity::{identity_from_labels, is_sidecar, notify_from};
use futures_util::future::BoxFuture;
use seg_common::api::Identity;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// [`ContainerLookup`] over the current connection.
struct LinkLookup(Arc<DockerLink>);

impl ContainerLookup for LinkLookup {
    fn inspect<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<ContainerInfo, LookupError>> {
        Box::pin(async move {
            let docker = self
                .0
                .settled(crate::docker::FIRST_ATTEMPT_WAIT)
                .await
                .map_err(|why| LookupError::Docker(format!("Docker is unreachable: {why}")))?;
            DockerLookup { docker }.inspect(id).await
        })
    }
}

/// Told when a container stops or is removed (`action` is Docker's:
/// `die`, `stop`, `destroy`, `rename`), after its cached identity is dropped.
pub type GoneListener = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Container events that make a cached inspection stale (`rename`: the
/// name we log).
const STALE_EVENTS: [&str; 4] = ["die", "stop", "destroy", "rename"];

/// The node's use of the Docker link: the attestor, container lookups for
/// post-rotate actions, and the link's status for the admin API.
pub struct DockerSide {
    link: Arc<DockerLink>,
    attestor: Arc<Attestor>,
}

impl DockerSide {
    /// `proc_root` is `/proc` in production; containers that can write to
    /// `agent_dir` (a read-write bind mount of it or a parent) are refused.
    pub fn new(link: Arc<DockerLink>, proc_root: PathBuf, agent_dir: Option<PathBuf>) -> Arc<DockerSide> {
        let mut attestor = Attestor::new(Arc::new(LinkLookup(link.clone())), proc_root);
        if let Some(dir) = agent_dir {
            attestor = attestor.refusing_writable_mounts_of(dir);
        }
        Arc::new(DockerSide { link, attestor: Arc::new(attestor) })
    }

    /// Keeps the attestation cache honest from the link's events, telling
    /// `gone` of every container that stops or is removed. Call before the
    /// link connects.
    pub fn follow_events(&self, gone: GoneListener) -> tokio::task::JoinHandle<()> {
        forget_on_events(self.link.subscribe(), self.attestor.clone(), gone)
    }
}

/// Drops the cached identities of containers that die, stop, are renamed
/// or removed, telling `gone` each time — and every cached identity after a
/// gap in the events.
pub fn forget_on_events(
    mut events: Subscription,
    attestor: Arc<Attestor>,
    gone: GoneListener,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(notice) = events.next().await {
            match notice {
                Notice::Gap => attestor.forget_all(),
                Notice::Event(ev)
                    if ev.kind == Kind::Container && STALE_EVENTS.contains(&ev.action.as_str()) =>
                {
                    tracing::debug!(container = %ev.actor, action = %ev.action,
                        "container event: cached identity dropped");
                    attestor.forget(&ev.actor);
                    gone(&ev.actor, &ev.action);
                }
                Notice::Event(_) => {}
            }
        }
    })
}

impl Identify for DockerSide {
    fn identify<'a>(&'a self, peer: &'a PinnedPeer) -> BoxFuture<'a, Result<Attested, IdentifyError>> {
        Box::pin(async move { Ok(self.attestor.attest(peer).await?) })
    }
}

impl DockerStatus for DockerSide {
    fn describe(&self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            match self.link.current() {
                Ok(docker) => docker::describe(&docker).await,
                Err(why) => format!("unreachable, retrying: {why}"),
            }
        })
    }
}

impl Containers for DockerSide {
    fn find<'a>(&'a self, who: &'a Identity) -> BoxFuture<'a, Result<Vec<AppContainer>, ContainersError>> {
        Box::pin(async move {
            let docker = self.link.current().map_err(ContainersError::Unreachable)?;
            let filters = HashMap::from([("status".to_owned(), vec!["running".to_owned()])]);
            let opts = bollard::query_parameters::ListContainersOptions {
                filters: Some(filters),
                ..Default::default()
            };
            let list = docker.list_containers(Some(opts)).await.map_err(ContainersError::List)?;
            Ok(list.into_iter().filter_map(from_summary).filter_map(|c| app_container(c, who)).collect())
        })
    }

    fn signal<'a>(&'a self, id: &'a str, signal: &'a str) -> BoxFuture<'a, Result<(), ContainersError>> {
        Box::pin(async move {
            let docker = self.link.current().map_err(ContainersError::Unreachable)?;
            let opts = bollard::query_parameters::KillContainerOptions { signal: signal.to_owned() };
            docker
                .kill_container(id, Some(opts))
                .await
                .map_err(|cause| ContainersError::Signal { signal: signal.to_owned(), cause })
        })
    }

    fn exec<'a>(
        &'a self,
        run: docker::ExecRun<'a>,
    ) -> BoxFuture<'a, Result<docker::ExecOutput, ContainersError>> {
        Box::pin(async move {
            let docker = self.link.current().map_err(ContainersError::Unreachable)?;
            docker::exec(&docker, run).await.map_err(ContainersError::Exec)
        })
    }
}

/// `c` if it is a running app container of `who` (never a sidecar: those
/// carry `seg.for` and share the identity of the service they act for).
fn app_container(c: Known, who: &Identity) -> Option<AppContainer> {
    let labels = &c.facts.labels;
    if is_sidecar(labels) || identity_from_labels(labels).ok().as_ref() != Some(who) {
        return None;
    }
    let mut addresses: Vec<IpAddr> =
        c.facts.endpoints.iter().filter_map(|e| e.ipv4.map(IpAddr::V4)).collect();
    addresses.sort();
    let notify_from = notify_from(labels);
    Some(AppContainer { id: c.facts.id, name: c.name, addresses, notify_from })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::AttestError;

    #[test]
    fn only_app_containers_of_the_identity_are_targets() {
        use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};
        let summary = |id: &str, labels: &[(&str, &str)]| ContainerSummary {
            id: Some(id.into()),
            state: Some(ContainerSummaryStateEnum::RUNNING),
            names: Some(vec![format!("/{id}")]),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        };
        let who = Identity { project: Some("shop".into()), service: "app".into() };
        let app =
            summary("a", &[("com.docker.compose.project", "shop"), ("com.docker.compose.service", "app")]);
        let sidecar = summary(
            "s",
            &[
                ("com.docker.compose.project", "shop"),
                ("com.docker.compose.service", "app-secrets"),
                ("seg.for", "app"),
            ],
        );
        let other =
            summary("o", &[("com.docker.compose.project", "other"), ("com.docker.compose.service", "app")]);
        let target = |c: ContainerSummary| app_container(from_summary(c)?, &who);
        assert_eq!(target(app).map(|c| c.name), Some("a".into()));
        assert!(target(sidecar).is_none());
        assert!(target(other).is_none());
    }

    /// Answers every inspection with a running `seg.service=app` container.
    struct Running;

    impl ContainerLookup for Running {
        fn inspect<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<ContainerInfo, LookupError>> {
            let labels = std::collections::BTreeMap::from([("seg.service".to_owned(), "app".to_owned())]);
            let info = ContainerInfo {
                id: id.to_owned(),
                name: "app-1".into(),
                labels,
                pid: 77,
                running: true,
                binds: Vec::new(),
            };
            Box::pin(async move { Ok(info) })
        }
    }

    /// A fixture proc tree with process 77 in container `id`.
    fn proc_tree(id: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let pid_dir = dir.path().join("77");
        std::fs::create_dir_all(&pid_dir).unwrap();
        let stat = format!("77 (app) S {}\n", ["1"; 49].join(" "));
        std::fs::write(pid_dir.join("stat"), stat).unwrap();
        std::fs::write(pid_dir.join("cgroup"), format!("0::/system.slice/docker-{id}.scope\n")).unwrap();
        dir
    }

    #[tokio::test]
    async fn stale_container_events_and_gaps_drop_cached_identities() {
        use crate::docker::fake::{container, network};
        let id = "b".repeat(64);
        let proc = proc_tree(&id);
        let attestor = Arc::new(Attestor::new(Arc::new(Running), proc.path().into()));
        let told = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = told.clone();
        let gone: GoneListener =
            Arc::new(move |c: &str, a: &str| seen.lock().unwrap().push(format!("{a} {c}")));
        let link = DockerLink::new();
        let watcher = forget_on_events(link.subscribe(), attestor.clone(), gone);
        let peer = PinnedPeer::fixture_in(proc.path(), 77).unwrap();
        let attest = || async { attestor.attest(&peer).await.expect("attests") };
        let told_of = |what: String| {
            let told = told.clone();
            async move {
                for _ in 0..500 {
                    if told.lock().unwrap().contains(&what) {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                panic!("never told `{what}`: {:?}", told.lock().unwrap());
            }
        };

        attest().await;
        // A network's `destroy` and a container's `start` keep the cache;
        // the `rename` of another container only marks the point in time.
        link.announce(Notice::Event(network("destroy", &id, None)));
        link.announce(Notice::Event(container("start", &id)));
        link.announce(Notice::Event(container("rename", "other")));
        told_of("rename other".into()).await;
        assert!(attestor.is_cached(&id), "only stale container events drop the cache");

        link.announce(Notice::Event(container("die", &id)));
        told_of(format!("die {id}")).await;
        assert!(!attestor.is_cached(&id));
        assert_eq!(
            told.lock().unwrap().len(),
            2,
            "told of container events only: {:?}",
            told.lock().unwrap()
        );

        attest().await;
        link.announce(Notice::Gap);
        for _ in 0..500 {
            if !attestor.is_cached(&id) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        assert!(!attestor.is_cached(&id), "a gap drops every cached identity");
        watcher.abort();
    }

    /// A link whose first attempt failed (no dockerd at that socket).
    async fn unreachable_link() -> Arc<DockerLink> {
        let link = DockerLink::new();
        drop(link.spawn_connect("/nonexistent/docker.sock".into()));
        let _ = link.settled(std::time::Duration::from_secs(5)).await;
        link
    }

    #[tokio::test]
    async fn without_docker_host_processes_are_still_refused_as_such() {
        let link = DockerSide::new(unreachable_link().await, "/proc".into(), None);
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let me = PinnedPeer::pin(&a, std::path::Path::new("/proc")).unwrap();
        let err = link.identify(&me).await.unwrap_err();
        assert!(matches!(err, IdentifyError::Attest(AttestError::NotAContainer { .. })), "{err}");
        assert!(link.describe().await.starts_with("unreachable, retrying"));
    }

    #[tokio::test]
    async fn without_docker_containers_get_a_lookup_error() {
        let dir = proc_tree(&"a".repeat(64));
        let link = DockerSide::new(unreachable_link().await, dir.path().into(), None);
        let err = link.identify(&PinnedPeer::fixture_in(dir.path(), 77).unwrap()).await.unwrap_err();
        let failure = err.into_failure();
        assert_eq!(
            (failure.status.as_u16(), failure.code),
            (503, "docker_unavailable"),
            "{}",
            failure.message
        );
    }
}
