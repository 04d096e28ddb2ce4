//! What the firewall did, for `--metrics-addr` (registered by
//! `node::metrics`): transactions that changed the kernel and how long
//! each took, repairs after another tool changed seg's rules, and the rules
//! and chains in force.

use super::kernel::Applied;
use crate::firewall::Ruleset;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

#[derive(Clone, Debug)]
pub struct FirewallMetrics {
    pub transactions: Counter,
    /// Seconds per transaction (compute excluded: the kernel write).
    pub seconds: Histogram,
    pub repairs: Counter,
    pub rules: Gauge,
    pub chains: Gauge,
}

impl Default for FirewallMetrics {
    fn default() -> Self {
        FirewallMetrics {
            transactions: Counter::default(),
            // 100 µs … ~3 s.
            seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            repairs: Counter::default(),
            rules: Gauge::default(),
            chains: Gauge::default(),
        }
    }
}

impl FirewallMetrics {
    /// `repair`: the kernel was changed under seg (`Mode::Repair`).
    pub(super) fn record(&self, repair: bool, applied: &Applied, desired: &Ruleset) {
        self.rules.set(desired.rule_count() as i64);
        self.chains.set((desired.v4.chains.len() + desired.v6.chains.len()) as i64);
        if !applied.changed() {
            return;
        }
        self.transactions.inc();
        self.seconds.observe(applied.restore_time.as_secs_f64());
        if repair {
            self.repairs.inc();
        }
    }
}
