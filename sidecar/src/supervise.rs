//! The supervisor: one task per followed secret (see `run`), started and
//! stopped from three sources — the list given at start, discovery
//! (`GET /v1/secrets`, when no list was given) and the watch stream, which
//! pushes new versions, revocations and removals as they happen. Leases are
//! renewed as before whether or not the stream is up; the stream only makes
//! things happen sooner.

use crate::acks;
use crate::agent::Source;
use crate::health::Discovery;
use crate::lease::{self, Phase};
use crate::notify::{self, OnRotate};
use crate::run::{secret_task, Ctx};
use crate::watch;
use crate::writer::SecretSink;
use seg_common::api::{GrantedSecret, WatchEvent};
use seg_common::name::SecretName;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

/// Re-list granted secrets at least this often, so new grants and rotations
/// are picked up even when leases are long (and the stream is down).
const DISCOVERY_MAX: Duration = Duration::from_secs(30);
/// Re-list this often while nothing is granted.
const DISCOVERY_EMPTY: Duration = Duration::from_secs(5);

/// What the push side should do.
#[derive(Debug, Clone, Default)]
pub struct Push {
    /// Keep a watch stream open and acknowledge versions.
    pub watch: bool,
    /// The declared post-rotate action, if any.
    pub on_rotate: Option<OnRotate>,
}

/// Runs until `shutdown` completes, then stops every task and wipes every
/// file written. `requested: None` means "every granted secret".
pub async fn run<S: SecretSink, A: Source>(
    ctx: Arc<Ctx<S, A>>,
    requested: Option<Vec<SecretName>>,
    push: Push,
    shutdown: impl Future<Output = ()>,
) {
    let mut helpers: Vec<JoinHandle<()>> = Vec::new();
    let (events_tx, mut events) = mpsc::channel(64);
    if push.watch {
        let (tx, rx) = mpsc::unbounded_channel();
        ctx.send_acks_to(tx);
        helpers.push(tokio::spawn(acks::run(ctx.clone(), rx)));
        helpers.push(tokio::spawn(watch::follow(ctx.clone(), requested.clone(), events_tx)));
    }
    if let Some(on_rotate) = push.on_rotate {
        let (tx, rx) = mpsc::unbounded_channel();
        ctx.send_changes_to(tx);
        helpers.push(tokio::spawn(notify::run(ctx.clone(), on_rotate, rx)));
    }
    let mut workers = Workers::default();
    for name in requested.iter().flatten() {
        workers.spawn(&ctx, name.clone());
    }
    let discovering = requested.is_none();
    tokio::pin!(shutdown);
    let mut rng = fastrand::Rng::new();
    let (mut next_list, mut failures) = (Instant::now(), 0u32);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(event) = events.recv() => on_event(&ctx, &mut workers, discovering, event).await,
            listed = async { sleep_until(next_list).await; ctx.agent.list(lease::FETCH_TIMEOUT).await },
                if discovering =>
            {
                let now = Instant::now();
                match listed {
                    Ok(list) => {
                        failures = 0;
                        *crate::run::lock(&ctx.discovery) = Discovery::Done;
                        reconcile(&ctx, &mut workers, &list).await;
                        next_list = now + discovery_interval(&list, &mut rng);
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        let wait = lease::backoff(failures, lease::BACKOFF_MAX);
                        tracing::warn!("listing granted secrets failed: {e}; retrying in {wait:?}");
                        next_list = now + wait;
                    }
                }
            }
        }
    }
    for h in &helpers {
        h.abort();
    }
    workers.stop_all().await;
    ctx.wipe_all("shutting down");
}

/// What one pushed event means for the tasks.
async fn on_event<S: SecretSink, A: Source>(
    ctx: &Arc<Ctx<S, A>>,
    workers: &mut Workers,
    discovering: bool,
    event: WatchEvent,
) {
    match event {
        WatchEvent::Hello { secrets, .. } => {
            // Maybe a restarted controller: it has no acknowledgements yet.
            ctx.forget_acks();
            if discovering {
                *crate::run::lock(&ctx.discovery) = Discovery::Done;
                reconcile(ctx, workers, &secrets).await;
            } else {
                let granted: BTreeMap<&SecretName, u64> =
                    secrets.iter().map(|g| (&g.name, g.version)).collect();
                for name in workers.names() {
                    match granted.get(&name) {
                        Some(v) => catch_up(ctx, workers, &name, *v),
                        // Not granted (any more): the task hears it from a fetch.
                        None => workers.kick(&name),
                    }
                }
            }
        }
        WatchEvent::Version { name, version, .. } => {
            if workers.has(&name) {
                catch_up(ctx, workers, &name, version);
            } else if discovering {
                workers.spawn(ctx, name);
            }
        }
        WatchEvent::Revoked { name } => drop_pushed(ctx, workers, discovering, &name, "revoked").await,
        WatchEvent::Removed { name } => drop_pushed(ctx, workers, discovering, &name, "removed").await,
        WatchEvent::Ping => {}
    }
}

/// The controller says `name` may no longer be held: wipe it now.
async fn drop_pushed<S: SecretSink, A: Source>(
    ctx: &Arc<Ctx<S, A>>,
    workers: &mut Workers,
    discovering: bool,
    name: &SecretName,
    code: &str,
) {
    if !workers.has(name) {
        return;
    }
    ctx.wipe_now(name, code);
    if discovering {
        workers.stop(name).await;
        ctx.drop_secret(name);
    } else {
        // Asked for by name: keep asking (with backoff), it may come back.
        workers.kick(name);
    }
}

/// Fetches `name` now unless `version` is already on disk (then it only
/// needs acknowledging). A task whose first fetch is in flight is kicked
/// too: that fetch may have started before the rotation.
fn catch_up<S: SecretSink, A: Source>(ctx: &Ctx<S, A>, workers: &Workers, name: &SecretName, version: u64) {
    let lease = ctx.lease(name);
    if lease.as_ref().is_some_and(|l| l.phase == Phase::Live && l.version == Some(version)) {
        ctx.want_ack(name, version);
    } else {
        workers.kick(name);
    }
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

    fn has(&self, name: &SecretName) -> bool {
        self.0.contains_key(name)
    }

    fn names(&self) -> Vec<SecretName> {
        self.0.keys().cloned().collect()
    }

    fn kick(&self, name: &SecretName) {
        if let Some(w) = self.0.get(name) {
            w.kick.notify_one();
        }
    }

    async fn stop(&mut self, name: &SecretName) {
        if let Some(w) = self.0.remove(name) {
            w.handle.abort();
            let _ = w.handle.await;
        }
    }

    async fn stop_all(&mut self) {
        for name in self.names() {
            self.stop(&name).await;
        }
    }
}

/// Follows a list of granted secrets: starts tasks for new grants, stops and
/// wipes revoked ones, and nudges a task at once when its version changed.
async fn reconcile<S: SecretSink, A: Source>(
    ctx: &Arc<Ctx<S, A>>,
    workers: &mut Workers,
    list: &[GrantedSecret],
) {
    let granted: BTreeMap<&SecretName, u64> = list.iter().map(|g| (&g.name, g.version)).collect();
    let revoked: Vec<SecretName> = workers.names().into_iter().filter(|n| !granted.contains_key(n)).collect();
    for name in revoked {
        workers.stop(&name).await;
        ctx.wipe(&name, "no longer granted");
        ctx.drop_secret(&name);
    }
    for (name, version) in granted {
        if workers.has(name) {
            catch_up(ctx, workers, name, version);
        } else {
            workers.spawn(ctx, name.clone());
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

#[cfg(test)]
#[path = "supervise_tests.rs"]
mod tests;
