//! Acknowledgements: telling the controller which version of each secret is
//! on disk (`POST /v1/ack`), which is what `segctl secret rotate --wait`
//! waits for. An acknowledgement that could not be delivered for a
//! transient reason (the controller restarting, its listen backlog full, a
//! 5xx) is retried with backoff and jitter, a bounded number of times.
//! Newest wins: one pending acknowledgement per secret, so an ack of v5
//! still waiting for its retry when v6 is stored is replaced by v6, not
//! queued behind it.

use crate::agent::Source;
use crate::retry::{self, Backoff};
use crate::run::Ctx;
use crate::writer::SecretSink;
use seg_common::api::Changed;
use seg_common::name::SecretName;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

/// An acknowledgement is one small request.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Retries start quickly (a full backlog clears in milliseconds) and stay
/// short: `rotate --wait` is waiting.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
/// Attempts per version (about 10 s in all) before giving up until the
/// next renewal or stream reconnect asks again.
pub const ATTEMPTS: u32 = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    version: u64,
    /// Failed attempts so far.
    failures: u32,
    due: Instant,
}

/// What happens after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Tried again after this long.
    In(Duration),
    /// Another version was stored meanwhile; it is sent instead.
    Superseded,
    /// [`ATTEMPTS`] reached.
    GaveUp,
}

/// The acknowledgements waiting to be sent, one per secret.
#[derive(Debug, Default)]
pub struct AckQueue(BTreeMap<SecretName, Pending>);

impl AckQueue {
    /// `version` of `name` is on disk: send it now, replacing any other
    /// pending version. The same version already pending keeps its
    /// schedule, so frequent renewals cannot defeat the backoff.
    pub fn want(&mut self, name: SecretName, version: u64, now: Instant) {
        if self.0.get(&name).is_some_and(|p| p.version == version) {
            return;
        }
        self.0.insert(name, Pending { version, failures: 0, due: now });
    }

    /// When the next acknowledgement is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.0.values().map(|p| p.due).min()
    }

    /// Removes and returns one acknowledgement due at `now`: name, version
    /// and how many attempts already failed.
    pub fn take_due(&mut self, now: Instant) -> Option<(SecretName, u64, u32)> {
        let name = self.0.iter().find(|(_, p)| p.due <= now).map(|(n, _)| n.clone())?;
        let p = self.0.remove(&name)?;
        Some((name, p.version, p.failures))
    }

    /// The attempt at `version` of `name` (taken after `failures` failed
    /// ones) failed transiently: schedules the next one unless a newer
    /// version is pending or the attempts are used up.
    pub fn failed(
        &mut self,
        name: SecretName,
        version: u64,
        failures: u32,
        now: Instant,
        rng: &mut fastrand::Rng,
    ) -> Retry {
        if self.0.contains_key(&name) {
            return Retry::Superseded;
        }
        let failures = failures.saturating_add(1);
        if failures >= ATTEMPTS {
            return Retry::GaveUp;
        }
        let wait = BACKOFF.delay(failures, rng);
        self.0.insert(name, Pending { version, failures, due: now + wait });
        Retry::In(wait)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Sends acknowledgements as versions are stored (from `rx`), retrying
/// transient failures.
pub async fn run<S: SecretSink, A: Source>(ctx: Arc<Ctx<S, A>>, mut rx: mpsc::UnboundedReceiver<Changed>) {
    let mut queue = AckQueue::default();
    let mut rng = fastrand::Rng::new();
    loop {
        let due = queue.next_due();
        let wake = async {
            match due {
                Some(at) => sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            got = rx.recv() => match got {
                Some(Changed { name, version }) => queue.want(name, version, Instant::now()),
                None => return,
            },
            () = wake => send_due(&ctx, &mut queue, &mut rng).await,
        }
    }
}

async fn send_due<S: SecretSink, A: Source>(ctx: &Ctx<S, A>, queue: &mut AckQueue, rng: &mut fastrand::Rng) {
    while let Some((name, version, failures)) = queue.take_due(Instant::now()) {
        // Wiped, replaced or accepted meanwhile: nothing to say any more.
        if !ctx.ack_due(&name, version) {
            continue;
        }
        let e = match ctx.agent.ack(&name, version, ACK_TIMEOUT).await {
            Ok(()) => {
                ctx.acked(&name, version);
                if failures > 0 {
                    tracing::info!("acknowledged {name} v{version} after {failures} failed attempt(s)");
                }
                continue;
            }
            Err(e) => e,
        };
        if !retry::idempotent_retry(&e) {
            tracing::warn!("{e}; not retried");
            continue;
        }
        match queue.failed(name.clone(), version, failures, Instant::now(), rng) {
            Retry::In(wait) if failures == 0 => {
                tracing::info!("acknowledging {name} v{version} failed: {e}; retrying in {wait:?}")
            }
            Retry::In(wait) => tracing::debug!(
                "acknowledging {name} v{version} failed (attempt {}): {e}; retrying in {wait:?}",
                failures + 1
            ),
            Retry::Superseded => {
                tracing::debug!("acknowledging {name} v{version} failed: {e}; a newer one follows")
            }
            Retry::GaveUp => tracing::warn!(
                "acknowledging {name} v{version} failed {ATTEMPTS} times, last: {e}; \
                 it is sent again at the next renewal or stream reconnect"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> SecretName {
        SecretName::parse(s).unwrap()
    }

    #[test]
    fn the_newest_version_replaces_a_pending_one() {
        let (mut q, mut rng, t0) = (AckQueue::default(), fastrand::Rng::with_seed(1), Instant::now());
        q.want(name("db"), 5, t0);
        let (n, v, f) = q.take_due(t0).unwrap();
        let Retry::In(wait) = q.failed(n, v, f, t0, &mut rng) else { panic!("not retried") };
        assert!(q.take_due(t0).is_none(), "a retry is not due at once");
        // v6 is stored while v5 waits for its retry: v6 goes now, alone.
        q.want(name("db"), 6, t0 + wait / 2);
        assert_eq!(q.len(), 1);
        assert_eq!(q.take_due(t0 + wait / 2), Some((name("db"), 6, 0)));
        // v5 fails while v6 is pending: v5 is dropped, not retried.
        q.want(name("db"), 7, t0);
        assert_eq!(q.failed(name("db"), 6, 0, t0, &mut rng), Retry::Superseded);
        assert_eq!(q.take_due(t0), Some((name("db"), 7, 0)));
    }

    #[test]
    fn retries_back_off_with_jitter_and_are_bounded() {
        let (mut q, mut rng) = (AckQueue::default(), fastrand::Rng::with_seed(2));
        let mut now = Instant::now();
        q.want(name("db"), 1, now);
        let mut waits = Vec::new();
        loop {
            let due = q.next_due().unwrap();
            if due > now {
                assert!(q.take_due(due - Duration::from_millis(1)).is_none(), "taken before it was due");
            }
            now = due;
            let (n, v, f) = q.take_due(now).unwrap();
            match q.failed(n, v, f, now, &mut rng) {
                Retry::In(w) => waits.push(w),
                Retry::GaveUp => break,
                Retry::Superseded => panic!("nothing newer"),
            }
            // The same version asked for again (a renewal) keeps the schedule.
            q.want(name("db"), 1, now);
            assert_eq!(q.next_due(), Some(now + *waits.last().unwrap()), "a renewal reset the backoff");
        }
        assert_eq!(waits.len() as u32, ATTEMPTS - 1);
        for (i, w) in waits.iter().enumerate() {
            let ceiling = BACKOFF.ceiling(i as u32 + 1);
            assert!(*w >= ceiling / 2 && *w <= ceiling, "retry {}: {w:?}", i + 1);
        }
        let total: Duration = waits.iter().sum();
        assert!(total < Duration::from_secs(15), "{total:?}");
        assert!(q.next_due().is_none(), "given up: nothing left");
    }
}
