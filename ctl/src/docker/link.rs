//! The one connection and the one event subscription, fanned out.
//!
//! The pump broadcasts on a bounded channel: a slow subscriber never stalls
//! the pump or the others; when it falls more than [`CAPACITY`] notices
//! behind it loses the oldest and is told [`Notice::Gap`] instead, and does
//! what it does after a reconnect.

use super::{connect, DockerError, EventSource, Notice};
use bollard::Docker;
use futures_util::StreamExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::sync::watch;

/// Notices a subscriber may fall behind before it is told of a gap (a
/// compose `up` of a hundred services is a few hundred events).
pub const CAPACITY: usize = 1024;

/// Reconnection delays: 1 s doubling to 30 s, back to 1 s once healthy.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    first: Duration,
    max: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_secs(1);
    pub const MAX: Duration = Duration::from_secs(30);

    pub fn new() -> Backoff {
        Backoff::between(Backoff::FIRST, Backoff::MAX)
    }

    /// Other bounds (unit tests, which cannot wait seconds).
    pub fn between(first: Duration, max: Duration) -> Backoff {
        Backoff { next: first, first, max }
    }

    /// The delay before the next attempt; doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// Why [`DockerLink::current`] has no client: no attempt has finished yet,
/// or the last one failed (shared: every caller may quote it).
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotConnected {
    #[error("not connected yet")]
    Yet,
    #[error("{0}")]
    Failed(Arc<DockerError>),
}

/// How long a caller waits for the first connection attempt of a
/// controller that has just started. Its sockets are served before dockerd
/// has answered (tens of milliseconds); a sidecar reconnecting in that
/// window should be identified, not told 503 and sent into backoff.
pub const FIRST_ATTEMPT_WAIT: Duration = Duration::from_secs(2);

/// The process's Docker connection (or why there is none yet) and its
/// event fan-out.
pub struct DockerLink {
    /// A watch rather than a lock: callers can wait for the first attempt.
    slot: watch::Sender<Result<Docker, NotConnected>>,
    /// A connection attempt is under way or was made (else nobody will
    /// ever connect this link, and waiting for one is pointless).
    connecting: AtomicBool,
    notices: broadcast::Sender<Notice>,
}

impl DockerLink {
    /// Not connected; see [`DockerLink::spawn_connect`].
    pub fn new() -> Arc<DockerLink> {
        let (notices, _) = broadcast::channel(CAPACITY);
        let (slot, _) = watch::channel(Err(NotConnected::Yet));
        Arc::new(DockerLink { slot, connecting: AtomicBool::new(false), notices })
    }

    /// The client, or why there is none (for the caller's message).
    pub fn current(&self) -> Result<Docker, NotConnected> {
        self.slot.borrow().clone()
    }

    /// [`DockerLink::current`], but while no attempt has finished yet
    /// (the controller has just started) waits up to `wait` for one.
    pub async fn settled(&self, wait: Duration) -> Result<Docker, NotConnected> {
        if !self.connecting.load(Ordering::Acquire) {
            return self.current();
        }
        let mut rx = self.slot.subscribe();
        let attempted =
            async { rx.wait_for(|slot| !matches!(slot, Err(NotConnected::Yet))).await.map(|s| s.clone()) };
        match tokio::time::timeout(wait, attempted).await {
            Ok(Ok(slot)) => slot,
            // Timed out (or the link is gone): say why there is no client.
            _ => self.current(),
        }
    }

    /// Notices from now on. Subscribe before the link connects to see the
    /// first [`Notice::Gap`].
    pub fn subscribe(&self) -> Subscription {
        Subscription { rx: self.notices.subscribe() }
    }

    /// Uses an already connected client, without following its events.
    pub fn set(&self, docker: Docker) {
        self.set_slot(Ok(docker));
    }

    fn set_slot(&self, value: Result<Docker, NotConnected>) {
        // `send_replace`, not `send`: it stores the value even with no receiver.
        drop(self.slot.send_replace(value));
    }

    /// Connects in the background, retrying with backoff until dockerd
    /// answers; then follows its events for the life of the process.
    pub fn spawn_connect(self: &Arc<Self>, socket: PathBuf) -> tokio::task::JoinHandle<()> {
        self.connecting.store(true, Ordering::Release);
        let link = self.clone();
        tokio::spawn(async move {
            let docker = link.connect_retrying(&socket).await;
            link.follow(docker).await;
        })
    }

    /// Uses an already connected client and follows its events.
    pub fn spawn_with(self: &Arc<Self>, docker: Docker) -> tokio::task::JoinHandle<()> {
        let link = self.clone();
        tokio::spawn(async move { link.follow(docker).await })
    }

    /// Sends one notice to every subscriber, as the pump would.
    #[cfg(test)]
    pub(crate) fn announce(&self, notice: Notice) {
        let _ = self.notices.send(notice);
    }

    /// Follows any event source (the scripted fake).
    #[cfg(test)]
    pub(crate) fn spawn_pump(
        self: &Arc<Self>,
        source: Arc<dyn EventSource>,
        backoff: Backoff,
    ) -> tokio::task::JoinHandle<()> {
        let notices = self.notices.clone();
        tokio::spawn(async move { pump(source.as_ref(), &notices, backoff).await })
    }

    async fn connect_retrying(&self, socket: &std::path::Path) -> Docker {
        let mut backoff = Backoff::new();
        let mut attempts = 0u32;
        loop {
            match connect(socket).await {
                Ok(docker) => return docker,
                Err(err) => {
                    attempts += 1;
                    if attempts == 1 {
                        tracing::error!(
                            "{err} Until it answers, containers get 503 docker_unavailable and network \
                             policies stay as the kernel has them; retrying."
                        );
                    } else {
                        tracing::debug!("Docker still unreachable (attempt {attempts}): {err}");
                    }
                    self.set_slot(Err(NotConnected::Failed(Arc::new(err))));
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    async fn follow(&self, docker: Docker) {
        self.set(docker.clone());
        tracing::info!("connected to Docker; containers can be identified");
        pump(&docker, &self.notices, Backoff::new()).await
    }
}

/// Follows `source` for ever: a [`Notice::Gap`] at each (re)subscription,
/// then every event in order; re-subscribes with `backoff` when the stream
/// ends or fails.
async fn pump(source: &dyn EventSource, notices: &broadcast::Sender<Notice>, mut backoff: Backoff) {
    loop {
        let began = Instant::now();
        let outcome = subscribe_once(source, notices, &mut backoff).await;
        // A stream that stayed up a while was healthy: start over.
        if began.elapsed() >= Backoff::MAX {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        match outcome {
            Err(e) => tracing::warn!(retry_in = ?delay,
                "{e}; cached container identities dropped, rules stay, reconnecting"),
            Ok(()) => tracing::warn!(retry_in = ?delay,
                "Docker event stream ended (dockerd restarting?); rules stay, reconnecting"),
        }
        tokio::time::sleep(delay).await;
    }
}

/// One subscription, until it ends or fails.
async fn subscribe_once(
    source: &dyn EventSource,
    notices: &broadcast::Sender<Notice>,
    backoff: &mut Backoff,
) -> Result<(), DockerError> {
    // Events may have been missed while not subscribed; replay from a
    // second before, so one between the gap and the stream being live is
    // still seen (subscribers take a replayed event twice without harm).
    let since = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs().saturating_sub(1));
    // No subscriber yet is not an error: the pump runs regardless.
    let _ = notices.send(Notice::Gap);
    let mut events = source.events(since);
    while let Some(event) = events.next().await {
        let event = event?;
        backoff.reset();
        let _ = notices.send(Notice::Event(event));
    }
    Ok(())
}

/// One subscriber's end of the fan-out.
pub struct Subscription {
    rx: broadcast::Receiver<Notice>,
}

impl Subscription {
    /// The next notice; `None` once the link is gone. Having fallen behind
    /// reads as a [`Notice::Gap`] (the missed notices are lost).
    pub async fn next(&mut self) -> Option<Notice> {
        match self.rx.recv().await {
            Ok(notice) => Some(notice),
            Err(RecvError::Lagged(missed)) => Some(lagged(missed)),
            Err(RecvError::Closed) => None,
        }
    }

    /// The next notice if one is waiting (to take a burst as one batch).
    pub fn try_next(&mut self) -> Option<Notice> {
        match self.rx.try_recv() {
            Ok(notice) => Some(notice),
            Err(TryRecvError::Lagged(missed)) => Some(lagged(missed)),
            Err(TryRecvError::Empty | TryRecvError::Closed) => None,
        }
    }
}

fn lagged(missed: u64) -> Notice {
    tracing::warn!(missed, "a Docker event subscriber fell behind; it re-reads what it derives from events");
    Notice::Gap
}
