//! Following Docker: connect (with backoff), a full resync, then container
//! and network events one batch at a time, and a periodic resync.
//!
//! An event costs one inspect (for a start or a network change) and a fast
//! update: only the chains that changed are written, against the ruleset
//! applied last — no `iptables-save` per event. The resync reads
//! everything (two list calls and the live rules) and repairs what another
//! tool changed. When the event stream breaks (dockerd restarting), it is
//! re-opened with backoff, replaying from a second before, and a resync
//! follows, since events were missed in between.

use super::engine::Applied;
use super::live::{self, Live};
use super::state::{Mode, State};
use super::{attach, blocking, Segregation};
use crate::docker::{self, Backoff};
use crate::network::DockerNetworks;
use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::EventsOptions;
use bollard::Docker;
use futures_util::{FutureExt, StreamExt};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Events handled together when they arrive at once (a compose `up`).
const BATCH: usize = 64;

/// How long one container event took to be in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventTiming {
    /// `container start`, `network connect`, …
    pub action: String,
    pub container: String,
    /// Docker's own timestamp of the event (since the Unix epoch).
    pub event_at: Option<Duration>,
    /// When the rules were written (since the Unix epoch, same clock).
    pub done_at: Duration,
    /// From receiving the event to the rules being written.
    pub handling: Duration,
    /// Of which: compiling, and the kernel transaction.
    pub compile: Duration,
    pub restore: Duration,
    /// Rules were written (the container mattered to some rule).
    pub changed: bool,
    pub full: bool,
}

impl EventTiming {
    /// From Docker's event to the rules being written.
    pub fn since_event(&self) -> Option<Duration> {
        self.event_at.and_then(|t| self.done_at.checked_sub(t))
    }
}

enum Change {
    Inspect(String),
    Stopped(String),
    Gone(String),
    Networks,
}

fn classify(ev: &EventMessage) -> Option<Change> {
    let actor = ev.actor.as_ref()?;
    let action = ev.action.as_deref()?;
    match (ev.typ?, action) {
        (EventMessageTypeEnum::CONTAINER, "start") => Some(Change::Inspect(actor.id.clone()?)),
        (EventMessageTypeEnum::CONTAINER, "die") => Some(Change::Stopped(actor.id.clone()?)),
        (EventMessageTypeEnum::CONTAINER, "destroy") => Some(Change::Gone(actor.id.clone()?)),
        (EventMessageTypeEnum::NETWORK, "connect" | "disconnect") => {
            Some(Change::Inspect(actor.attributes.as_ref()?.get("container")?.clone()))
        }
        (EventMessageTypeEnum::NETWORK, "create" | "destroy") => Some(Change::Networks),
        _ => None,
    }
}

fn events_options(since: u64) -> EventsOptions {
    let filters = HashMap::from([
        ("type".to_owned(), vec!["container".to_owned(), "network".to_owned()]),
        (
            "event".to_owned(),
            ["start", "die", "destroy", "connect", "disconnect", "create"].map(str::to_owned).to_vec(),
        ),
    ]);
    EventsOptions { since: Some(since.to_string()), until: None, filters: Some(filters) }
}

fn now_unix() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

impl Segregation {
    /// Connects to Docker (retrying), resyncs, then follows events and
    /// resyncs periodically, for the life of the process.
    pub fn spawn(self: &Arc<Self>, socket: PathBuf) -> tokio::task::JoinHandle<()> {
        let seg = self.clone();
        tokio::spawn(async move {
            let docker = connect(&socket).await;
            *seg.docker.write().unwrap_or_else(|p| p.into_inner()) = Some(docker.clone());
            seg.resync("start").await;
            drop(tokio::spawn(seg.clone().resync_loop()));
            seg.follow(docker).await;
        })
    }

    /// Uses an already connected client (tests, benchmark); resyncs once.
    pub async fn attach_docker(self: &Arc<Self>, docker: Docker) {
        *self.docker.write().unwrap_or_else(|p| p.into_inner()) = Some(docker);
        self.resync("start").await;
    }

    async fn resync_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.resync_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.resync("periodic").await;
        }
    }

    /// Re-reads every container and network and the live rules, and writes
    /// whatever differs. Docker unreachable: nothing changes (fail closed).
    pub async fn resync(&self, why: &str) -> bool {
        let Some(docker) = self.docker() else { return false };
        if !self.state.lock().await.wants_rules_or_managed() {
            return true;
        }
        let (containers, networks) = match live::collect(&docker).await {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!("{why} resync skipped, rules left as they are: {e}");
                return false;
            }
        };
        let mut st = self.state.lock().await;
        st.live.replace(containers, networks);
        fix_attachments(&mut st, &docker, None).await;
        match blocking(|| st.reconcile(Mode::Full)) {
            Ok(Some((applied, desired))) if applied.changed() => {
                let r = applied.report(&desired);
                let jump = applied.v4.contains("DOCKER-USER") || applied.v6.contains("DOCKER-USER");
                tracing::info!(
                    chains = r.chains_written,
                    removed = r.chains_removed,
                    rules = r.rules_written,
                    jump_repaired = jump,
                    "{why} resync rewrote seg's rules (the kernel differed from the policies)"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!("{why} resync could not write the rules: {e}"),
        }
        true
    }

    /// Follows events for ever, re-subscribing (and resyncing) after a break.
    async fn follow(self: &Arc<Self>, docker: Docker) {
        let mut backoff = Backoff::new();
        loop {
            let began = Instant::now();
            let since = now_unix().as_secs().saturating_sub(1);
            let mut stream = docker.events(Some(events_options(since)));
            while let Some(next) = stream.next().await {
                let Ok(ev) = next.inspect_err(|e| tracing::warn!("Docker event stream failed: {e}")) else {
                    break;
                };
                backoff.reset();
                let mut batch = vec![(ev, Instant::now())];
                while batch.len() < BATCH {
                    match stream.next().now_or_never() {
                        Some(Some(Ok(ev))) => batch.push((ev, Instant::now())),
                        _ => break,
                    }
                }
                self.on_events(&docker, batch).await;
            }
            if began.elapsed() >= Backoff::MAX {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            tracing::warn!(retry_in = ?delay, "Docker event stream ended (dockerd restarting?); rules stay, reconnecting");
            tokio::time::sleep(delay).await;
            // Events were missed while not subscribed.
            self.resync("reconnect").await;
        }
    }

    /// Applies a batch of events to the picture, then one fast update.
    async fn on_events(&self, docker: &Docker, batch: Vec<(EventMessage, Instant)>) {
        let mut st = self.state.lock().await;
        if !st.wants_rules_or_managed() {
            return;
        }
        let mut started = BTreeSet::new();
        let mut changed = false;
        for (ev, _) in &batch {
            match classify(ev) {
                Some(Change::Inspect(id)) => {
                    if ev.action.as_deref() == Some("start") {
                        started.insert(id.clone());
                    }
                    changed |= refresh(&mut st.live, docker, &id).await;
                }
                Some(Change::Stopped(id)) => changed |= st.live.park(&id),
                Some(Change::Gone(id)) => changed |= st.live.remove(&id),
                Some(Change::Networks) => match live::networks(docker).await {
                    Ok(n) => changed |= st.live.set_networks(n),
                    Err(e) => tracing::warn!("cannot refresh the networks: {e}"),
                },
                None => {}
            }
        }
        for id in &started {
            changed |= !fix_attachments(&mut st, docker, Some(id)).await.attachments.is_empty();
        }
        // Docker often says twice what changed (`network connect`, then
        // `container start`): the second costs nothing.
        let (mut compile, mut applied) = (Duration::ZERO, Applied::default());
        if changed {
            let compile_start = Instant::now();
            let desired = st.desired();
            compile = compile_start.elapsed();
            match blocking(|| st.reconcile_to(Mode::Fast, desired)) {
                Ok(Some(done)) => applied = done,
                Ok(None) => {}
                Err(e) => tracing::error!("cannot update the rules after a Docker event: {e}"),
            }
        }
        drop(st);
        self.record_batch(batch, compile, &applied);
    }

    fn record_batch(&self, batch: Vec<(EventMessage, Instant)>, compile: Duration, applied: &Applied) {
        let done = (Instant::now(), now_unix());
        if applied.changed() {
            tracing::debug!(events = batch.len(), full = applied.full,
                handling = ?done.0.duration_since(batch[0].1), "Docker events applied to the rules");
        }
        for (ev, received) in batch {
            let Some(change) = classify(&ev) else { continue };
            let container = match change {
                Change::Inspect(id) | Change::Stopped(id) | Change::Gone(id) => id,
                Change::Networks => String::new(),
            };
            let kind = format!("{:?}", ev.typ.unwrap_or(EventMessageTypeEnum::EMPTY)).to_lowercase();
            self.record_timing(EventTiming {
                action: format!("{kind} {}", ev.action.unwrap_or_default()),
                container,
                event_at: ev.time_nano.and_then(|n| u64::try_from(n).ok()).map(Duration::from_nanos),
                done_at: done.1,
                handling: done.0 - received,
                compile,
                restore: applied.restore_time,
                changed: applied.changed(),
                full: applied.full,
            });
        }
    }
}

/// Re-inspects one container into the picture (gone: forgotten); returns
/// whether the picture changed.
async fn refresh(live: &mut Live, docker: &Docker, id: &str) -> bool {
    match live::inspect(docker, id).await {
        Ok(Some(known)) => live.upsert(known),
        Ok(None) => live.remove(id),
        Err(e) => {
            tracing::warn!("{e}; the next resync will catch up");
            false
        }
    }
}

/// Puts containers (one, or all) on their services' declared networks;
/// re-inspects the ones moved. Returns what was done.
pub(super) async fn fix_attachments(
    st: &mut State,
    docker: &Docker,
    only: Option<&str>,
) -> super::api::NetworkReport {
    let mut report = super::api::NetworkReport::default();
    let ops = attach::plan(st.policies(), st.live.inventory(), only);
    if ops.is_empty() {
        return report;
    }
    attach::run(&DockerNetworks { docker: docker.clone() }, &ops, &mut report).await;
    for w in &report.warnings {
        tracing::warn!("network attachments: {w}");
    }
    let moved: BTreeSet<&str> = ops
        .iter()
        .map(|op| match op {
            crate::network::Op::Connect { container, .. }
            | crate::network::Op::Disconnect { container, .. } => container.as_str(),
        })
        .collect();
    for id in moved {
        refresh(&mut st.live, docker, id).await;
    }
    report
}

/// Connects, retrying with backoff until dockerd answers.
async fn connect(socket: &std::path::Path) -> Docker {
    let mut backoff = Backoff::new();
    let mut attempts = 0u32;
    loop {
        match docker::connect(socket).await {
            Ok(d) => return d,
            Err(e) => {
                attempts += 1;
                if attempts == 1 {
                    tracing::error!("{e} Network policies stay as the kernel has them until it answers.");
                }
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    fn event(typ: EventMessageTypeEnum, action: &str, id: &str, attrs: &[(&str, &str)]) -> EventMessage {
        EventMessage {
            typ: Some(typ),
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some(id.into()),
                attributes: Some(attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn events_map_to_changes() {
        use EventMessageTypeEnum::{CONTAINER, NETWORK};
        assert!(
            matches!(classify(&event(CONTAINER, "start", "c1", &[])), Some(Change::Inspect(id)) if id == "c1")
        );
        assert!(matches!(classify(&event(CONTAINER, "die", "c1", &[])), Some(Change::Stopped(_))));
        assert!(matches!(classify(&event(CONTAINER, "destroy", "c1", &[])), Some(Change::Gone(_))));
        let connect = event(NETWORK, "connect", "n1", &[("container", "c2")]);
        assert!(matches!(classify(&connect), Some(Change::Inspect(id)) if id == "c2"));
        assert!(matches!(classify(&event(NETWORK, "create", "n1", &[])), Some(Change::Networks)));
        assert!(classify(&event(CONTAINER, "create", "c1", &[])).is_none());
        let o = events_options(7);
        assert_eq!(o.since.as_deref(), Some("7"));
        assert_eq!(o.filters.unwrap()["type"], ["container", "network"]);
    }
}
