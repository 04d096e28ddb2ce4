//! Keeps one watch stream open to the controller and forwards its events
//! to the supervisor. Reconnects with backoff (250 ms doubling to 30 s,
//! back to 250 ms after a stream that stayed up); a stream silent for three
//! ping intervals is taken for dead. While it is down nothing else changes:
//! leases are renewed and discovery runs as before.

use crate::agent::{AgentError, Events, Source};
use crate::lease;
use crate::run::Ctx;
use crate::writer::SecretSink;
use seg_common::api::WatchEvent;
use seg_common::name::SecretName;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Until the hello says otherwise, a stream silent this long is dead.
const DEFAULT_IDLE: Duration = Duration::from_secs(45);
/// A stream that lived this long was healthy: reconnect quickly.
const HEALTHY: Duration = Duration::from_secs(30);
/// A controller without a watch route is asked again this rarely.
const UNSUPPORTED_RETRY: Duration = Duration::from_secs(60);

pub async fn follow<S: SecretSink, A: Source>(
    ctx: Arc<Ctx<S, A>>,
    wants: Option<Vec<SecretName>>,
    events: mpsc::Sender<WatchEvent>,
) {
    let mut failures = 0u32;
    let mut told_unsupported = false;
    loop {
        let wait = match ctx.agent.watch(wants.as_deref(), lease::FETCH_TIMEOUT).await {
            Ok(mut stream) => {
                let began = Instant::now();
                tracing::info!("push stream open: rotations and revocations arrive as they happen");
                let why = pump(&mut stream, &events).await;
                if events.is_closed() {
                    return;
                }
                failures = if began.elapsed() >= HEALTHY { 1 } else { failures.saturating_add(1) };
                let wait = lease::backoff(failures, lease::BACKOFF_MAX);
                tracing::warn!(
                    "push stream ended: {why}; reconnecting in {wait:?} (leases are renewed meanwhile)"
                );
                wait
            }
            Err(e) if e.status() == Some(404) => {
                if !told_unsupported {
                    tracing::info!("the controller has no watch stream ({e}); relying on lease renewals");
                    told_unsupported = true;
                }
                UNSUPPORTED_RETRY
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = lease::backoff(failures, lease::BACKOFF_MAX);
                log_failure(failures, &e, wait);
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

fn log_failure(failures: u32, e: &AgentError, wait: Duration) {
    if failures == 1 {
        tracing::warn!(
            "cannot open the push stream: {e}; retrying in {wait:?} (leases are renewed meanwhile)"
        );
    } else {
        tracing::debug!("cannot open the push stream (attempt {failures}): {e}; retrying in {wait:?}");
    }
}

/// Forwards events until the stream ends; returns why it ended.
async fn pump(stream: &mut impl Events, events: &mpsc::Sender<WatchEvent>) -> String {
    let mut idle = DEFAULT_IDLE;
    loop {
        let event = match tokio::time::timeout(idle, stream.next_event()).await {
            Err(_) => return format!("nothing arrived for {idle:?}, not even a ping"),
            Ok(Err(e)) => return e.to_string(),
            Ok(Ok(None)) => return "the controller closed it".to_owned(),
            Ok(Ok(Some(event))) => event,
        };
        if let WatchEvent::Hello { ping_ms, .. } = &event {
            idle =
                (Duration::from_millis(*ping_ms) * 3).clamp(Duration::from_secs(3), Duration::from_secs(600));
        }
        if events.send(event).await.is_err() {
            return "the sidecar is stopping".to_owned();
        }
    }
}
