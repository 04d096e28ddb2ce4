//! Who consumes which secret, and which version each one has on disk
//! (acknowledged by its sidecar), plus the grace period of the previous
//! version after a rotation. All in memory: a controller restart starts
//! with no acknowledgements (sidecars send them again when their stream
//! reconnects) and ends every grace period.
//!
//! [`status`] is the pure part: from the open streams, the acknowledgements
//! and the grace window to one [`SecretStatus`].

use super::watch::WatcherView;
use crate::attest::Attested;
use crate::store::SecretMeta;
use seg_common::api::{Consumer, PreviousVersion, SecretStatus};
use seg_common::name::SecretName;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Acknowledgements of containers without a stream are forgotten after this.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Above this many acknowledgement records, old ones are pruned.
const PRUNE_ABOVE: usize = 10_000;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, Clone)]
pub struct Ack {
    pub who: Attested,
    pub version: u64,
    pub at_ms: u64,
    seen: Instant,
}

#[derive(Debug, Clone)]
pub struct GraceWindow {
    pub previous: u64,
    pub current: u64,
    deadline: Instant,
    deadline_ms: u64,
    /// Containers consuming the secret when it was rotated.
    expected: BTreeSet<String>,
}

#[derive(Default)]
struct State {
    acks: HashMap<SecretName, HashMap<String, Ack>>,
    grace: HashMap<SecretName, GraceWindow>,
    rotated_at: HashMap<SecretName, (u64, u64)>,
    last_hook: HashMap<String, String>,
}

pub struct Consumers {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    /// Rotation → acknowledged, seconds, per consumer (`--metrics-addr`).
    pub ack_seconds: prometheus_client::metrics::histogram::Histogram,
}

/// From 1 ms to ~16 s: a push is acknowledged in milliseconds, a renewal
/// that brings the version in the next lease tick in seconds.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15)
}

impl Default for Consumers {
    fn default() -> Self {
        Consumers {
            state: Mutex::new(State::default()),
            changed: watch::Sender::new(0),
            ack_seconds: prometheus_client::metrics::histogram::Histogram::new(latency_buckets()),
        }
    }
}

impl Consumers {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change under the lock is a single map operation.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes everyone waiting in [`Consumers::subscribe`].
    pub fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Changes (acknowledgements, rotations) as they happen.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn ack(&self, who: &Attested, name: &SecretName, version: u64) {
        let mut state = self.lock();
        if state.acks.values().map(HashMap::len).sum::<usize>() > PRUNE_ABOVE {
            for acks in state.acks.values_mut() {
                acks.retain(|_, a| a.seen.elapsed() < FORGET_AFTER);
            }
        }
        let ack = Ack { who: who.clone(), version, at_ms: now_ms(), seen: Instant::now() };
        // Rotation → ack only for a consumer that had the version before
        // (one that starts later fetches the new version; no rotation wait).
        let had_older =
            state.acks.get(name).and_then(|a| a.get(&who.container_id)).is_some_and(|a| a.version < version);
        if let Some((_, rotated_ms)) = state.rotated_at.get(name).filter(|(v, _)| *v == version && had_older)
        {
            self.ack_seconds.observe(ack.at_ms.saturating_sub(*rotated_ms) as f64 / 1000.0);
        }
        state.acks.entry(name.clone()).or_default().insert(who.container_id.clone(), ack);
        drop(state);
        self.bump();
    }

    /// The secret is gone: forget everything about it.
    pub fn forget_secret(&self, name: &SecretName) {
        let mut state = self.lock();
        state.acks.remove(name);
        state.grace.remove(name);
        state.rotated_at.remove(name);
        drop(state);
        self.bump();
    }

    /// The container was removed: it consumes nothing any more.
    pub fn forget_container(&self, container_id: &str) {
        let mut state = self.lock();
        for acks in state.acks.values_mut() {
            acks.remove(container_id);
        }
        state.last_hook.remove(container_id);
        drop(state);
        self.bump();
    }

    /// Grants changed: forget consumers that may no longer read it.
    pub fn keep_granted(&self, meta: &SecretMeta) {
        if let Some(acks) = self.lock().acks.get_mut(&meta.name) {
            acks.retain(|_, a| meta.grants.iter().any(|g| g.matches(&a.who.identity)));
        }
        self.bump();
    }

    pub fn note_hook(&self, container_id: &str, what: String) {
        self.lock().last_hook.insert(container_id.to_owned(), what);
    }

    /// Records a rotation from `previous` to `current` and opens the grace
    /// period of `previous`: until every container in `expected` (those
    /// consuming it at the rotation) acknowledged `current`, at most `grace`.
    pub fn rotated(
        &self,
        name: &SecretName,
        previous: Option<u64>,
        current: u64,
        grace: Duration,
        expected: BTreeSet<String>,
        at_ms: u64,
    ) {
        let mut state = self.lock();
        state.rotated_at.insert(name.clone(), (current, at_ms));
        match previous {
            Some(previous) => {
                let window = GraceWindow {
                    previous,
                    current,
                    deadline: Instant::now() + grace,
                    deadline_ms: at_ms + grace.as_millis() as u64,
                    expected,
                };
                state.grace.insert(name.clone(), window);
            }
            None => {
                state.grace.remove(name);
            }
        }
        drop(state);
        self.bump();
    }

    /// May `version` of `name` still be read, as the previous version?
    pub fn previous_readable(&self, name: &SecretName, version: u64) -> bool {
        let state = self.lock();
        let Some(window) = state.grace.get(name) else { return false };
        window.previous == version && window_open(window, state.acks.get(name), Instant::now())
    }

    /// The status of `meta`'s consumers; `wanted` defaults to its version.
    pub fn status(&self, meta: &SecretMeta, watchers: &[WatcherView], wanted: Option<u64>) -> SecretStatus {
        let state = self.lock();
        let none = HashMap::new();
        let acks = state.acks.get(&meta.name).unwrap_or(&none);
        let grace = state.grace.get(&meta.name).filter(|g| g.current == meta.version);
        let rotated = state.rotated_at.get(&meta.name).filter(|(v, _)| *v == meta.version).map(|(_, at)| *at);
        let mut st = status(meta, watchers, acks, grace, wanted.unwrap_or(meta.version), Instant::now());
        st.rotated_at_ms = rotated;
        for c in &mut st.consumers {
            c.last_hook = state.last_hook.get(&c.container_id).cloned();
        }
        st
    }
}

fn window_open(window: &GraceWindow, acks: Option<&HashMap<String, Ack>>, now: Instant) -> bool {
    if now >= window.deadline {
        return false;
    }
    let has = |c: &String| acks.and_then(|a| a.get(c)).is_some_and(|a| a.version >= window.current);
    !window.expected.iter().all(has)
}

/// One secret's consumers: every container with a stream that follows it,
/// and every container that acknowledged a version of it.
pub fn status(
    meta: &SecretMeta,
    watchers: &[WatcherView],
    acks: &HashMap<String, Ack>,
    grace: Option<&GraceWindow>,
    wanted: u64,
    now: Instant,
) -> SecretStatus {
    let mut rows: HashMap<&str, Consumer> = HashMap::new();
    for w in watchers.iter().filter(|w| w.follows(meta)) {
        rows.entry(&w.who.container_id).or_insert_with(|| row(&w.who, None)).watching = true;
    }
    for (id, ack) in acks {
        let r = rows.entry(id).or_insert_with(|| row(&ack.who, None));
        r.version = Some(ack.version);
        r.acked_at_ms = Some(ack.at_ms);
    }
    let mut consumers: Vec<Consumer> = rows.into_values().collect();
    consumers.sort_by(|a, b| (&a.identity, &a.container_name).cmp(&(&b.identity, &b.container_name)));
    let complete = consumers.iter().filter(|c| c.watching).all(|c| c.version.is_some_and(|v| v >= wanted));
    let previous = grace.map(|g| PreviousVersion {
        version: g.previous,
        readable: window_open(g, Some(acks), now),
        until_ms: Some(g.deadline_ms),
    });
    SecretStatus {
        name: meta.name.clone(),
        version: meta.version,
        previous,
        consumers,
        wanted,
        complete,
        rotated_at_ms: None,
    }
}

fn row(who: &Attested, version: Option<u64>) -> Consumer {
    Consumer {
        container_id: who.container_id.clone(),
        container_name: who.container_name.clone(),
        identity: who.identity.clone(),
        version,
        acked_at_ms: None,
        watching: false,
        last_hook: None,
        node: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seg_common::api::Identity;

    fn who(service: &str, id: &str) -> Attested {
        Attested {
            identity: Identity { project: Some("shop".into()), service: service.into() },
            container_id: id.into(),
            container_name: format!("shop-{service}-{id}"),
        }
    }

    fn meta(version: u64) -> SecretMeta {
        crate::node::fakes::secret_meta("db", version, &["shop/app"])
    }

    fn watcher(id: u64, w: Attested) -> WatcherView {
        WatcherView { id, who: w, wants: None }
    }

    #[test]
    fn status_lists_watchers_and_acks_and_is_complete_when_all_have_it() {
        let c = Consumers::default();
        let m = meta(2);
        let ws = [watcher(1, who("app", "a1")), watcher(2, who("app", "a2")), watcher(3, who("web", "w1"))];
        c.ack(&who("app", "a1"), &m.name, 2);
        let st = c.status(&m, &ws, None);
        assert_eq!(st.consumers.len(), 2, "web is not granted: {st:?}");
        assert!(!st.complete);
        assert_eq!(st.consumers[0].version, Some(2));
        assert_eq!(st.consumers[1].version, None);
        c.ack(&who("app", "a2"), &m.name, 2);
        assert!(c.status(&m, &ws, None).complete);
        assert!(!c.status(&m, &ws, Some(3)).complete);
        // A consumer whose stream closed still shows, and no longer blocks.
        c.ack(&who("app", "gone"), &m.name, 1);
        let st = c.status(&m, &ws, None);
        assert_eq!(st.consumers.len(), 3);
        assert!(st.complete && st.consumers.iter().any(|r| !r.watching && r.version == Some(1)));
    }

    #[test]
    fn grace_ends_when_every_consumer_acknowledged_or_at_the_deadline() {
        let c = Consumers::default();
        let name = meta(2).name;
        let expected: BTreeSet<String> = ["a1".to_owned(), "a2".to_owned()].into();
        c.rotated(&name, Some(1), 2, Duration::from_secs(60), expected.clone(), now_ms());
        assert!(c.previous_readable(&name, 1));
        assert!(!c.previous_readable(&name, 0));
        c.ack(&who("app", "a1"), &name, 2);
        assert!(c.previous_readable(&name, 1), "a2 has not acknowledged yet");
        c.ack(&who("app", "a2"), &name, 2);
        assert!(!c.previous_readable(&name, 1));

        c.rotated(&name, Some(2), 3, Duration::ZERO, expected.clone(), now_ms());
        assert!(!c.previous_readable(&name, 2), "a zero grace closes at once");
        c.rotated(&name, Some(3), 4, Duration::from_secs(60), BTreeSet::new(), now_ms());
        assert!(!c.previous_readable(&name, 3), "no consumers: nobody to wait for");
        c.rotated(&name, Some(4), 5, Duration::from_secs(60), expected, now_ms());
        c.forget_secret(&name);
        assert!(!c.previous_readable(&name, 4));
    }

    #[test]
    fn removed_containers_leave_the_consumer_list() {
        let c = Consumers::default();
        let m = meta(2);
        c.ack(&who("app", "a1"), &m.name, 2);
        c.ack(&who("app", "a2"), &m.name, 1);
        c.forget_container("a2");
        let st = c.status(&m, &[], None);
        assert_eq!(st.consumers.len(), 1, "{st:?}");
        assert_eq!(st.consumers[0].container_id, "a1");
    }

    #[test]
    fn revoked_consumers_are_forgotten() {
        let c = Consumers::default();
        let mut m = meta(1);
        c.ack(&who("app", "a1"), &m.name, 1);
        m.grants.clear();
        c.keep_granted(&m);
        assert!(c.status(&m, &[], None).consumers.is_empty());
    }
}
