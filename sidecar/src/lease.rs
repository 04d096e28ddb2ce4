//! Lease schedule math, free of I/O: when to renew, how long to back off,
//! when a lease has run out. Every function takes `now` explicitly (the
//! clock seam), so tests drive time by hand or with tokio's paused clock.

use std::time::Duration;
use tokio::time::Instant;

/// Renew at this fraction of the lease (like Vault Agent)...
pub const RENEW_FRACTION: f64 = 2.0 / 3.0;
/// ...spread by ±10 % so sidecars started together do not renew together.
pub const JITTER: f64 = 0.10;
/// First retry delay after a failed fetch; doubles on each further failure.
pub const BACKOFF_START: Duration = Duration::from_millis(250);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Longest time one request to the agent may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest timeout given to a request, so a retry right before the lease
/// ends still gets a chance to connect.
const MIN_FETCH_TIMEOUT: Duration = Duration::from_millis(20);

/// Delay from the start of a successful fetch to its renewal: 2/3 of the
/// lease, ±10 %.
pub fn renew_after(ttl: Duration, rng: &mut fastrand::Rng) -> Duration {
    let spread = JITTER * (2.0 * rng.f64() - 1.0);
    ttl.mul_f64(RENEW_FRACTION * (1.0 + spread))
}

/// Longest retry delay while a lease is still valid: a quarter of the lease
/// (so a short lease still gets several tries before it runs out), at most
/// [`BACKOFF_MAX`], at least [`BACKOFF_START`].
pub fn retry_cap(ttl: Duration) -> Duration {
    (ttl / 4).clamp(BACKOFF_START, BACKOFF_MAX)
}

/// Delay before retry number `failures` (1 = first failure): 250 ms doubling,
/// capped at `cap`.
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    BACKOFF_START.saturating_mul(1 << doublings).min(cap)
}

/// Where a secret stands, as far as the sidecar knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Never fetched yet.
    Pending,
    /// On disk, under a lease that has not run out.
    Live,
    /// The lease ran out without a successful renewal; the file was wiped.
    Expired,
    /// The agent refused it (e.g. `not_granted`, `not_found`); the file was
    /// wiped. Holds the agent's error code.
    Refused(String),
}

/// The lease of one secret.
#[derive(Clone, Debug)]
pub struct Lease {
    pub phase: Phase,
    /// Version on disk while `Live`.
    pub version: Option<u64>,
    pub ttl: Duration,
    /// End of the current lease while `Live`.
    pub expires_at: Option<Instant>,
    /// Failed attempts since the last success.
    pub failures: u32,
}

impl Default for Lease {
    fn default() -> Self {
        Lease { phase: Phase::Pending, version: None, ttl: Duration::ZERO, expires_at: None, failures: 0 }
    }
}

impl Lease {
    /// A fetch started at `started` succeeded and its value is on disk.
    /// The lease counts from the start of the request (conservative).
    /// Returns when to renew.
    pub fn renewed(
        &mut self,
        started: Instant,
        version: u64,
        ttl: Duration,
        rng: &mut fastrand::Rng,
    ) -> Instant {
        self.phase = Phase::Live;
        self.version = Some(version);
        self.ttl = ttl;
        self.expires_at = Some(started + ttl);
        self.failures = 0;
        started + renew_after(ttl, rng)
    }

    /// A fetch failed for a transient reason (agent down, timeout, 5xx).
    /// Returns when to retry: while the lease is valid, with a cap of
    /// [`retry_cap`] and never later than the lease's end (so the wipe is on
    /// time); otherwise capped at [`BACKOFF_MAX`].
    pub fn failed(&mut self, now: Instant) -> Instant {
        self.failures = self.failures.saturating_add(1);
        match self.valid_until(now) {
            Some(end) => (now + backoff(self.failures, retry_cap(self.ttl))).min(end),
            None => now + backoff(self.failures, BACKOFF_MAX),
        }
    }

    /// The agent refused the secret; its file has been wiped. Returns when to
    /// ask again (it may be granted later).
    pub fn refused(&mut self, now: Instant, code: &str) -> Instant {
        self.phase = Phase::Refused(code.to_owned());
        self.version = None;
        self.expires_at = None;
        self.failures = self.failures.saturating_add(1);
        now + backoff(self.failures, BACKOFF_MAX)
    }

    /// True when the file is on disk under a lease that has run out: it must
    /// be wiped now.
    pub fn must_wipe(&self, now: Instant) -> bool {
        self.phase == Phase::Live && self.expires_at.is_some_and(|end| now >= end)
    }

    /// Records that the file was wiped because the lease ran out. The
    /// backoff starts over: the app is now without its secret, so the first
    /// retries come quickly, and the agent is back within seconds after a
    /// controller restart.
    pub fn expire(&mut self) {
        self.phase = Phase::Expired;
        self.version = None;
        self.expires_at = None;
        self.failures = 0;
    }

    /// End of the lease if it is live and still valid at `now`.
    pub fn valid_until(&self, now: Instant) -> Option<Instant> {
        match (&self.phase, self.expires_at) {
            (Phase::Live, Some(end)) if now < end => Some(end),
            _ => None,
        }
    }

    /// How long a fetch started at `now` may take: [`FETCH_TIMEOUT`], but not
    /// beyond the end of a valid lease, so a hanging agent cannot keep a file
    /// on disk past its lease.
    pub fn fetch_timeout(&self, now: Instant) -> Duration {
        match self.valid_until(now) {
            Some(end) => (end - now).clamp(MIN_FETCH_TIMEOUT, FETCH_TIMEOUT),
            None => FETCH_TIMEOUT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn renewal_is_two_thirds_of_the_lease_within_ten_percent() {
        let mut rng = fastrand::Rng::with_seed(7);
        let ttl = Duration::from_secs(300);
        let (lo, hi) = (ttl.mul_f64(0.6), ttl.mul_f64(0.7334));
        let (mut min, mut max) = (ttl, Duration::ZERO);
        for _ in 0..10_000 {
            let d = renew_after(ttl, &mut rng);
            assert!(d >= lo && d <= hi, "{d:?} outside [{lo:?}, {hi:?}]");
            min = min.min(d);
            max = max.max(d);
        }
        // The jitter really spreads: both ends of the band are reached.
        assert!(min < ttl.mul_f64(0.61) && max > ttl.mul_f64(0.72), "{min:?}..{max:?}");
    }

    #[test]
    fn backoff_doubles_from_250ms_and_respects_the_cap() {
        let cap = Duration::from_secs(30);
        let seq: Vec<_> = (1..=9).map(|n| backoff(n, cap).as_millis()).collect();
        assert_eq!(seq, [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        assert_eq!(backoff(u32::MAX, cap), cap);
        assert_eq!(backoff(5, ms(700)), ms(700));
    }

    #[test]
    fn retry_cap_is_a_quarter_of_the_lease_within_bounds() {
        assert_eq!(retry_cap(Duration::from_secs(2)), ms(500));
        assert_eq!(retry_cap(Duration::from_secs(1)), ms(250));
        assert_eq!(retry_cap(ms(100)), BACKOFF_START);
        assert_eq!(retry_cap(Duration::from_secs(3600)), BACKOFF_MAX);
    }

    #[test]
    fn a_short_lease_gets_several_tries_and_the_last_lands_on_expiry() {
        let mut rng = fastrand::Rng::with_seed(1);
        let t0 = Instant::now();
        let mut lease = Lease::default();
        let renew = lease.renewed(t0, 3, Duration::from_secs(2), &mut rng);
        let end = t0 + Duration::from_secs(2);
        assert_eq!(lease.expires_at, Some(end));
        let mut now = renew;
        let mut tries = 0;
        while !lease.must_wipe(now) {
            assert!(lease.fetch_timeout(now) <= end - now + MIN_FETCH_TIMEOUT);
            now = lease.failed(now);
            assert!(now <= end, "retry scheduled after the lease ended");
            tries += 1;
        }
        assert_eq!(now, end);
        assert!(tries >= 2, "only {tries} tries before expiry");
        lease.expire();
        assert_eq!(lease.phase, Phase::Expired);
        // After expiry the backoff starts over and grows up to 30 s.
        assert_eq!(lease.failed(now) - now, BACKOFF_START);
        assert_eq!(lease.failed(now) - now, ms(500));
        for _ in 0..20 {
            now = lease.failed(now);
        }
        assert_eq!(lease.failed(now) - now, BACKOFF_MAX);
    }

    #[test]
    fn expiry_is_exact() {
        let mut rng = fastrand::Rng::with_seed(2);
        let t0 = Instant::now();
        let mut lease = Lease::default();
        lease.renewed(t0, 1, Duration::from_secs(10), &mut rng);
        assert!(!lease.must_wipe(t0 + ms(9_999)));
        assert!(lease.valid_until(t0 + ms(9_999)).is_some());
        assert!(lease.must_wipe(t0 + ms(10_000)));
        assert!(lease.valid_until(t0 + ms(10_000)).is_none());
        assert_eq!(lease.fetch_timeout(t0), FETCH_TIMEOUT);
        assert_eq!(lease.fetch_timeout(t0 + ms(8_000)), ms(2_000));
    }

    #[test]
    fn success_resets_failures_and_refusal_drops_the_lease() {
        let mut rng = fastrand::Rng::with_seed(3);
        let t0 = Instant::now();
        let mut lease = Lease::default();
        assert_eq!(lease.failed(t0) - t0, ms(250));
        assert_eq!(lease.failed(t0) - t0, ms(500));
        lease.renewed(t0, 4, Duration::from_secs(60), &mut rng);
        assert_eq!((lease.failures, lease.version), (0, Some(4)));
        let next = lease.refused(t0, "not_granted");
        assert_eq!(lease.phase, Phase::Refused("not_granted".into()));
        assert_eq!((lease.version, lease.expires_at, next - t0), (None, None, ms(250)));
        assert!(!lease.must_wipe(t0 + Duration::from_secs(3600)));
    }
}
