//! The bollard backend: the engine over its local unix socket, API version
//! negotiated (the engine here is 20.10 / API 1.41).

use super::map::{container_info, event_from};
use super::{DockerError, Event, EventSource, FOLLOWED_ACTIONS};
use crate::attest::{ContainerInfo, ContainerLookup, LookupError};
use bollard::errors::Error as BollardError;
use bollard::query_parameters::EventsOptions;
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::path::Path;

/// Seconds bollard waits for a response head (not for a whole event stream).
const REQUEST_TIMEOUT_SECS: u64 = 10;

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

/// The `/events` query: the union of what the subscribers follow, replayed
/// from `since` (unix seconds) so nothing falls between streams.
pub(super) fn events_options(since: u64) -> EventsOptions {
    let filters = HashMap::from([
        ("type".to_owned(), vec!["container".to_owned(), "network".to_owned()]),
        ("event".to_owned(), FOLLOWED_ACTIONS.map(str::to_owned).to_vec()),
    ]);
    EventsOptions { since: Some(since.to_string()), until: None, filters: Some(filters) }
}

impl EventSource for Docker {
    fn events(&self, since: u64) -> BoxStream<'static, Result<Event, DockerError>> {
        self.events(Some(events_options(since)))
            .filter_map(|next| {
                std::future::ready(match next {
                    Ok(message) => event_from(message).map(Ok),
                    Err(e) => Some(Err(DockerError::Events(e.to_string()))),
                })
            })
            .boxed()
    }
}
