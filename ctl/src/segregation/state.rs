//! The controller's segregation state and the one place rules are derived
//! from it: applied policies + the docker0 ICC setting + the live picture
//! → [`compile_with`] → [`RuleWriter`].
//!
//! The firewall is only touched while seg has something to enforce (a
//! policy, or ICC off), plus once more to clean up after the last one goes:
//! a controller with nothing to enforce leaves the kernel's rules alone.

use super::kernel::{Applied, RuleWriter};
use super::live::HostPicture;
use super::store::Record;
use crate::firewall::{compile_cached, CompileCache, FirewallError, HostSettings, Ruleset};
use crate::policy::Policy;
use std::collections::BTreeMap;

/// Docker's name for the docker0 network.
pub const DOCKER0_NETWORK: &str = "bridge";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Diff against what this process applied last (container events).
    Fast,
    /// Read the kernel first (resync, policy and ICC changes, start).
    Full,
    /// Read the kernel and write back what differs, keeping the compiled
    /// rules: the kernel changed under us, the policies and containers did
    /// not (`clobber.rs`).
    Repair,
}

pub struct State {
    records: BTreeMap<String, Record>,
    /// The parsed policies, in name order (compiled on every update).
    policies: Vec<Policy>,
    pub docker0_icc: bool,
    pub live: HostPicture,
    pub writer: RuleWriter,
    /// The kernel holds rules this controller is responsible for.
    managed: bool,
    /// Service chains kept between compiles (a container event rebuilds
    /// only the services it touches).
    cache: CompileCache,
    pub metrics: super::metrics::FirewallMetrics,
}

impl State {
    pub fn new(loaded: Vec<(Record, Policy)>, docker0_icc: bool, writer: RuleWriter) -> State {
        let mut state = State {
            records: BTreeMap::new(),
            policies: Vec::new(),
            docker0_icc,
            live: HostPicture::default(),
            writer,
            managed: false,
            cache: CompileCache::new(),
            metrics: Default::default(),
        };
        for (record, policy) in loaded {
            state.put(record, policy);
        }
        // Rules left by the previous run are adopted, not rebuilt.
        state.managed = state.wants_rules();
        state
    }

    pub fn records(&self) -> &BTreeMap<String, Record> {
        &self.records
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    pub fn policy(&self, name: &str) -> Option<(&Record, &Policy)> {
        let record = self.records.get(name)?;
        let i = self.records.keys().position(|k| k == name)?;
        Some((record, &self.policies[i]))
    }

    /// Adds or replaces a policy (by name); returns the one it replaced.
    pub fn put(&mut self, record: Record, policy: Policy) -> Option<(Record, Policy)> {
        let old = self.take(&record.name);
        self.records.insert(record.name.clone(), record.clone());
        let i = self.records.keys().position(|k| *k == record.name).expect("just inserted");
        self.policies.insert(i, policy);
        old
    }

    /// Removes a policy; returns it.
    pub fn take(&mut self, name: &str) -> Option<(Record, Policy)> {
        let i = self.records.keys().position(|k| k == name)?;
        let record = self.records.remove(name)?;
        Some((record, self.policies.remove(i)))
    }

    /// The policies with `candidate` in place of the one of the same name.
    pub fn with_candidate(&self, name: &str, candidate: &Policy) -> Vec<Policy> {
        let mut out: Vec<Policy> = self
            .records
            .keys()
            .zip(&self.policies)
            .filter(|(k, _)| *k != name)
            .map(|(_, p)| p.clone())
            .collect();
        out.push(candidate.clone());
        out
    }

    pub fn host(&self) -> HostSettings {
        let mut host = HostSettings::default();
        if !self.docker0_icc {
            host.icc_off.insert(DOCKER0_NETWORK.to_string());
        }
        host
    }

    pub fn wants_rules(&self) -> bool {
        !self.policies.is_empty() || !self.docker0_icc
    }

    pub fn desired(&mut self) -> Ruleset {
        let host = self.host();
        compile_cached(&self.policies, self.live.inventory(), &host, &mut self.cache)
    }

    /// Whether updates do anything: seg enforces something, or must still
    /// clean up after the last thing it enforced.
    pub fn wants_rules_or_managed(&self) -> bool {
        self.wants_rules() || self.managed
    }

    /// Brings the kernel to the desired rules. `None`: nothing to do here —
    /// the inventory was never read (rules stay as they are: fail closed),
    /// or seg enforces nothing and left the kernel alone.
    pub fn reconcile(&mut self, mode: Mode) -> Result<Option<(Applied, Ruleset)>, FirewallError> {
        if !self.ready() {
            return Ok(None);
        }
        if mode == Mode::Full {
            // A full update rebuilds everything: whatever the cache may have
            // got wrong does not outlive a resync.
            self.cache = CompileCache::new();
        }
        let desired = self.desired();
        Ok(self.reconcile_to(mode, desired.clone())?.map(|applied| (applied, desired)))
    }

    /// [`State::reconcile`] with the desired rules already compiled.
    pub fn reconcile_to(&mut self, mode: Mode, desired: Ruleset) -> Result<Option<Applied>, FirewallError> {
        if !self.ready() {
            return Ok(None);
        }
        let applied = match mode {
            Mode::Fast => self.writer.fast(&desired)?,
            Mode::Full | Mode::Repair => self.writer.full(&desired)?,
        };
        self.metrics.record(mode == Mode::Repair, &applied, &desired);
        self.managed = self.wants_rules();
        Ok(Some(applied))
    }

    fn ready(&self) -> bool {
        self.live.synced() && self.wants_rules_or_managed()
    }
}
