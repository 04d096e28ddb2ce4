//! Keeps one watch stream open to the controller and forwards its events
//! to the supervisor. While it is down nothing else changes: leases are
//! renewed and discovery runs as before; a stream silent for three ping
//! intervals is taken for dead.
//!
//! Revocations travel on this stream, so it must be back as soon as the
//! controller is: a stream that ends after being up a while is reopened at
//! once; while the controller's socket cannot be connected to (restarting:
//! `ENOENT`, `ECONNREFUSED`; backlog full: `EAGAIN`) the retries are 50 ms
//! doubling to 500 ms, jittered — such a connect costs microseconds, so the
//! tight cap is cheap and a returning controller has its sidecars back
//! within half a second. A controller that answers but refuses (429, 5xx)
//! is up and busy: it gets 250 ms doubling to 5 s.

use crate::agent::{AgentError, Events, Source};
use crate::lease;
use crate::retry::{self, Backoff};
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
/// A stream that lived this long was healthy: when it ends, reopen at once.
pub const STABLE: Duration = Duration::from_secs(2);
/// Retrying while the controller's socket cannot be connected to.
pub const UNREACHABLE: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
/// Retrying a controller that answered with a refusal or failure.
pub const REFUSING: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
/// A controller without a watch route is asked again this rarely.
const UNSUPPORTED_RETRY: Duration = Duration::from_secs(60);

/// Which schedule a failure is retried on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Not connected, or a stream that ended right after opening.
    Unreachable,
    /// The controller answered with a refusal or failure.
    Refusing,
}

/// The reconnect schedule: pure, so its shape is unit-tested.
#[derive(Debug, Default)]
pub struct Reconnect {
    /// Failed attempts (and short-lived streams) since the last stable stream.
    failures: u32,
    /// Consecutive failures of one kind: the step on that kind's schedule.
    /// A controller unreachable for seconds that then answers 503 (it has
    /// just started) begins the refusal schedule at its start, not its cap.
    streak: (Option<Kind>, u32),
    /// When the current outage began (the first failure).
    down_since: Option<Instant>,
}

impl Reconnect {
    /// A stream that was open for `lived` ended at `now`: how long to wait
    /// before opening the next one.
    pub fn ended(&mut self, lived: Duration, now: Instant, rng: &mut fastrand::Rng) -> Duration {
        if lived >= STABLE {
            *self = Reconnect::default();
            return Duration::ZERO;
        }
        // Streams that end right after opening: back off as for a failure.
        self.delay(Kind::Unreachable, now, rng)
    }

    /// Opening the stream failed at `now` with `e`: how long to wait.
    pub fn failed(&mut self, e: &AgentError, now: Instant, rng: &mut fastrand::Rng) -> Duration {
        let kind = if retry::not_connected(e) { Kind::Unreachable } else { Kind::Refusing };
        self.delay(kind, now, rng)
    }

    fn delay(&mut self, kind: Kind, now: Instant, rng: &mut fastrand::Rng) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.down_since.get_or_insert(now);
        let step = if self.streak.0 == Some(kind) { self.streak.1.saturating_add(1) } else { 1 };
        self.streak = (Some(kind), step);
        let schedule = match kind {
            Kind::Unreachable => UNREACHABLE,
            Kind::Refusing => REFUSING,
        };
        schedule.delay(step, rng)
    }

    /// A stream opened at `now`; returns how long the outage lasted, if there was one.
    pub fn opened(&mut self, now: Instant) -> Option<(u32, Duration)> {
        let since = self.down_since.take()?;
        Some((self.failures, now - since))
    }

    /// Whether only the first failure of an outage should be logged loudly.
    pub fn first_failure(&self) -> bool {
        self.failures == 1
    }
}

pub async fn follow<S: SecretSink, A: Source>(
    ctx: Arc<Ctx<S, A>>,
    wants: Option<Vec<SecretName>>,
    events: mpsc::Sender<WatchEvent>,
) {
    let mut schedule = Reconnect::default();
    let mut rng = fastrand::Rng::new();
    let mut told_unsupported = false;
    loop {
        let wait = match ctx.agent.watch(wants.as_deref(), lease::FETCH_TIMEOUT).await {
            Ok(mut stream) => {
                let began = Instant::now();
                match schedule.opened(began) {
                    Some((tries, down)) => tracing::info!(
                        "push stream open again after {down:?} ({tries} failed attempt(s)): \
                         rotations and revocations arrive as they happen"
                    ),
                    None => {
                        tracing::info!("push stream open: rotations and revocations arrive as they happen")
                    }
                }
                let why = pump(&mut stream, &events).await;
                if events.is_closed() {
                    return;
                }
                let wait = schedule.ended(began.elapsed(), Instant::now(), &mut rng);
                tracing::warn!(
                    "push stream ended: {why}; reconnecting {} (leases are renewed meanwhile)",
                    if wait.is_zero() { "now".to_owned() } else { format!("in {wait:?}") }
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
                let wait = schedule.failed(&e, Instant::now(), &mut rng);
                log_failure(schedule.first_failure(), &e, wait);
                wait
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Only the first failure of an outage is a warning: while the controller
/// is down the stream is retried several times a second.
fn log_failure(first: bool, e: &AgentError, wait: Duration) {
    if first {
        tracing::warn!(
            "cannot open the push stream: {e}; retrying in {wait:?}, then with backoff until it \
             opens (leases are renewed meanwhile; further failures are logged at debug level)"
        );
    } else {
        tracing::debug!("cannot open the push stream: {e}; retrying in {wait:?}");
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

#[cfg(test)]
mod tests {
    use super::*;
    use seg_common::uds_http::ClientError;

    fn enoent() -> AgentError {
        let cause = std::io::Error::from(std::io::ErrorKind::NotFound);
        AgentError::Unreachable(ClientError::Connect { path: "agent.sock".into(), cause })
    }

    fn busy() -> AgentError {
        AgentError::Failed { what: "w".into(), status: 503, code: "c".into(), message: "m".into() }
    }

    #[test]
    fn a_stable_stream_is_reopened_at_once_and_a_missing_socket_retried_under_half_a_second() {
        let (mut s, mut rng, t0) = (Reconnect::default(), fastrand::Rng::with_seed(4), Instant::now());
        assert_eq!(s.ended(Duration::from_secs(600), t0, &mut rng), Duration::ZERO);
        let waits: Vec<Duration> = (0..12).map(|_| s.failed(&enoent(), t0, &mut rng)).collect();
        assert!(waits[0] >= Duration::from_millis(25) && waits[0] <= Duration::from_millis(50), "{waits:?}");
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(500)), "{waits:?}");
        assert!(waits[11] >= Duration::from_millis(250), "capped, not stuck low: {waits:?}");
        assert!(!s.first_failure());
        let (tries, down) = s.opened(t0 + Duration::from_secs(3)).unwrap();
        assert_eq!((tries, down), (12, Duration::from_secs(3)));
        assert_eq!(s.opened(t0), None, "the outage is reported once");
        // The next stable stream starts over: immediate again.
        assert_eq!(s.ended(STABLE, t0, &mut rng), Duration::ZERO);
        assert!(s.failed(&enoent(), t0, &mut rng) <= Duration::from_millis(50));
        assert!(s.first_failure());
    }

    #[test]
    fn streams_that_end_at_once_and_refusals_back_off() {
        let (mut s, mut rng, t0) = (Reconnect::default(), fastrand::Rng::with_seed(5), Instant::now());
        let short: Vec<Duration> = (0..3).map(|_| s.ended(Duration::from_millis(10), t0, &mut rng)).collect();
        assert!(
            short.iter().all(|w| !w.is_zero()),
            "a stream that dies at once is no reason to spin: {short:?}"
        );
        assert!(short[2] >= Duration::from_millis(100), "{short:?}");
        let refused: Vec<Duration> = (0..10).map(|_| s.failed(&busy(), t0, &mut rng)).collect();
        assert!(refused[9] >= Duration::from_millis(2_500) && refused[9] <= REFUSING.cap, "{refused:?}");
    }

    #[test]
    fn a_controller_that_answers_after_being_unreachable_starts_the_refusal_schedule_afresh() {
        // A restart: seconds of ENOENT, then 503 while the new controller
        // reaches Docker. The first refusal is retried within REFUSING.start,
        // not after the cap the long outage would otherwise have earned.
        let (mut s, mut rng, t0) = (Reconnect::default(), fastrand::Rng::with_seed(6), Instant::now());
        for _ in 0..20 {
            s.failed(&enoent(), t0, &mut rng);
        }
        assert!(s.failed(&busy(), t0, &mut rng) <= REFUSING.start);
        assert!(s.failed(&enoent(), t0, &mut rng) <= UNREACHABLE.start, "and back again");
        assert_eq!(s.opened(t0).map(|(tries, _)| tries), Some(22), "every attempt of the outage is counted");
    }
}
