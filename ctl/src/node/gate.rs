//! Who gets a connection on the agent socket, and for how long.
//!
//! The agent socket is 0666: anything on the host can connect, so nothing
//! unidentified may hold what legitimate sidecars need. A connection goes
//! through three budgets, each keyed by the caller's container (its cgroup,
//! read when the connection is accepted; `host:<uid>` for host processes):
//!
//! 1. **Identifying** — a small pool (and a few per key) for connections
//!    whose identity is being decided: a burst waits its turn (each key in
//!    its own queue, so one key's burst never holds more than its few
//!    turns), and a connection that waits longer than the deadline is told
//!    to retry.
//! 2. **Refused** — a caller that cannot be identified gets one answer
//!    (within [`GateLimits::refused_deadline`]) and is hung up on; a key
//!    refused over and over is closed without an answer until it calms down,
//!    so a connection storm costs the controller next to nothing.
//! 3. **Identified** — per container at most [`GateLimits::per_container`],
//!    in all at most [`GateLimits::identified`]; but a container with fewer
//!    than [`GateLimits::reserved`] connections is always let in, so no
//!    storm from other containers can shut a sidecar out.
//!
//! Identified connections are registered by container, so all of them can
//! be cut when the container dies ([`Gate::cut_container`]).

use super::hangup::Hangup;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateLimits {
    /// Identified connections in all.
    pub identified: usize,
    /// Identified connections per container.
    pub per_container: usize,
    /// Connections a container always gets, even when `identified` is used up.
    pub reserved: usize,
    /// Connections being identified at once, in all and per key.
    pub identifying: usize,
    pub identifying_per_key: usize,
    /// How long identification may take before the caller is told to retry.
    pub identify_deadline: Duration,
    /// How long a refused caller's connection is kept for its answer.
    pub refused_deadline: Duration,
    /// Refusals per key in a burst, and per second after that, before its
    /// connections are closed without an answer.
    pub refusal_burst: f64,
    pub refusals_per_sec: f64,
}

impl Default for GateLimits {
    fn default() -> Self {
        GateLimits {
            identified: 4096,
            per_container: 512,
            reserved: 8,
            identifying: 256,
            identifying_per_key: 16,
            identify_deadline: Duration::from_secs(2),
            refused_deadline: Duration::from_secs(1),
            refusal_burst: 20.0,
            refusals_per_sec: 5.0,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change under these locks is a single map operation.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts per key, with a cap per key and in all.
#[derive(Default)]
struct Counts {
    by_key: HashMap<String, usize>,
    total: usize,
}

impl Counts {
    fn take(&mut self, key: &str) {
        *self.by_key.entry(key.to_owned()).or_insert(0) += 1;
        self.total += 1;
    }

    fn give_back(&mut self, key: &str) {
        if let Some(n) = self.by_key.get_mut(key) {
            *n -= 1;
            self.total -= 1;
            if *n == 0 {
                self.by_key.remove(key);
            }
        }
    }

    fn of(&self, key: &str) -> usize {
        self.by_key.get(key).copied().unwrap_or(0)
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct Gate {
    pub limits: GateLimits,
    pub proc_root: PathBuf,
    identifying_all: Arc<Semaphore>,
    identifying_by_key: Mutex<HashMap<String, Arc<Semaphore>>>,
    identified: Mutex<Counts>,
    refusals: Mutex<HashMap<String, Bucket>>,
    connections: Mutex<HashMap<String, HashMap<u64, Hangup>>>,
    next_id: AtomicU64,
}

/// Which budget refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Identifying,
    Container,
}

/// A slot in the identified budget; given back on drop.
pub struct Slot {
    gate: Arc<Gate>,
    key: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.gate.identified).give_back(&self.key);
    }
}

/// A turn to be identified: one of the key's and one of all; given back on drop.
pub struct Turn {
    _key: OwnedSemaphorePermit,
    _all: OwnedSemaphorePermit,
}

/// An identified connection's entry in the registry; removed on drop.
pub struct Registration {
    gate: Arc<Gate>,
    container: String,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut all = lock(&self.gate.connections);
        if let Some(conns) = all.get_mut(&self.container) {
            conns.remove(&self.id);
            if conns.is_empty() {
                all.remove(&self.container);
            }
        }
    }
}

impl Gate {
    pub fn new(limits: GateLimits, proc_root: PathBuf) -> Arc<Gate> {
        Arc::new(Gate {
            limits,
            proc_root,
            identifying_all: Arc::new(Semaphore::new(limits.identifying)),
            identifying_by_key: Mutex::default(),
            identified: Mutex::default(),
            refusals: Mutex::default(),
            connections: Mutex::default(),
            next_id: AtomicU64::new(0),
        })
    }

    /// The budget key of a caller: its container (from its cgroup, cheap and
    /// before any Docker call), or `host:<uid>`.
    pub fn key_of(&self, pid: i32, uid: u32) -> String {
        match crate::attest::procfs::read_container_id(&self.proc_root, pid) {
            Ok(Some(id)) => id,
            _ => format!("host:{uid}"),
        }
    }

    /// A turn for identifying a connection of `key`, waiting (at most the
    /// identify deadline) behind the key's earlier connections.
    pub async fn identifying(self: &Arc<Self>, key: &str) -> Result<Turn, Full> {
        let mine = {
            let mut queues = lock(&self.identifying_by_key);
            if queues.len() > 10_000 {
                // Drop the queues nobody waits in or holds a turn of.
                let idle = self.limits.identifying_per_key;
                queues.retain(|_, q| q.available_permits() < idle || Arc::strong_count(q) > 1);
            }
            let per_key = self.limits.identifying_per_key;
            queues.entry(key.to_owned()).or_insert_with(|| Arc::new(Semaphore::new(per_key))).clone()
        };
        let all = self.identifying_all.clone();
        let wait = async move {
            let key = mine.acquire_owned().await.ok()?;
            let all = all.acquire_owned().await.ok()?;
            Some(Turn { _key: key, _all: all })
        };
        match tokio::time::timeout(self.limits.identify_deadline, wait).await {
            Ok(Some(turn)) => Ok(turn),
            _ => Err(Full::Identifying),
        }
    }

    /// A slot for an identified connection of `container`.
    pub fn identified(self: &Arc<Self>, container: &str) -> Result<Slot, Full> {
        let mut counts = lock(&self.identified);
        let mine = counts.of(container);
        let room = counts.total < self.limits.identified || mine < self.limits.reserved;
        if mine >= self.limits.per_container || !room {
            return Err(Full::Container);
        }
        counts.take(container);
        Ok(Slot { gate: self.clone(), key: container.to_owned() })
    }

    /// Notes a refusal of `key`; once the key has refused more than its
    /// budget, [`Gate::flooding`] closes its connections without an answer.
    pub fn note_refusal(&self, key: &str) {
        self.refusal_at(key, Instant::now());
    }

    /// Whether `key` is over its refusal budget (without taking from it).
    pub fn flooding(&self, key: &str) -> bool {
        let now = Instant::now();
        let buckets = lock(&self.refusals);
        buckets.get(key).is_some_and(|b| self.refilled(b, now) < 1.0)
    }

    fn refilled(&self, b: &Bucket, now: Instant) -> f64 {
        let earned = now.duration_since(b.at).as_secs_f64() * self.limits.refusals_per_sec;
        (b.tokens + earned).min(self.limits.refusal_burst)
    }

    fn refusal_at(&self, key: &str, now: Instant) -> bool {
        let mut buckets = lock(&self.refusals);
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(60));
        }
        let burst = self.limits.refusal_burst;
        let b = buckets.entry(key.to_owned()).or_insert(Bucket { tokens: burst, at: now });
        b.tokens =
            (b.tokens + now.duration_since(b.at).as_secs_f64() * self.limits.refusals_per_sec).min(burst);
        b.at = now;
        if b.tokens < 1.0 {
            return false;
        }
        b.tokens -= 1.0;
        true
    }

    /// Registers an identified connection of `container`.
    pub fn register(self: &Arc<Self>, container: &str, hangup: Hangup) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.connections).entry(container.to_owned()).or_default().insert(id, hangup);
        Registration { gate: self.clone(), container: container.to_owned(), id }
    }

    /// Hangs up every connection attested as `container` (it died or was
    /// removed: nothing may go on speaking for it). Returns how many.
    pub fn cut_container(&self, container: &str) -> usize {
        let conns = lock(&self.connections).remove(container).unwrap_or_default();
        for hangup in conns.values() {
            hangup.hang_up();
        }
        conns.len()
    }

    /// Identified connections open now (all, and of `container`).
    pub fn open_connections(&self, container: &str) -> (usize, usize) {
        let counts = lock(&self.identified);
        (counts.total, counts.of(container))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(limits: GateLimits) -> Arc<Gate> {
        Gate::new(limits, "/nonexistent".into())
    }

    #[test]
    fn a_container_keeps_its_reserved_connections_when_all_are_taken() {
        let g = gate(GateLimits { identified: 4, per_container: 3, reserved: 2, ..Default::default() });
        let hog: Vec<_> = (0..3).map(|_| g.identified("hog").unwrap()).collect();
        assert_eq!(g.identified("hog").err(), Some(Full::Container), "per-container cap");
        let _other = g.identified("other").unwrap();
        // All 4 are used: a newcomer still gets its reserved 2, not a third.
        let sidecar: Vec<_> = (0..2).map(|_| g.identified("sidecar").unwrap()).collect();
        assert_eq!(g.identified("sidecar").err(), Some(Full::Container));
        drop(hog);
        assert_eq!(g.open_connections("sidecar"), (3, 2));
        drop(sidecar);
        assert_eq!(g.open_connections("hog"), (1, 0));
    }

    #[tokio::test]
    async fn identification_takes_turns_per_key_and_in_all() {
        let deadline = Duration::from_millis(50);
        let limits = GateLimits {
            identifying: 3,
            identifying_per_key: 2,
            identify_deadline: deadline,
            ..Default::default()
        };
        let g = gate(limits);
        let a1 = g.identifying("a").await.unwrap();
        let _a2 = g.identifying("a").await.unwrap();
        assert!(g.identifying("a").await.is_err(), "a third of key a waits past the deadline");
        let _b = g.identifying("b").await.unwrap();
        assert!(g.identifying("c").await.is_err(), "all 3 in use");
        drop(a1);
        assert!(g.identifying("c").await.is_ok());
    }

    #[tokio::test]
    async fn a_burst_of_one_key_is_queued_not_refused() {
        let limits = GateLimits { identifying_per_key: 2, ..Default::default() };
        let g = gate(limits);
        let first = g.identifying("burst").await.unwrap();
        let _second = g.identifying("burst").await.unwrap();
        let waiting = tokio::spawn({
            let g = g.clone();
            async move { g.identifying("burst").await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        assert!(waiting.await.unwrap(), "the third got the turn the first gave back");
    }

    #[test]
    fn repeated_refusals_close_a_key_until_it_calms_down() {
        let g = gate(GateLimits { refusal_burst: 3.0, refusals_per_sec: 1.0, ..Default::default() });
        let t0 = Instant::now();
        assert_eq!((0..5).filter(|_| g.refusal_at("junk", t0)).count(), 3);
        assert!(g.flooding("junk"));
        assert!(!g.flooding("other"), "another key has its own budget");
        assert!(g.refusal_at("junk", t0 + Duration::from_millis(1500)), "refilled after a second");
    }

    #[test]
    fn cutting_a_container_hangs_up_its_connections_only() {
        let g = gate(GateLimits::default());
        let (a, b, c) = (Hangup::default(), Hangup::default(), Hangup::default());
        let _ra = g.register("dead", a.clone());
        let _rb = g.register("dead", b.clone());
        let rc = g.register("alive", c.clone());
        assert_eq!(g.cut_container("dead"), 2);
        assert_eq!(g.cut_container("dead"), 0);
        drop(rc);
        assert_eq!(g.cut_container("alive"), 0, "a closed connection unregisters itself");
        assert!(a.is_hung_up() && b.is_hung_up() && !c.is_hung_up());
    }
}
