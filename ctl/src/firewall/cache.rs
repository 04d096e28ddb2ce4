//! Compiling again after one container changed, without rebuilding every
//! service's chains: a service's chains (`SEG-IN-…`, `SEG-OUT-…` with their
//! trees, port and world chains) depend only on its policy and on the
//! addresses and published ports of the containers it names, so each group
//! is kept with a hash of those inputs and reused while the hash holds.
//! The dispatch trees are rebuilt every time (they hold every container).
//!
//! The output is exactly [`super::compile_with`]'s (tested on random
//! sequences of changes); the cache only saves work. It is only valid for
//! one set of policies and host settings: [`compile_cached`] starts over
//! when those differ from last time.

use super::compile::Builder;
use super::groups::Groups;
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
        *cache = CompileCache { basis: Some((policies.to_vec(), host.clone())), ..Default::default() };
    }
    let plan = Plan::new(policies, inventory, host);
    Ruleset {
        v4: Builder::new(&plan, Family::V4, Some(&mut cache.v4)).build(),
        v6: Builder::new(&plan, Family::V6, Some(&mut cache.v6)).build(),
    }
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
    use crate::firewall::{compile_with, synth, Container, NetEndpoint, PublishedPort};
    use crate::policy::Proto;

    /// Random container starts, stops, moves and publications: the cached
    /// compile always equals the full one.
    #[test]
    fn cached_compiles_equal_full_ones() {
        let (policies, mut inv) = synth::scenario(6, 2);
        let mut cache = CompileCache::new();
        // Seeded, so a failure reproduces.
        let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
        let mut next = move |n: u64| rng.u64(..n);
        let host = HostSettings::default();
        for step in 0..120 {
            match next(4) {
                0 if !inv.containers.is_empty() => {
                    drop(inv.containers.remove(next(inv.containers.len() as u64) as usize))
                }
                1 => {
                    let (k, s) = (next(6) as usize, next(10) as usize);
                    inv.containers.push(Container {
                        id: format!("x{step}"),
                        service: Some(Identity::new(Some(&format!("p{k}")), &format!("s{s}"))),
                        endpoints: vec![NetEndpoint {
                            network: format!("p{k}_default"),
                            ipv4: Some(synth::address(k, s, 5 + next(4) as usize)),
                            ipv6: None,
                        }],
                        published: vec![],
                    });
                }
                2 if !inv.containers.is_empty() => {
                    let i = next(inv.containers.len() as u64) as usize;
                    let port = PublishedPort {
                        proto: Proto::Tcp,
                        container_port: 80,
                        host_ip: None,
                        host_port: 30000 + step,
                    };
                    inv.containers[i].published = vec![port];
                }
                _ => {
                    let i = next(inv.containers.len().max(1) as u64) as usize;
                    if let Some(c) = inv.containers.get_mut(i) {
                        c.endpoints[0].ipv4 = Some(synth::address(next(6) as usize, next(10) as usize, 9));
                    }
                }
            }
            let cached = compile_cached(&policies, &inv, &host, &mut cache);
            assert_eq!(cached, compile_with(&policies, &inv, &host), "step {step}");
        }
        assert!(!cache.is_empty());
        let icc = HostSettings { icc_off: ["p0_default".to_string()].into() };
        assert_eq!(compile_cached(&policies, &inv, &icc, &mut cache), compile_with(&policies, &inv, &icc));
        assert_eq!(
            compile_cached(&policies[1..], &inv, &icc, &mut cache),
            compile_with(&policies[1..], &inv, &icc)
        );
    }
}
