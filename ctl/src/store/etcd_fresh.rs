//! How long a node trusts its cache of etcd without hearing from etcd.
//!
//! A secret is handed out on a lease; a node that lost etcd (no quorum, a
//! partition) cannot know whether the secret was rotated or revoked since.
//! So it keeps serving from its cache only while the cache is younger than
//! the secret's lease, and the lease it hands out ends when that time is up:
//! a sidecar then wipes the file when etcd has been gone for one lease TTL,
//! as it does when its own node is gone. The cache counts as confirmed
//! while the watch is connected and a linearizable read answered within
//! the last [`PROBE_EVERY`] (etcd's own progress notifications come only
//! every ten minutes by default).

use etcd_client::{Client, GetOptions};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often etcd is asked whether it is there.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Staleness below this (probes a little late) does not shorten leases.
const SLACK: Duration = Duration::from_secs(3);
/// The shortest lease handed out while the cache ages (the sidecar's floor).
const MIN_LEASE_MS: u64 = 1_000;

pub(super) struct Freshness {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last confirmation.
    confirmed_ms: AtomicU64,
    watching: AtomicBool,
}

impl Freshness {
    /// Confirmed now (the store has just loaded everything).
    pub fn new() -> Arc<Freshness> {
        Arc::new(Freshness {
            epoch: Instant::now(),
            confirmed_ms: AtomicU64::new(0),
            watching: AtomicBool::new(false),
        })
    }

    pub fn set_watching(&self, on: bool) {
        self.watching.store(on, Ordering::Relaxed);
    }

    fn confirm(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.confirmed_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// Time since etcd last confirmed the cache.
    pub fn stale_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.confirmed_ms.load(Ordering::Relaxed)))
    }
}

/// The lease (ms) a value may be handed out under when the cache is
/// `stale` and the secret's lease is `ttl_ms`; `None`: not at all.
pub(super) fn lease_left(ttl_ms: u64, stale: Duration) -> Option<u64> {
    let stale_ms = stale.as_millis() as u64;
    if stale <= SLACK {
        return Some(ttl_ms);
    }
    (stale_ms < ttl_ms).then(|| (ttl_ms - stale_ms).max(MIN_LEASE_MS))
}

/// Confirms `fresh` every [`PROBE_EVERY`] while etcd answers a
/// linearizable read and the watch is connected; runs until the runtime
/// shuts down.
pub(super) async fn probe(mut client: Client, key_prefix: String, fresh: Arc<Freshness>) {
    let options = GetOptions::new().with_prefix().with_count_only();
    loop {
        let asked =
            tokio::time::timeout(PROBE_EVERY * 2, client.get(key_prefix.as_str(), Some(options.clone())));
        if matches!(asked.await, Ok(Ok(_))) && fresh.watching.load(Ordering::Relaxed) {
            fresh.confirm();
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_cache_shortens_leases_then_stops_handing_out_values() {
        let s = Duration::from_secs;
        assert_eq!(lease_left(60_000, s(0)), Some(60_000));
        assert_eq!(lease_left(60_000, s(3)), Some(60_000), "a late probe changes nothing");
        assert_eq!(lease_left(60_000, s(20)), Some(40_000), "the lease ends one TTL after the last contact");
        assert_eq!(lease_left(60_000, Duration::from_millis(59_500)), Some(1_000), "never below the floor");
        assert_eq!(lease_left(60_000, s(60)), None);
        assert_eq!(lease_left(2_000, s(4)), None, "a lease shorter than the slack ends with it");
    }

    #[test]
    fn staleness_counts_from_the_last_confirmation() {
        let f = Freshness::new();
        std::thread::sleep(Duration::from_millis(30));
        assert!(f.stale_for() >= Duration::from_millis(30));
        f.confirm();
        assert!(f.stale_for() < Duration::from_millis(30));
    }
}
