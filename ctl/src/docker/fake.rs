//! A scripted [`EventSource`] for unit tests: each subscription plays the
//! next script, then ends (or fails); once the scripts run out a
//! subscription stays open and silent.

use super::{DockerError, Event, EventSource, Kind};
use futures_util::stream::{self, BoxStream, StreamExt};
use std::collections::VecDeque;
use std::sync::Mutex;

/// How one scripted subscription finishes.
pub enum End {
    Ends,
    Fails,
}

#[derive(Default)]
pub struct FakeEvents {
    scripts: Mutex<VecDeque<(Vec<Event>, End)>>,
    /// How many subscriptions were opened.
    pub opened: Mutex<usize>,
}

impl FakeEvents {
    pub fn new(scripts: Vec<(Vec<Event>, End)>) -> FakeEvents {
        FakeEvents { scripts: Mutex::new(scripts.into()), opened: Mutex::new(0) }
    }
}

impl EventSource for FakeEvents {
    fn events(&self, _since: u64) -> BoxStream<'static, Result<Event, DockerError>> {
        *self.opened.lock().unwrap() += 1;
        let Some((events, end)) = self.scripts.lock().unwrap().pop_front() else {
            return stream::pending().boxed();
        };
        let tail = match end {
            End::Ends => None,
            End::Fails => Some(Err(DockerError::Events("connection reset".into()))),
        };
        // Yields between events, as a real stream would wait for the next:
        // readers keep up unless they do not read.
        stream::iter(events.into_iter().map(Ok).chain(tail))
            .then(|item| async move {
                tokio::task::yield_now().await;
                item
            })
            .boxed()
    }
}

/// A container event.
pub fn container(action: &str, id: &str) -> Event {
    Event { kind: Kind::Container, action: action.into(), actor: id.into(), container: None, at: None }
}

/// A network event (`container` for connect/disconnect).
pub fn network(action: &str, id: &str, container: Option<&str>) -> Event {
    Event {
        kind: Kind::Network,
        action: action.into(),
        actor: id.into(),
        container: container.map(str::to_owned),
        at: None,
    }
}
