//! The renewal loop: one small task per secret, plus (when no list of
//! secrets was given) a discovery loop that follows what is granted.
//!
//! Everything runs on one current-thread runtime. The sink and the lease
//! table sit behind std mutexes that are never held across an `.await`, so a
//! task aborted at an await point can never leave a half-written file.

use crate::agent::{AgentError, Fetched, Source};
use crate::health::{self, Discovery, Entry};
use crate::lease::{self, Lease, Phase};
use crate::writer::{SecretSink, Stored};
use seg_common::api::GrantedSecret;
use seg_common::name::SecretName;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

/// When the process started, for the one "ready" log line that the benchmark
/// harness reads (start → every requested secret on disk).
static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
static READY_LOGGED: AtomicBool = AtomicBool::new(false);

/// Call first thing in `main`.
pub fn mark_start() {
    STARTED.get_or_init(std::time::Instant::now);
}

/// Re-list granted secrets at least this often, so new grants and rotations
/// are picked up even when leases are long.
const DISCOVERY_MAX: Duration = Duration::from_secs(30);
/// Re-list this often while nothing is granted.
const DISCOVERY_EMPTY: Duration = Duration::from_secs(5);

/// State shared by the tasks and the health server.
pub struct Ctx<S, A> {
    sink: Mutex<S>,
    agent: A,
    leases: Mutex<BTreeMap<SecretName, Lease>>,
    discovery: Mutex<Discovery>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
        })
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

    fn update<R>(&self, name: &SecretName, f: impl FnOnce(&mut Lease) -> R) -> R {
        f(lock(&self.leases).entry(name.clone()).or_default())
    }

    fn wipe(&self, name: &SecretName, why: &str) {
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

/// Runs until `shutdown` completes, then stops every task and wipes every
/// file written. `requested: None` means "every granted secret".
pub async fn run<S: SecretSink, A: Source>(
    ctx: Arc<Ctx<S, A>>,
    requested: Option<Vec<SecretName>>,
    shutdown: impl Future<Output = ()>,
) {
    let mut workers = Workers::default();
    match requested {
        Some(names) => {
            for name in names {
                workers.spawn(&ctx, name);
            }
            shutdown.await;
        }
        None => discover(&ctx, &mut workers, shutdown).await,
    }
    workers.stop_all().await;
    ctx.wipe_all("shutting down");
}

struct Worker {
    handle: JoinHandle<()>,
    kick: Arc<Notify>,
}

#[derive(Default)]
struct Workers(BTreeMap<SecretName, Worker>);

impl Workers {
    fn spawn<S: SecretSink, A: Source>(&mut self, ctx: &Arc<Ctx<S, A>>, name: SecretName) {
        ctx.update(&name, |_| ());
        let kick = Arc::new(Notify::new());
        let handle = tokio::spawn(secret_task(ctx.clone(), name.clone(), kick.clone()));
        self.0.insert(name, Worker { handle, kick });
    }

    async fn stop(&mut self, name: &SecretName) {
        if let Some(w) = self.0.remove(name) {
            w.handle.abort();
            let _ = w.handle.await;
        }
    }

    async fn stop_all(&mut self) {
        let names: Vec<_> = self.0.keys().cloned().collect();
        for name in names {
            self.stop(&name).await;
        }
    }
}

/// Follows `GET /v1/secrets`: starts tasks for new grants, stops and wipes
/// revoked ones, and nudges a task at once when its version changed.
async fn discover<S: SecretSink, A: Source>(
    ctx: &Arc<Ctx<S, A>>,
    workers: &mut Workers,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut rng = fastrand::Rng::new();
    let (mut next, mut failures) = (Instant::now(), 0u32);
    loop {
        let listed = tokio::select! {
            () = &mut shutdown => return,
            r = async { sleep_until(next).await; ctx.agent.list(lease::FETCH_TIMEOUT).await } => r,
        };
        let now = Instant::now();
        match listed {
            Ok(list) => {
                failures = 0;
                *lock(&ctx.discovery) = Discovery::Done;
                reconcile(ctx, workers, &list).await;
                next = now + discovery_interval(&list, &mut rng);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = lease::backoff(failures, lease::BACKOFF_MAX);
                tracing::warn!("listing granted secrets failed: {e}; retrying in {wait:?}");
                next = now + wait;
            }
        }
    }
}

async fn reconcile<S: SecretSink, A: Source>(
    ctx: &Arc<Ctx<S, A>>,
    workers: &mut Workers,
    list: &[GrantedSecret],
) {
    let granted: BTreeMap<&SecretName, u64> = list.iter().map(|g| (&g.name, g.version)).collect();
    let revoked: Vec<SecretName> = workers.0.keys().filter(|n| !granted.contains_key(n)).cloned().collect();
    for name in revoked {
        workers.stop(&name).await;
        ctx.wipe(&name, "no longer granted");
        lock(&ctx.leases).remove(&name);
    }
    for (name, version) in granted {
        match workers.0.get(name) {
            None => workers.spawn(ctx, name.clone()),
            Some(w) if ctx.lease(name).is_some_and(|l| l.version != Some(version)) => w.kick.notify_one(),
            Some(_) => {}
        }
    }
}

fn discovery_interval(list: &[GrantedSecret], rng: &mut fastrand::Rng) -> Duration {
    let shortest = list.iter().map(|g| Duration::from_millis(g.ttl_ms)).min();
    match shortest {
        Some(ttl) => lease::renew_after(ttl, rng).min(DISCOVERY_MAX),
        None => DISCOVERY_EMPTY,
    }
}

/// Keeps one secret on disk for as long as its lease holds.
async fn secret_task<S: SecretSink, A: Source>(ctx: Arc<Ctx<S, A>>, name: SecretName, kick: Arc<Notify>) {
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
    let result = ctx.agent.fetch(name, timeout).await;
    let now = Instant::now();
    let next = match result {
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
