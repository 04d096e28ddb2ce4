//! The controller's one Docker layer: one connection per process, one event
//! subscription fanned out to whoever follows Docker, one mapping from
//! Docker's shapes into seg's.
//!
//! - [`DockerLink`] (`link.rs`): the connection, made in the background with
//!   backoff (the admin API works while Docker is down), shared by
//!   attestation, post-rotate signals, segregation and status; and the
//!   event pump, which broadcasts [`Notice`]s to every [`Subscription`].
//! - [`EventSource`]: the seam the pump reads events through; the bollard
//!   backend (`bollard_backend.rs`) is the only implementation shipped, a
//!   scripted fake (`fake.rs`) exists in test builds only.
//! - `exec.rs`: a command run inside a container with bytes on its stdin
//!   (exec hooks).
//! - `map.rs`: inspect/list responses → seg's structs, in one place.
//! - [`DockerNetworks`] (`networks.rs`): the network module's [`crate::network::NetworkApi`]
//!   on the engine.
//!
//! Only the real daemon socket may be trusted: whoever answers on it decides
//! every container's labels, hence its identity.

mod bollard_backend;
mod exec;
#[cfg(test)]
pub(crate) mod fake;
mod link;
pub mod map;
mod networks;
#[cfg(test)]
mod tests;

pub use bollard_backend::{connect, describe, DockerLookup};
pub use exec::{exec, ExecError, ExecOutput, ExecRun};
pub use link::{Backoff, DockerLink, NotConnected, Subscription, FIRST_ATTEMPT_WAIT};
pub use map::container_info;
pub use networks::DockerNetworks;

use futures_util::stream::BoxStream;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "cannot reach the Docker daemon at {socket}: {reason}. Is dockerd running? \
         (check `docker info`, or pass the right socket path)"
    )]
    Unreachable { socket: String, reason: String },
    #[error("Docker's event stream broke: {0}")]
    Events(String),
}

/// What an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Container,
    Network,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Container => "container",
            Kind::Network => "network",
        }
    }
}

/// One Docker event, in seg's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: Kind,
    /// Docker's action: `start`, `die`, `destroy`, `connect`, …
    pub action: String,
    /// The id of the container or network the event is about.
    pub actor: String,
    /// For network `connect`/`disconnect`: the container moved.
    pub container: Option<String>,
    /// Docker's own timestamp (since the Unix epoch).
    pub at: Option<Duration>,
}

/// What a subscriber receives, in the order the pump saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    Event(Event),
    /// Events may have been missed — the stream was (re)opened, or this
    /// subscriber fell behind — so whatever was derived from them must be
    /// re-read. Always the first notice of a subscription.
    Gap,
}

/// The actions any subscriber needs, whichever kind (Docker's `event`
/// filter is one list for all types): attestation drops cached
/// inspections on container `die`/`stop`/`destroy`/`rename`; segregation
/// follows container `start`/`die`/`destroy` and network
/// `connect`/`disconnect`/`create`/`destroy`.
pub const FOLLOWED_ACTIONS: [&str; 8] =
    ["start", "die", "stop", "destroy", "rename", "connect", "disconnect", "create"];

/// The seam the event pump reads through.
pub trait EventSource: Send + Sync {
    /// Container and network events with a [`FOLLOWED_ACTIONS`] action,
    /// replayed from `since` (unix seconds), until the stream ends or fails.
    fn events(&self, since: u64) -> BoxStream<'static, Result<Event, DockerError>>;
}
