//! The Docker Engine connection: bollard over the local unix socket, API
//! version negotiated (the engine here is 20.10 / API 1.41).
//!
//! Only the real daemon socket may be trusted: whoever answers on it decides
//! every container's labels, hence its identity.

use crate::attest::{Attestor, BindMount, ContainerInfo, ContainerLookup, LookupError};
use bollard::errors::Error as BollardError;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::EventsOptions;
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds bollard waits for a response head (not for a whole event stream).
const REQUEST_TIMEOUT_SECS: u64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "cannot reach the Docker daemon at {socket}: {reason}. Is dockerd running? \
         (check `docker info`, or pass the right socket path)"
    )]
    Unreachable { socket: String, reason: String },
}

/// Connects, negotiates the API version down to the engine's, and pings.
pub async fn connect(socket: &Path) -> Result<Docker, DockerError> {
    let unreachable =
        |reason: String| DockerError::Unreachable { socket: socket.display().to_string(), reason };
    let path = socket.to_str().ok_or_else(|| unreachable("the socket path is not UTF-8".into()))?;
    let docker = Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
        .map_err(|e| unreachable(e.to_string()))?;
    let docker =
        docker.negotiate_version().await.map_err(|e| unreachable(format!("version negotiation: {e}")))?;
    docker.ping().await.map_err(|e| unreachable(format!("ping: {e}")))?;
    Ok(docker)
}

/// "ok (API 1.41, engine 20.10.24)" or what went wrong, for `segctl status`.
pub async fn describe(docker: &Docker) -> String {
    match docker.version().await {
        Ok(v) => format!(
            "ok (API {}, engine {})",
            docker.client_version(),
            v.version.as_deref().unwrap_or("unknown")
        ),
        Err(e) => format!("unreachable: {e}"),
    }
}

/// [`crate::attest::ContainerLookup`] backed by the real engine.
pub struct DockerLookup {
    pub docker: Docker,
}

impl ContainerLookup for DockerLookup {
    fn inspect<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<ContainerInfo, LookupError>> {
        Box::pin(async move {
            match self.docker.inspect_container(id, None).await {
                Ok(response) => Ok(container_info(id, response)),
                Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => {
                    Err(LookupError::NoSuchContainer(id.to_owned()))
                }
                Err(e) => Err(LookupError::Docker(format!("inspecting container {id}: {e}"))),
            }
        })
    }
}

/// Maps an inspect response; missing fields read as "not running, no labels".
pub fn container_info(asked: &str, r: ContainerInspectResponse) -> ContainerInfo {
    let state = r.state.unwrap_or_default();
    let binds = r
        .mounts
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.typ.as_deref() == Some("bind"))
        .filter_map(|m| {
            Some(BindMount {
                source: m.source?.into(),
                destination: m.destination.unwrap_or_default(),
                // Docker omits RW only on very old engines; assume the worst.
                writable: m.rw.unwrap_or(true),
            })
        })
        .collect();
    ContainerInfo {
        id: r.id.unwrap_or_else(|| asked.to_owned()),
        name: r.name.unwrap_or_default().trim_start_matches('/').to_owned(),
        labels: r.config.and_then(|c| c.labels).unwrap_or_default().into_iter().collect(),
        pid: state.pid.unwrap_or(0),
        running: state.running.unwrap_or(false),
        binds,
    }
}

/// Events that make a cached inspection stale (`rename`: the name we log).
const STALE_EVENTS: [&str; 4] = ["die", "stop", "destroy", "rename"];

/// The `/events` query: container events that make a cache entry stale,
/// replayed from `since` (unix seconds) so nothing falls between streams.
fn events_options(since: u64) -> EventsOptions {
    let filters = HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        ("event".to_owned(), STALE_EVENTS.iter().map(|e| e.to_string()).collect()),
    ]);
    EventsOptions { since: Some(since.to_string()), until: None, filters: Some(filters) }
}

/// Reconnection delays: 1 s doubling to 30 s, back to 1 s once healthy.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_secs(1);
    pub const MAX: Duration = Duration::from_secs(30);

    pub fn new() -> Backoff {
        Backoff { next: Backoff::FIRST }
    }

    /// The delay before the next attempt; doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(Backoff::MAX);
        delay
    }

    pub fn reset(&mut self) {
        self.next = Backoff::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// Told when a container stops or is removed (`action` is Docker's:
/// `die`, `stop`, `destroy`, `rename`), after its cached identity is dropped.
pub type GoneListener = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Follows the engine's container events and drops cached identities of
/// containers that die or are destroyed, telling `gone` each time;
/// reconnects with backoff.
pub fn watch_container_events(
    docker: Docker,
    attestor: Arc<Attestor>,
    gone: GoneListener,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Backoff::new();
        loop {
            let began = Instant::now();
            let outcome = follow_events(&docker, &attestor, &gone, &mut backoff).await;
            // A stream that stayed up a while was healthy: start over at 1 s.
            if began.elapsed() >= Backoff::MAX {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            match outcome {
                Err(e) => tracing::warn!(error = %e, retry_in = ?delay,
                    "Docker event stream failed; cached container identities dropped, reconnecting"),
                Ok(()) => tracing::warn!(retry_in = ?delay,
                    "Docker event stream ended (daemon restarted?); reconnecting"),
            }
            tokio::time::sleep(delay).await;
        }
    })
}

/// One event subscription, until it ends or fails.
async fn follow_events(
    docker: &Docker,
    attestor: &Attestor,
    gone: &GoneListener,
    backoff: &mut Backoff,
) -> Result<(), BollardError> {
    // Events may have been missed while not subscribed: forget everything,
    // and replay from a second before, so a container dying between this
    // point and the subscription being live is still seen.
    let since = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs().saturating_sub(1));
    attestor.forget_all();
    let mut events = docker.events(Some(events_options(since)));
    while let Some(event) = events.next().await {
        let event = event?;
        backoff.reset();
        let Some(id) = event.actor.and_then(|a| a.id) else { continue };
        let action = event.action.as_deref().unwrap_or("?");
        tracing::debug!(container = %id, action, "container event: cached identity dropped");
        attestor.forget(&id);
        gone(&id, action);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerConfig, ContainerState};

    #[test]
    fn backoff_doubles_to_thirty_seconds_and_resets() {
        let mut b = Backoff::new();
        let secs: Vec<u64> = (0..8).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn inspect_response_maps_to_container_info() {
        let r = ContainerInspectResponse {
            id: Some("abc".into()),
            name: Some("/web-1".into()),
            config: Some(ContainerConfig {
                labels: Some(HashMap::from([("seg.service".to_owned(), "web".to_owned())])),
                ..Default::default()
            }),
            state: Some(ContainerState { pid: Some(4242), running: Some(true), ..Default::default() }),
            ..Default::default()
        };
        let info = container_info("abc", r);
        assert_eq!(info.name, "web-1");
        assert_eq!(info.labels.get("seg.service").map(String::as_str), Some("web"));
        assert_eq!((info.pid, info.running, info.id.as_str()), (4242, true, "abc"));
        let empty = container_info("xyz", ContainerInspectResponse::default());
        assert_eq!((empty.id.as_str(), empty.running, empty.pid), ("xyz", false, 0));
        assert!(empty.labels.is_empty());
    }

    #[test]
    fn events_query_filters_container_deaths() {
        let o = events_options(1700000000);
        assert_eq!(o.since.as_deref(), Some("1700000000"));
        let f = o.filters.unwrap();
        assert_eq!(f["type"], ["container"]);
        for e in ["die", "destroy", "stop"] {
            assert!(f["event"].iter().any(|x| x == e), "{e}");
        }
    }

    #[tokio::test]
    async fn missing_socket_is_a_clear_error() {
        let err = connect(Path::new("/nonexistent/docker.sock")).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/docker.sock") && msg.contains("dockerd"), "{msg}");
    }
}
