//! The per-secret renewal tasks and the state they share ([`Ctx`]). The
//! supervisor that starts and stops them, follows discovery and the watch
//! stream, is in `supervise`.
//!
//! Everything runs on one current-thread runtime. The sink and the lease
//! table sit behind std mutexes that are never held across an `.await`, so a
//! task aborted at an await point can never leave a half-written file.
//!
//! Push support: after a secret is stored, its version is acknowledged to
//! the controller (once per version, by the acker task); when the bytes of a
//! file that was already there changed, the change goes to the notifier
//! (post-rotate action). A wipe by a revocation event bumps the secret's
//! epoch, so a fetch that was already in flight cannot write it back.

use crate::agent::{AgentError, Fetched, Source};
use crate::health::{self, Discovery, Entry};
use crate::lease::{self, Lease, Phase};
use crate::writer::{SecretSink, Stored};
use seg_common::api::Changed;
use seg_common::name::SecretName;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::time::{sleep_until, Instant};

/// When the process started, for the one "ready" log line that the benchmark
/// harness reads (start → every requested secret on disk).
static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
static READY_LOGGED: AtomicBool = AtomicBool::new(false);

/// Call first thing in `main`.
pub fn mark_start() {
    STARTED.get_or_init(std::time::Instant::now);
}

/// State shared by the tasks and the health server.
pub struct Ctx<S, A> {
    sink: Mutex<S>,
    pub(crate) agent: A,
    leases: Mutex<BTreeMap<SecretName, Lease>>,
    pub(crate) discovery: Mutex<Discovery>,
    /// The version the controller last accepted as on our disk.
    acked: Mutex<BTreeMap<SecretName, u64>>,
    /// Bumped by every wipe on a revocation event.
    epochs: Mutex<BTreeMap<SecretName, u64>>,
    /// Versions to acknowledge (set when push is on).
    acks: OnceLock<mpsc::UnboundedSender<Changed>>,
    /// Files whose bytes changed (set when a post-rotate action is declared).
    changes: OnceLock<mpsc::UnboundedSender<Changed>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (no
    // multi-step invariants), so poisoning is not worth dying for.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<S: SecretSink, A: Source> Ctx<S, A> {
    pub fn new(sink: S, agent: A, discovering: bool) -> Arc<Self> {
        let discovery = if discovering { Discovery::NotYet } else { Discovery::Off };
        Arc::new(Ctx {
            sink: Mutex::new(sink),
            agent,
            leases: Mutex::new(BTreeMap::new()),
            discovery: Mutex::new(discovery),
            acked: Mutex::new(BTreeMap::new()),
            epochs: Mutex::new(BTreeMap::new()),
            acks: OnceLock::new(),
            changes: OnceLock::new(),
        })
    }

    /// Where versions to acknowledge go (the acker task).
    pub fn send_acks_to(&self, tx: mpsc::UnboundedSender<Changed>) {
        let _ = self.acks.set(tx);
    }

    /// Where changed files are reported (the notifier task).
    pub fn send_changes_to(&self, tx: mpsc::UnboundedSender<Changed>) {
        let _ = self.changes.set(tx);
    }

    /// Queues an acknowledgement of `version` unless it was already accepted.
    pub fn want_ack(&self, name: &SecretName, version: u64) {
        if lock(&self.acked).get(name) == Some(&version) {
            return;
        }
        if let Some(tx) = self.acks.get() {
            let _ = tx.send(Changed { name: name.clone(), version });
        }
    }

    /// Whether `version` of `name` is (still) what we have on disk, and not
    /// acknowledged yet.
    pub fn ack_due(&self, name: &SecretName, version: u64) -> bool {
        let live = self.lease(name).is_some_and(|l| l.phase == Phase::Live && l.version == Some(version));
        live && lock(&self.acked).get(name) != Some(&version)
    }

    pub fn acked(&self, name: &SecretName, version: u64) {
        lock(&self.acked).insert(name.clone(), version);
    }

    /// Forgets every acknowledgement (a new stream: maybe a new controller).
    pub fn forget_acks(&self) {
        lock(&self.acked).clear();
    }

    fn epoch(&self, name: &SecretName) -> u64 {
        lock(&self.epochs).get(name).copied().unwrap_or(0)
    }

    /// Wipes `name` now because the controller said so (revoked, removed),
    /// and makes sure a fetch already in flight does not write it back.
    pub fn wipe_now(&self, name: &SecretName, code: &str) {
        *lock(&self.epochs).entry(name.clone()).or_insert(0) += 1;
        self.wipe(name, &format!("the controller pushed: {code}"));
        lock(&self.acked).remove(name);
        if lock(&self.leases).contains_key(name) {
            self.update(name, |l| l.refused(Instant::now(), code));
        }
    }

    /// Forgets a secret that is no longer followed.
    pub fn drop_secret(&self, name: &SecretName) {
        lock(&self.leases).remove(name);
        lock(&self.acked).remove(name);
    }

    /// The one-line health status.
    pub fn health_line(&self) -> String {
        let leases = lock(&self.leases).clone();
        let discovery = *lock(&self.discovery);
        let sink = lock(&self.sink);
        let entries: Vec<Entry<'_>> = leases
            .iter()
            .map(|(name, lease)| Entry { name, lease, on_disk: sink.is_on_disk(name) })
            .collect();
        health::summarize(discovery, &entries, Instant::now())
    }

    /// Logs once, when every requested secret first is on disk.
    fn log_ready_once(&self) {
        if READY_LOGGED.load(Ordering::Relaxed) || !self.health_line().starts_with("ok") {
            return;
        }
        if !READY_LOGGED.swap(true, Ordering::Relaxed) {
            let since = STARTED.get().map(|t| t.elapsed().as_secs_f64() * 1000.0).unwrap_or(f64::NAN);
            tracing::info!("ready: every requested secret on disk in {since:.1} ms after start");
        }
    }

    /// A copy of one secret's lease (for tests and health).
    pub fn lease(&self, name: &SecretName) -> Option<Lease> {
        lock(&self.leases).get(name).cloned()
    }

    pub(crate) fn update<R>(&self, name: &SecretName, f: impl FnOnce(&mut Lease) -> R) -> R {
        f(lock(&self.leases).entry(name.clone()).or_default())
    }

    pub(crate) fn wipe(&self, name: &SecretName, why: &str) {
        let version = lock(&self.leases).get(name).and_then(|l| l.version);
        let shown = version.map(|v| format!("{name} v{v}")).unwrap_or_else(|| name.to_string());
        let mut sink = lock(&self.sink);
        let place = sink.describe(name);
        match sink.wipe(name) {
            Ok(true) => tracing::info!("wiped {shown} at {place}: {why}"),
            Ok(false) => {}
            Err(e) => tracing::error!("wiping {shown} ({why}) failed: {e}"),
        }
    }

    /// Wipes the file if its lease has run out. Returns whether it did.
    fn expire_if_due(&self, name: &SecretName, now: Instant) -> bool {
        if !self.update(name, |l| l.must_wipe(now)) {
            return false;
        }
        self.wipe(name, "lease ran out without a successful renewal");
        self.update(name, Lease::expire);
        true
    }

    /// Wipes every file written; for shutdown.
    pub fn wipe_all(&self, why: &str) {
        let names = lock(&self.sink).written();
        for name in names {
            self.wipe(&name, why);
        }
    }
}

/// Keeps one secret on disk for as long as its lease holds.
pub(crate) async fn secret_task<S: SecretSink, A: Source>(
    ctx: Arc<Ctx<S, A>>,
    name: SecretName,
    kick: Arc<Notify>,
) {
    let mut rng = fastrand::Rng::new();
    let mut next = Instant::now();
    loop {
        tokio::select! {
            () = sleep_until(next) => {}
            () = kick.notified() => {}
        }
        next = renew_once(&ctx, &name, &mut rng).await;
    }
}

/// One attempt; returns when to try next.
async fn renew_once<S: SecretSink, A: Source>(
    ctx: &Ctx<S, A>,
    name: &SecretName,
    rng: &mut fastrand::Rng,
) -> Instant {
    let started = Instant::now();
    ctx.expire_if_due(name, started);
    let timeout = ctx.update(name, |l| l.fetch_timeout(started));
    let epoch = ctx.epoch(name);
    let result = ctx.agent.fetch(name, timeout).await;
    let now = Instant::now();
    let next = match result {
        Ok(_) if ctx.epoch(name) != epoch => {
            // Revoked while the fetch was in flight: what it brought is stale.
            tracing::info!("not writing {name}: the controller revoked it during the fetch");
            now + lease::BACKOFF_START
        }
        Ok(fetched) => stored(ctx, name, started, fetched, rng),
        Err(e) => match e.refusal_code() {
            Some(code) => {
                let code = code.to_owned();
                tracing::warn!("{e}");
                ctx.wipe(name, &format!("the agent refused it ({code})"));
                ctx.update(name, |l| l.refused(now, &code))
            }
            None => {
                let (next, lease) = ctx.update(name, |l| (l.failed(now), l.clone()));
                log_failure(name, &e, &lease, next - now, now);
                next
            }
        },
    };
    // A fetch that hung until the lease's end, or a failed store, may leave
    // a run-out lease behind: wipe now, not at the next (later) attempt, and
    // start the backoff over as after any expiry.
    let now = Instant::now();
    if ctx.expire_if_due(name, now) {
        return now + lease::BACKOFF_START;
    }
    next
}

fn stored<S: SecretSink, A: Source>(
    ctx: &Ctx<S, A>,
    name: &SecretName,
    started: Instant,
    fetched: Fetched,
    rng: &mut fastrand::Rng,
) -> Instant {
    warn_once_if_unlocked();
    let Fetched { value, version, ttl } = fetched;
    // The version on disk before this store, if the file was ours and live.
    let before = ctx.lease(name).filter(|l| l.phase == Phase::Live).and_then(|l| l.version);
    let result = {
        let mut sink = lock(&ctx.sink);
        sink.store(name, version, &value).map(|s| (s, sink.describe(name)))
    };
    drop(value);
    let now = Instant::now();
    match result {
        Ok((outcome, place)) => {
            let what = match outcome {
                Stored::Written => format!("wrote {place}"),
                Stored::Unchanged => "unchanged on disk".to_owned(),
            };
            tracing::info!("fetched {name} v{version} (lease {ttl:?}): {what}");
            let next = ctx.update(name, |l| l.renewed(started, version, ttl, rng));
            ctx.log_ready_once();
            ctx.want_ack(name, version);
            if outcome == Stored::Written && before.is_some_and(|b| b != version) {
                if let Some(tx) = ctx.changes.get() {
                    let _ = tx.send(Changed { name: name.clone(), version });
                }
            }
            next
        }
        Err(e) => {
            tracing::error!("fetched {name} v{version} but could not store it: {e}");
            ctx.update(name, |l| l.failed(now))
        }
    }
}

fn log_failure(name: &SecretName, e: &AgentError, lease: &Lease, wait: Duration, now: Instant) {
    match (&lease.phase, lease.valid_until(now)) {
        (Phase::Live, Some(end)) => tracing::warn!(
            "renewing {name} failed: {e}; retrying in {wait:?}, the file stays for the remaining {:?} of its lease",
            end - now
        ),
        _ => tracing::warn!("fetching {name} failed: {e}; retrying in {wait:?}"),
    }
}

/// Warns once that secrets may be swapped out.
pub fn warn_once_if_unlocked() {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if seg_common::sys::mlock_unavailable() && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "cannot lock secret memory (RLIMIT_MEMLOCK too low): secrets may be swapped to disk; \
             raise the limit (compose: ulimits: memlock: 1048576) to prevent it"
        );
    }
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
