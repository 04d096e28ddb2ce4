//! Retry schedules for what the sidecar must deliver or keep open
//! (acknowledgements, post-rotate notifications, the watch stream), and
//! which failures are worth a retry. Pure: the random source is passed in,
//! so tests are deterministic.
//!
//! Lease renewals keep their own schedule (`lease`): it is bound to the end
//! of the lease, which these are not.

use crate::agent::AgentError;
use seg_common::uds_http::ClientError;
use std::io::ErrorKind;
use std::time::Duration;

/// Exponential backoff with "equal jitter": retry number `n` (1 = after the
/// first failure) waits between half and all of `start · 2^(n-1)`, capped
/// at `cap`. The jitter keeps sidecars that failed together (a controller
/// restart, a connection storm) from retrying together; the lower half
/// keeps a floor so a retry never comes at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub start: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub const fn new(start: Duration, cap: Duration) -> Backoff {
        Backoff { start, cap }
    }

    /// The full (unjittered) delay before retry number `failures`.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        self.start.saturating_mul(1 << doublings).min(self.cap)
    }

    /// The delay before retry number `failures`, jittered within the upper
    /// half of [`Backoff::ceiling`].
    pub fn delay(&self, failures: u32, rng: &mut fastrand::Rng) -> Duration {
        self.ceiling(failures).mul_f64(0.5 + 0.5 * rng.f64())
    }
}

/// The request never reached the controller: its socket is missing
/// (`ENOENT`: not started yet, or restarting), nobody listens on it
/// (`ECONNREFUSED`) or its listen backlog is full (`EAGAIN`, a connection
/// storm). Trying again costs a few microseconds and is always safe.
pub fn not_connected(e: &AgentError) -> bool {
    match e {
        AgentError::Unreachable(ClientError::Connect { cause, .. }) => {
            matches!(cause.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused | ErrorKind::WouldBlock)
        }
        _ => false,
    }
}

/// Worth sending again as it is: it never reached the controller, or the
/// controller answered "not now" (5xx, 408, 429). A 4xx refusal would be
/// refused again; a timeout or a cut connection may have been acted on, so
/// only idempotent requests (see [`idempotent_retry`]) retry those.
pub fn transient(e: &AgentError) -> bool {
    match e {
        AgentError::Failed { status, .. } => *status >= 500 || *status == 408 || *status == 429,
        other => not_connected(other),
    }
}

/// [`transient`], plus the failures where the request may have been acted
/// on but the answer was lost (timeout, cut connection): repeating an
/// idempotent request (an acknowledgement) is harmless.
pub fn idempotent_retry(e: &AgentError) -> bool {
    transient(e) || matches!(e, AgentError::Unreachable(ClientError::Timeout { .. } | ClientError::Io { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn connect(kind: ErrorKind) -> AgentError {
        AgentError::Unreachable(ClientError::Connect { path: "a.sock".into(), cause: io::Error::from(kind) })
    }

    fn answer(status: u16) -> AgentError {
        let (what, code, message) = ("x".to_owned(), "c".to_owned(), "m".to_owned());
        if (400..500).contains(&status) && status != 408 && status != 429 {
            AgentError::Refused { what, status, code, message }
        } else {
            AgentError::Failed { what, status, code, message }
        }
    }

    #[test]
    fn the_delay_doubles_within_its_jitter_band_up_to_the_cap() {
        let b = Backoff::new(ms(50), ms(500));
        let ceilings: Vec<u128> = (1..=6).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [50, 100, 200, 400, 500, 500]);
        assert_eq!(b.ceiling(u32::MAX), ms(500));
        let mut rng = fastrand::Rng::with_seed(9);
        for n in 1..=8 {
            let (mut lo, mut hi) = (Duration::MAX, Duration::ZERO);
            for _ in 0..2_000 {
                let d = b.delay(n, &mut rng);
                assert!(d >= b.ceiling(n) / 2 && d <= b.ceiling(n), "retry {n}: {d:?}");
                (lo, hi) = (lo.min(d), hi.max(d));
            }
            // The jitter really spreads over the band.
            assert!(lo < b.ceiling(n).mul_f64(0.52) && hi > b.ceiling(n).mul_f64(0.98), "{lo:?}..{hi:?}");
        }
    }

    #[test]
    fn connect_failures_and_not_now_answers_are_transient_refusals_are_not() {
        for kind in [ErrorKind::NotFound, ErrorKind::ConnectionRefused, ErrorKind::WouldBlock] {
            assert!(not_connected(&connect(kind)) && transient(&connect(kind)), "{kind:?}");
        }
        assert!(!transient(&connect(ErrorKind::PermissionDenied)));
        for status in [500, 502, 503, 408, 429] {
            assert!(transient(&answer(status)) && !not_connected(&answer(status)), "{status}");
        }
        for status in [400, 403, 404, 410] {
            assert!(!transient(&answer(status)) && !idempotent_retry(&answer(status)), "{status}");
        }
        let timeout = AgentError::Unreachable(ClientError::Timeout { path: "a".into(), timeout: ms(1) });
        assert!(!transient(&timeout) && idempotent_retry(&timeout));
        let malformed = AgentError::Unreachable(ClientError::Malformed { path: "a".into(), what: "x" });
        assert!(!idempotent_retry(&malformed), "a malformed answer would be malformed again");
    }
}
