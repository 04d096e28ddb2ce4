//! Following Docker: the shared link's notices — a full resync at each gap
//! (the first one starts the periodic resync), then container and network
//! events one batch at a time.
//!
//! An event costs one inspect (for a start or a network change) and a fast
//! update: only the chains that changed are written, against the ruleset
//! applied last — no `iptables-save` per event. The resync reads
//! everything (two list calls and the live rules) and repairs what another
//! tool changed. When the event stream breaks (dockerd restarting), the
//! link re-opens it with backoff, replaying from a second before, and the
//! gap it announces brings a resync, since events were missed in between.

use super::kernel::Applied;
use super::live::{self, HostPicture};
use super::state::{Mode, State};
use super::{attach, blocking, Segregation};
use crate::docker::DockerNetworks;
use crate::docker::{Event, Kind, Notice, Subscription};
use bollard::Docker;
use std::collections::BTreeSet;
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

fn classify(ev: &Event) -> Option<Change> {
    match (ev.kind, ev.action.as_str()) {
        (Kind::Container, "start") => Some(Change::Inspect(ev.actor.clone())),
        (Kind::Container, "die") => Some(Change::Stopped(ev.actor.clone())),
        (Kind::Container, "destroy") => Some(Change::Gone(ev.actor.clone())),
        (Kind::Network, "connect" | "disconnect") => Some(Change::Inspect(ev.container.clone()?)),
        (Kind::Network, "create" | "destroy") => Some(Change::Networks),
        _ => None,
    }
}

/// Takes what is already waiting after `first`, up to [`BATCH`]; a gap met
/// on the way ends the batch and is handed back.
fn take_batch(first: Event, events: &mut Subscription) -> (Vec<(Event, Instant)>, Option<Notice>) {
    let mut batch = vec![(first, Instant::now())];
    while batch.len() < BATCH {
        match events.try_next() {
            Some(Notice::Event(ev)) => batch.push((ev, Instant::now())),
            other => return (batch, other),
        }
    }
    (batch, None)
}

fn now_unix() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

impl Segregation {
    /// Follows the link's notices for the life of the process.
    pub(super) fn follow_events(self: &Arc<Self>, mut events: Subscription) -> tokio::task::JoinHandle<()> {
        let seg = self.clone();
        tokio::spawn(async move {
            let mut resyncing = false;
            let mut next = events.next().await;
            while let Some(notice) = next.take() {
                next = match notice {
                    Notice::Gap => {
                        seg.after_gap(&mut resyncing).await;
                        events.next().await
                    }
                    Notice::Event(first) => {
                        let (batch, after) = take_batch(first, &mut events);
                        seg.on_events(batch).await;
                        match after {
                            Some(notice) => Some(notice),
                            None => events.next().await,
                        }
                    }
                };
            }
        })
    }

    /// Events were missed (or this is the first subscription): re-read
    /// everything. The first gap also starts the periodic resync.
    async fn after_gap(self: &Arc<Self>, resyncing: &mut bool) {
        if *resyncing {
            self.resync("reconnect").await;
        } else {
            self.resync("start").await;
            drop(tokio::spawn(self.clone().resync_loop()));
            *resyncing = true;
        }
    }

    /// Uses an already connected client (tests, benchmark); resyncs once.
    pub async fn attach_docker(self: &Arc<Self>, docker: Docker) {
        self.docker.set(docker);
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

    /// Applies a batch of events to the picture, then one fast update.
    async fn on_events(&self, batch: Vec<(Event, Instant)>) {
        let Some(docker) = self.docker() else { return };
        let docker = &docker;
        let mut st = self.state.lock().await;
        if !st.wants_rules_or_managed() {
            return;
        }
        let mut started = BTreeSet::new();
        let mut changed = false;
        for (ev, _) in &batch {
            match classify(ev) {
                Some(Change::Inspect(id)) => {
                    if ev.action == "start" {
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

    fn record_batch(&self, batch: Vec<(Event, Instant)>, compile: Duration, applied: &Applied) {
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
            self.record_timing(EventTiming {
                action: format!("{} {}", ev.kind.as_str(), ev.action),
                container,
                event_at: ev.at,
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
async fn refresh(live: &mut HostPicture, docker: &Docker, id: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::fake::{container, network};

    #[test]
    fn events_map_to_changes() {
        assert!(matches!(classify(&container("start", "c1")), Some(Change::Inspect(id)) if id == "c1"));
        assert!(matches!(classify(&container("die", "c1")), Some(Change::Stopped(_))));
        assert!(matches!(classify(&container("destroy", "c1")), Some(Change::Gone(_))));
        let connect = network("connect", "n1", Some("c2"));
        assert!(matches!(classify(&connect), Some(Change::Inspect(id)) if id == "c2"));
        assert!(matches!(classify(&network("create", "n1", None)), Some(Change::Networks)));
        assert!(matches!(classify(&network("destroy", "n1", None)), Some(Change::Networks)));
        // Attestation's events reach every subscriber; they change no rule.
        for action in ["create", "stop", "rename"] {
            assert!(classify(&container(action, "c1")).is_none(), "{action}");
        }
    }
}
