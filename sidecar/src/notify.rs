//! The post-rotate action (`SEG_ON_ROTATE`): when the bytes of files that
//! were already on disk change, tell the app — through the controller, which
//! holds the Docker access and the host commands; the sidecar holds neither.
//! Changes within a short window are debounced into one notification.

use crate::agent::Source;
use crate::retry::{self, Backoff};
use crate::run::Ctx;
use crate::writer::SecretSink;
use seg_common::api::{Changed, NotifyRequest, PostRotate};
use seg_common::name::SecretName;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{timeout_at, Instant};

/// Attempts per notification before giving up.
pub const ATTEMPTS: u32 = 6;
/// Between attempts: the controller allows one notification per second per
/// container, so retries start near that and stay within ~15 s in all.
const BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
/// The controller runs the action before it answers (an HTTP POST to the
/// app may take a while).
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(65);
/// A notification may wait at most this many debounce windows.
const MAX_WINDOWS: u32 = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnRotate {
    pub action: PostRotate,
    /// Another service of the same project to notify.
    pub target: Option<String>,
    /// Quiet time that ends a batch of changes.
    pub debounce: Duration,
}

/// Collects changes into batches and sends one notification per batch.
pub async fn run<S: SecretSink, A: Source>(
    ctx: Arc<Ctx<S, A>>,
    on_rotate: OnRotate,
    mut changes: mpsc::UnboundedReceiver<Changed>,
) {
    let mut rng = fastrand::Rng::new();
    while let Some(batch) = next_batch(&mut changes, on_rotate.debounce).await {
        send(&ctx, &on_rotate, batch, &mut changes, &mut rng).await;
    }
}

/// Waits for a change, then gathers the ones that follow within `debounce`
/// of each other (at most [`MAX_WINDOWS`] windows in all). `None` when the
/// channel closed.
pub async fn next_batch(
    changes: &mut mpsc::UnboundedReceiver<Changed>,
    debounce: Duration,
) -> Option<BTreeMap<SecretName, u64>> {
    let first = changes.recv().await?;
    let mut batch = BTreeMap::from([(first.name, first.version)]);
    let hard = Instant::now() + debounce * MAX_WINDOWS;
    loop {
        let quiet = (Instant::now() + debounce).min(hard);
        match timeout_at(quiet, changes.recv()).await {
            Ok(Some(c)) => {
                batch.insert(c.name, c.version);
            }
            Ok(None) | Err(_) => return Some(batch),
        }
    }
}

/// Sends one notification for `batch`, retrying transient failures with
/// backoff and jitter. Changes that arrive while a retry waits join the
/// batch (newest version wins), so the retry says what is on disk now.
async fn send<S: SecretSink, A: Source>(
    ctx: &Ctx<S, A>,
    on: &OnRotate,
    mut batch: BTreeMap<SecretName, u64>,
    changes: &mut mpsc::UnboundedReceiver<Changed>,
    rng: &mut fastrand::Rng,
) {
    for attempt in 1..=ATTEMPTS {
        let secrets: Vec<Changed> =
            batch.iter().map(|(name, version)| Changed { name: name.clone(), version: *version }).collect();
        let shown: Vec<String> = secrets.iter().map(|c| format!("{} v{}", c.name, c.version)).collect();
        let req = NotifyRequest { action: on.action.to_string(), target: on.target.clone(), secrets };
        match ctx.agent.notify(&req, NOTIFY_TIMEOUT).await {
            Ok(done) => {
                tracing::info!(
                    "post-rotate {} for {}: {}",
                    done.action,
                    shown.join(", "),
                    if done.targets.is_empty() {
                        "nothing to do".to_owned()
                    } else {
                        done.targets.join(", ")
                    }
                );
                return;
            }
            Err(e) if !retry::transient(&e) => {
                tracing::error!("post-rotate {} for {} failed: {e}", req.action, shown.join(", "));
                return;
            }
            Err(e) if attempt == ATTEMPTS => {
                tracing::error!(
                    "post-rotate {} for {} failed {ATTEMPTS} times, last: {e}; giving up",
                    req.action,
                    shown.join(", ")
                );
                return;
            }
            Err(e) => {
                let wait = BACKOFF.delay(attempt, rng);
                tracing::warn!("post-rotate {} failed: {e}; retrying in {wait:?}", req.action);
                tokio::time::sleep(wait).await;
                while let Ok(c) = changes.try_recv() {
                    batch.insert(c.name, c.version);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(name: &str, version: u64) -> Changed {
        Changed { name: SecretName::parse(name).unwrap(), version }
    }

    #[tokio::test(start_paused = true)]
    async fn changes_close_together_make_one_batch() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let debounce = Duration::from_millis(500);
        tokio::spawn(async move {
            tx.send(change("a", 2)).unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            tx.send(change("b", 5)).unwrap();
            tx.send(change("a", 3)).unwrap();
            tokio::time::sleep(Duration::from_millis(900)).await;
            tx.send(change("c", 1)).unwrap();
        });
        let t0 = Instant::now();
        let first = next_batch(&mut rx, debounce).await.unwrap();
        let names: Vec<(String, u64)> = first.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        assert_eq!(names, [("a".to_owned(), 3), ("b".to_owned(), 5)]);
        assert_eq!(t0.elapsed(), Duration::from_millis(800), "300 ms + a quiet 500 ms");
        let second = next_batch(&mut rx, debounce).await.unwrap();
        assert_eq!(second.len(), 1);
        assert!(next_batch(&mut rx, debounce).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_of_changes_still_notifies_within_four_windows() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            for v in 1..100 {
                if tx.send(change("a", v)).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let t0 = Instant::now();
        next_batch(&mut rx, Duration::from_millis(500)).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_millis(2000));
    }
}
