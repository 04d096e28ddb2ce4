//! Watch streams: every open `GET /v1/watch` is a [`WatchBody`] fed by a
//! bounded queue. The [`Hub`] knows them all, turns store changes into
//! per-stream events ([`plan`], pure) and delivers them ([`Hub::publish`]).
//!
//! A stream costs one queue of at most [`WatchLimits::queue`] events. When
//! a client stops reading, the kernel buffer fills, hyper stops pulling, and
//! the queue fills: the next event that does not fit cuts the stream off
//! (registry entry dropped, connection hung up), so a stuck client never
//! holds memory or delays anyone else. A stream that has events waiting and
//! pulled none for [`STALL`] is cut off at the next ping.

use super::hangup::Hangup;
use crate::attest::Attested;
use crate::store::SecretMeta;
use bytes::Bytes;
use hyper::body::{Body, Frame};
use seg_common::api::WatchEvent;
use seg_common::name::SecretName;
use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How often every stream gets a ping.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Events waiting this long without the client taking any: cut off.
pub const STALL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchLimits {
    /// Open streams per container.
    pub per_container: usize,
    /// Open streams in total.
    pub total: usize,
    /// Events queued per stream before it counts as stuck.
    pub queue: usize,
}

impl Default for WatchLimits {
    fn default() -> Self {
        WatchLimits { per_container: 4, total: 4096, queue: 64 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this container already has {0} watch streams open (the limit); close one first")]
    PerContainer(usize),
    #[error("the controller already serves {0} watch streams (the limit); retry later")]
    Total(usize),
}

/// What planning needs to know of one open stream.
#[derive(Debug, Clone)]
pub struct WatcherView {
    pub id: u64,
    pub who: Attested,
    /// `None`: every granted secret.
    pub wants: Option<BTreeSet<SecretName>>,
}

impl WatcherView {
    pub fn wants(&self, name: &SecretName) -> bool {
        self.wants.as_ref().is_none_or(|w| w.contains(name))
    }

    /// Whether this stream follows `meta` (wants it, and it is granted).
    pub fn follows(&self, meta: &SecretMeta) -> bool {
        self.wants(&meta.name) && meta.grants.iter().any(|g| g.matches(&self.who.identity))
    }
}

/// The events one change of a secret means for each stream: `before` and
/// `after` are its metadata around the change (`None`: absent).
pub fn plan(
    before: Option<&SecretMeta>,
    after: Option<&SecretMeta>,
    watchers: &[WatcherView],
) -> Vec<(u64, WatchEvent)> {
    let mut out = Vec::new();
    for w in watchers {
        let had = before.is_some_and(|m| w.follows(m));
        let has = after.is_some_and(|m| w.follows(m));
        let event = match (after, had, has) {
            (None, true, _) => before.map(|m| WatchEvent::Removed { name: m.name.clone() }),
            (Some(m), true, false) => Some(WatchEvent::Revoked { name: m.name.clone() }),
            (Some(m), _, true) if !had || before.is_none_or(|b| b.version != m.version) => {
                Some(WatchEvent::Version { name: m.name.clone(), version: m.version, ttl_ms: m.ttl_ms })
            }
            _ => None,
        };
        out.extend(event.map(|e| (w.id, e)));
    }
    out
}

struct Watcher {
    view: WatcherView,
    tx: mpsc::Sender<Bytes>,
    hangup: Hangup,
    /// Milliseconds since the hub's epoch when the client last took an event.
    last_pull: Arc<AtomicU64>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    watchers: HashMap<u64, Watcher>,
    per_container: HashMap<String, usize>,
}

pub struct Hub {
    limits: WatchLimits,
    epoch: Instant,
    state: Mutex<State>,
}

/// One line of the stream.
pub fn line(event: &WatchEvent) -> Bytes {
    let mut text = serde_json::to_vec(event).unwrap_or_default();
    text.push(b'\n');
    Bytes::from(text)
}

impl Hub {
    pub fn new(limits: WatchLimits) -> Arc<Hub> {
        Arc::new(Hub { limits, epoch: Instant::now(), state: Mutex::new(State::default()) })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change under the lock is a single map operation.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Registers a stream; its body ends (and it is unregistered) when the
    /// connection goes or it is cut off.
    pub fn open(
        self: &Arc<Self>,
        who: Attested,
        wants: Option<BTreeSet<SecretName>>,
        hangup: Hangup,
    ) -> Result<(u64, WatchBody), Refusal> {
        let mut state = self.lock();
        if state.watchers.len() >= self.limits.total {
            return Err(Refusal::Total(self.limits.total));
        }
        let mine = state.per_container.get(&who.container_id).copied().unwrap_or(0);
        if mine >= self.limits.per_container {
            return Err(Refusal::PerContainer(self.limits.per_container));
        }
        state.next_id += 1;
        let id = state.next_id;
        *state.per_container.entry(who.container_id.clone()).or_insert(0) += 1;
        let (tx, rx) = mpsc::channel(self.limits.queue.max(1));
        let last_pull = Arc::new(AtomicU64::new(self.now_ms()));
        let body = WatchBody {
            rx,
            last_pull: last_pull.clone(),
            epoch: self.epoch,
            _registration: Registration { hub: Arc::downgrade(self), id },
        };
        let view = WatcherView { id, who, wants };
        state.watchers.insert(id, Watcher { view, tx, hangup, last_pull });
        Ok((id, body))
    }

    /// Every open stream, for planning and status.
    pub fn views(&self) -> Vec<WatcherView> {
        self.lock().watchers.values().map(|w| w.view.clone()).collect()
    }

    pub fn count(&self) -> usize {
        self.lock().watchers.len()
    }

    /// Queues each event on its stream; a stream whose queue is full is cut
    /// off. Returns how many events were queued.
    pub fn publish(&self, deliveries: &[(u64, WatchEvent)]) -> usize {
        let mut queued = 0;
        let mut stuck = Vec::new();
        {
            let state = self.lock();
            for (id, event) in deliveries {
                let Some(w) = state.watchers.get(id) else { continue };
                match w.tx.try_send(line(event)) {
                    Ok(()) => queued += 1,
                    Err(mpsc::error::TrySendError::Full(_)) => stuck.push(*id),
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
        for id in stuck {
            self.cut_off(id, "its queue is full (the client does not read)");
        }
        queued
    }

    /// Sends a ping to every stream and cuts off the stalled ones.
    pub fn tick(&self) {
        self.tick_at(self.now_ms());
    }

    /// [`Hub::tick`] as if it were `now` (ms since the hub's epoch).
    fn tick_at(&self, now: u64) {
        let stall = STALL.as_millis() as u64;
        let views: Vec<(u64, bool)> = {
            let state = self.lock();
            state
                .watchers
                .iter()
                .map(|(id, w)| {
                    let waiting = w.tx.capacity() < w.tx.max_capacity();
                    let idle = now.saturating_sub(w.last_pull.load(Ordering::Relaxed));
                    (*id, waiting && idle > stall)
                })
                .collect()
        };
        let mut pings = Vec::new();
        for (id, stalled) in views {
            if stalled {
                self.cut_off(id, "it took no event for 30 s");
            } else {
                pings.push((id, WatchEvent::Ping));
            }
        }
        self.publish(&pings);
    }

    /// Pings every [`PING_INTERVAL`] for the controller's life.
    pub fn spawn_pinger(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let hub = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PING_INTERVAL);
            every.tick().await;
            loop {
                every.tick().await;
                match hub.upgrade() {
                    Some(hub) => hub.tick(),
                    None => return,
                }
            }
        })
    }

    /// Drops a stream and hangs up its connection.
    pub fn cut_off(&self, id: u64, why: &str) {
        if let Some(w) = self.remove(id) {
            tracing::warn!(
                "cut off the watch stream of container {} ({}): {why}",
                seg_common::api::short_id(&w.view.who.container_id),
                w.view.who.identity
            );
            w.hangup.hang_up();
        }
    }

    fn remove(&self, id: u64) -> Option<Watcher> {
        let mut state = self.lock();
        let w = state.watchers.remove(&id)?;
        let key = &w.view.who.container_id;
        if let Some(n) = state.per_container.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                state.per_container.remove(key);
            }
        }
        Some(w)
    }
}

/// Unregisters its stream when the body is dropped (connection gone).
struct Registration {
    hub: Weak<Hub>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.remove(self.id);
        }
    }
}

/// The body of a watch response: events as they are queued, forever.
pub struct WatchBody {
    rx: mpsc::Receiver<Bytes>,
    last_pull: Arc<AtomicU64>,
    epoch: Instant,
    _registration: Registration,
}

impl Body for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(bytes)) => {
                self.last_pull.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
