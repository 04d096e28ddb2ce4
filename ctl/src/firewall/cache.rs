//! Compiling again after one container changed, without rebuilding every
//! service's chains: a service's chains (`SEG-IN-…`, `SEG-OUT-…` with their
//! trees, port and world chains) depend only on its policy and on the
//! addresses and published ports of the containers it names, so each group
//! is kept with a hash of those inputs and reused while the hash holds.
//! When only containers changed, the last output is patched instead
//! ([`super::incremental`]): only the groups that read a changed service
//! are looked at, only the changed addresses' dispatch keys recomputed.
//!
//! The output is exactly [`super::compile_with`]'s (tested on random
//! sequences of changes); the cache only saves work. It is only valid for
//! one set of policies and host settings: [`compile_cached`] starts over
//! when those differ from last time.

use super::compile::Builder;
use super::groups::Groups;
use super::incremental::{diff, patch_family, patchable, readers, Last, Readers};
use super::inventory::Inventory;
use super::plan::Plan;
use super::ruleset::Ruleset;
use super::HostSettings;
use crate::policy::{Egress, Family, Ingress, Peer, Policy};
use seg_common::api::Identity;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

/// What [`compile_cached`] keeps between calls.
#[derive(Clone, Debug, Default)]
pub struct CompileCache {
    v4: Groups,
    v6: Groups,
    /// The policies and host settings the groups were built for.
    basis: Option<(Vec<Policy>, HostSettings)>,
    /// Who reads which service, from those policies.
    readers: Readers,
    /// The last compile's inputs and output, to patch.
    last: Option<Last>,
    /// Compiles done by patching the last output (tests, benchmark).
    patched: u64,
}

impl CompileCache {
    pub fn new() -> CompileCache {
        CompileCache::default()
    }

    /// Groups kept (both families), for tests and the benchmark.
    pub fn len(&self) -> usize {
        self.v4.groups.len() + self.v6.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many compiles patched the last output rather than building anew.
    pub fn patched(&self) -> u64 {
        self.patched
    }
}

/// [`super::compile_with`], reusing the chains of services whose inputs did
/// not change since the last call with the same `cache`.
pub fn compile_cached(
    policies: &[Policy],
    inventory: &Inventory,
    host: &HostSettings,
    cache: &mut CompileCache,
) -> Ruleset {
    let same = cache.basis.as_ref().is_some_and(|(p, h)| p.as_slice() == policies && h == host);
    if !same {
        let basis = Some((policies.to_vec(), host.clone()));
        *cache = CompileCache { basis, readers: readers(policies), ..Default::default() };
    }
    let plan = Plan::new(policies, inventory, host);
    if let Some(rs) = patch(&plan, inventory, cache) {
        cache.patched += 1;
        return rs;
    }
    let (v4, k4) = Builder::new(&plan, Family::V4, Some(&mut cache.v4)).build_keys();
    let (v6, k6) = Builder::new(&plan, Family::V6, Some(&mut cache.v6)).build_keys();
    cache.last = Some(Last {
        containers: inventory.containers.clone(),
        networks: inventory.networks.clone(),
        guarded: plan.guarded.clone(),
        icc_only: plan.icc_only.clone(),
        tables: [v4.clone(), v6.clone()],
        keys: [k4, k6],
    });
    Ruleset { v4, v6 }
}

/// The last output patched for the containers that changed since; `None`
/// when it cannot be (then the full way rebuilds what it must).
fn patch(plan: &Plan, inventory: &Inventory, cache: &mut CompileCache) -> Option<Ruleset> {
    let mut last = cache.last.take()?;
    let (kept, changes) = diff(std::mem::take(&mut last.containers), &inventory.containers);
    if !patchable(&last, plan, inventory, &changes) {
        return None;
    }
    let (v4, k4) = patch_family(plan, Family::V4, &mut cache.v4, &mut last, &changes, &cache.readers)?;
    let (v6, k6) = patch_family(plan, Family::V6, &mut cache.v6, &mut last, &changes, &cache.readers)?;
    drop(changes);
    last.containers = kept;
    last.guarded = plan.guarded.clone();
    last.tables = [v4.clone(), v6.clone()];
    last.keys = [k4, k6];
    cache.last = Some(last);
    Some(Ruleset { v4, v6 })
}

impl Builder<'_, '_, '_> {
    /// Everything `SEG-IN-<id>` is built from besides the (fixed) policy.
    pub(super) fn ingress_fingerprint(&self, id: &Identity) -> u64 {
        let mut h = DefaultHasher::new();
        let (policy, spec) = self.plan.specs[id];
        if let Ingress::Allow(rules) = &spec.ingress {
            for rule in rules {
                for peer in &rule.from.0 {
                    self.hash_peer(policy, peer, &mut h);
                    if *peer == Peer::World {
                        self.hash_world(id, &mut h);
                    }
                }
            }
        }
        h.finish()
    }

    /// Everything `SEG-OUT-<id>` is built from besides the policy.
    pub(super) fn egress_fingerprint(&self, id: &Identity) -> u64 {
        let mut h = DefaultHasher::new();
        let (policy, spec) = self.plan.specs[id];
        if let Egress::Allow(peers) = &spec.egress {
            for peer in peers {
                self.hash_peer(policy, peer, &mut h);
            }
        }
        h.finish()
    }

    /// The addresses a peer stands for in this family.
    fn hash_peer(&self, policy: &Policy, peer: &Peer, h: &mut DefaultHasher) {
        0xa5u8.hash(h);
        if let Peer::Service(r) = peer {
            let (project, service) = policy.resolve(r);
            for c in self.plan.members(&Identity { project, service }) {
                c.endpoints.iter().filter_map(|e| e.ip(self.family)).for_each(|ip| ip.hash(h));
            }
        }
    }

    /// What the world chain depends on: the service's published ports and
    /// addresses, and every bridge ("not from a container").
    fn hash_world(&self, id: &Identity, h: &mut DefaultHasher) {
        for c in self.plan.members(id) {
            c.published.hash(h);
            c.endpoints.iter().filter_map(|e| e.ip(self.family)).for_each(|ip| ip.hash(h));
        }
        self.bridges_hash().hash(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::fixture::random_change;
    use crate::firewall::{compile_with, synth};

    /// Random container starts, stops, moves and publications (IPv4 and
    /// IPv6, one to three at once): the cached compile, which mostly patches
    /// the last output, always equals the full one.
    #[test]
    fn cached_compiles_equal_full_ones() {
        let (policies, mut inv) = synth::scenario(6, 2);
        let mut cache = CompileCache::new();
        // Seeded, so a failure reproduces.
        let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
        let host = HostSettings::default();
        for step in 0..400u16 {
            for _ in 0..rng.usize(1..=3) {
                random_change(&mut inv, &mut rng, step);
            }
            let cached = compile_cached(&policies, &inv, &host, &mut cache);
            assert_eq!(cached, compile_with(&policies, &inv, &host), "step {step}");
        }
        assert!(cache.patched() > 300, "most compiles patch: {}", cache.patched());
        assert!(!cache.is_empty());
        let icc = HostSettings { icc_off: ["p0_default".to_string()].into() };
        assert_eq!(compile_cached(&policies, &inv, &icc, &mut cache), compile_with(&policies, &inv, &icc));
        assert_eq!(
            compile_cached(&policies[1..], &inv, &icc, &mut cache),
            compile_with(&policies[1..], &inv, &icc)
        );
    }
}
