//! Compiling again after a few containers changed, in work proportional to
//! what changed: the last compile's output is patched, never rebuilt.
//!
//! A container start, stop or change touches three things of the output,
//! and only these (everything else is a function of the policies, the host
//! settings and the networks, which must be the same as last time):
//!
//! - the dispatch keys of its addresses (`SEG-EGRESS` / `SEG-INGRESS`),
//!   recomputed from the containers that claim each address with the
//!   compiler's own [`Builder::host_action`];
//! - the service groups that read its service's containers: those whose
//!   policy names the service as a peer, and its own world chain
//!   ([`readers`], derived from the policies once), rebuilt by the
//!   compiler's own group builders;
//! - the chains of the two dispatch trees on its addresses' paths (the
//!   tree is rebuilt from the patched keys, every unchanged chain reused).
//!
//! Whatever could change more than that (a network's guarded or ICC state,
//! an address that is also a subnet key, a tree appearing or vanishing)
//! sends the compile the full way. The output is exactly
//! [`super::compile_with`]'s: `cache.rs` tests it on random sequences.

use super::compile::Builder;
use super::groups::Groups;
use super::inventory::{Container, Inventory, Network};
use super::naming::{EGRESS, INGRESS};
use super::plan::Plan;
use super::ruleset::Table;
use super::trie::{Action, Dir};
use crate::policy::{Cidr, Egress, Family, Ingress, Peer, Policy};
use seg_common::api::Identity;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

/// One family's dispatch keys: egress (by source), ingress (by destination);
/// each sorted, one action per key.
pub(super) type Keys = [Vec<(Cidr, Action)>; 2];

/// Which service groups read a service's containers, by the service read:
/// `(true, X)` is `SEG-IN-X` (with its world chain), `(false, X)` `SEG-OUT-X`.
pub(super) type Readers = HashMap<Identity, Vec<(bool, Identity)>>;

/// What the last compile saw and made, for the next one to patch.
#[derive(Clone, Debug, Default)]
pub(super) struct Last {
    pub containers: Vec<Container>,
    pub networks: Vec<Network>,
    pub guarded: BTreeSet<String>,
    pub icc_only: BTreeSet<String>,
    /// The output, by family (v4, v6), and its dispatch keys.
    pub tables: [Table; 2],
    pub keys: [Keys; 2],
}

/// The service groups that read each service, from the policies alone
/// (the first policy naming a service governs it, as in [`Plan`]).
pub(super) fn readers(policies: &[Policy]) -> Readers {
    let mut out: Readers = HashMap::new();
    let mut seen = BTreeSet::new();
    for policy in policies {
        for (key, spec) in &policy.services {
            let id = Identity::new(policy.project(), &key.0);
            if !seen.insert(id.clone()) {
                continue;
            }
            let mut read = |peer: &Peer, ingress: bool| {
                let target = match peer {
                    Peer::World if ingress => id.clone(),
                    Peer::Service(r) => {
                        let (project, service) = policy.resolve(r);
                        Identity { project, service }
                    }
                    _ => return,
                };
                out.entry(target).or_default().push((ingress, id.clone()));
            };
            if let Ingress::Allow(rules) = &spec.ingress {
                rules.iter().flat_map(|r| &r.from.0).for_each(|p| read(p, true));
            }
            if let Egress::Allow(peers) = &spec.egress {
                peers.iter().for_each(|p| read(p, false));
            }
        }
    }
    out
}

/// A container as it was and as it is (`None`: not there).
pub(super) type Change<'n> = (Option<Container>, Option<&'n Container>);

/// The containers that differ between `old` (taken) and `new`, and `old`
/// made equal to `new` again. The controller's picture keeps its order
/// (replaced in place, appended, removed), so a walk in step finds the
/// changes; anything else comes out as removed and added again, which costs
/// more but is still right.
pub(super) fn diff<'n>(old: Vec<Container>, new: &'n [Container]) -> (Vec<Container>, Vec<Change<'n>>) {
    const LOOK: usize = 64;
    let (mut kept, mut changes) = (Vec::with_capacity(new.len()), Vec::new());
    let mut old = old.into_iter().peekable();
    let mut pending: std::collections::VecDeque<Container> = Default::default();
    let mut j = 0;
    while j < new.len() {
        if pending.is_empty() {
            pending.extend(old.next());
        }
        let Some(front) = pending.front() else {
            changes.push((None, Some(&new[j])));
            kept.push(new[j].clone());
            j += 1;
            continue;
        };
        if front.id == new[j].id {
            let o = pending.pop_front().expect("front");
            if o == new[j] {
                kept.push(o);
            } else {
                changes.push((Some(o), Some(&new[j])));
                kept.push(new[j].clone());
            }
            j += 1;
            continue;
        }
        // A removed run: the new container is a little further on.
        while pending.len() < LOOK && pending.back().is_some_and(|c| c.id != new[j].id) {
            let Some(next) = old.next() else { break };
            pending.push_back(next);
        }
        if pending.back().is_some_and(|c| c.id == new[j].id) {
            let removed = pending.len() - 1;
            changes.extend(pending.drain(..removed).map(|c| (Some(c), None)));
        } else {
            changes.push((pending.pop_front(), None));
            changes.push((None, Some(&new[j])));
            kept.push(new[j].clone());
            j += 1;
        }
    }
    changes.extend(pending.into_iter().chain(old).map(|c| (Some(c), None)));
    (kept, changes)
}

/// Whether the incremental way may patch last time's output: same
/// networks, same ICC-only networks, no changed container on an ICC-off
/// network (its ICC chain may come or go), and no ICC-off network guarded
/// or unguarded. (A network is guarded once a container of a named service
/// is on it: the first one's start does that.)
pub(super) fn patchable(last: &Last, plan: &Plan, inv: &Inventory, changes: &[Change]) -> bool {
    let icc = |c: &Container| c.endpoints.iter().any(|e| plan.icc_off.contains(&e.network));
    last.networks == inv.networks
        && last.icc_only == plan.icc_only
        && !flipped(last, plan).any(|n| plan.icc_off.contains(n))
        && !changes.iter().any(|(o, n)| o.as_ref().is_some_and(icc) || n.is_some_and(icc))
}

/// The networks guarded last time or now, not both.
fn flipped<'l>(last: &'l Last, plan: &'l Plan) -> impl Iterator<Item = &'l String> + 'l {
    last.guarded.symmetric_difference(&plan.guarded)
}

/// A network guarded or unguarded since last time: its subnets' keys
/// (`DROP` while guarded by any network) and the addresses of every
/// container on it (known ones `RETURN` while guarded) are recomputed.
fn guard_changes(last: &Last, plan: &Plan, family: Family, keys: &mut Keys, addrs: &mut BTreeSet<IpAddr>) {
    let guarded: BTreeSet<Cidr> = plan.guarded_subnets(family).into_iter().collect();
    for name in flipped(last, plan) {
        let subnets = plan.inv.network(name).into_iter().flat_map(|n| n.subnets.iter());
        for subnet in subnets.filter(|s| s.family() == family) {
            let action = guarded.contains(subnet).then_some(Action::Drop);
            keys.iter_mut().for_each(|k| set_key(k, *subnet, action.clone()));
        }
        let on = plan.inv.containers.iter().flat_map(|c| &c.endpoints).filter(|e| e.network == *name);
        addrs.extend(on.filter_map(|e| e.ip(family)));
    }
}

/// One family's output patched for `changes`; `None`: take the full way.
pub(super) fn patch_family(
    plan: &Plan,
    family: Family,
    groups: &mut Groups,
    last: &mut Last,
    changes: &[Change],
    readers: &Readers,
) -> Option<(Table, Keys)> {
    let i = usize::from(family == Family::V6);
    let was_empty = last.keys[i].each_ref().map(Vec::is_empty);
    let mut keys = std::mem::take(&mut last.keys[i]);
    let mut addrs = changed_addrs(changes, family);
    guard_changes(last, plan, family, &mut keys, &mut addrs);
    if last.tables[i].chains.is_empty() {
        // Nothing in this family, and nothing to add (else: the full way).
        let nothing = addrs.is_empty() && keys.iter().all(Vec::is_empty);
        return nothing.then(|| (Table::default(), keys));
    }
    // An address that is also a subnet key (a /32 network) is folded with
    // the subnet's action: the full way knows the order.
    let subnets = plan.guarded_subnets(family).into_iter().chain(last_subnets(last, plan, family));
    let subnets: BTreeSet<Cidr> = subnets.filter(Cidr::is_host).collect();
    let icc_subnets = plan.icc_only_subnets(family).into_iter().map(|(_, s)| s);
    if addrs.iter().any(|ip| subnets.contains(&Cidr::host(*ip))) || icc_subnets.count() > 0 {
        return None;
    }
    let old_trees: Vec<String> =
        [EGRESS, INGRESS].iter().flat_map(|r| groups.trees.get(*r)).flat_map(|m| m.keys().cloned()).collect();
    let mut b = Builder::new(plan, family, Some(groups));
    rebuild_groups(&mut b, plan, changes, readers);
    for ip in &addrs {
        for (dir, keys) in [Dir::Src, Dir::Dst].into_iter().zip(keys.iter_mut()) {
            set_key(keys, Cidr::host(*ip), b.host_action(*ip, dir));
        }
    }
    if keys.iter().zip(was_empty).any(|(new, old)| new.is_empty() != old) {
        return None;
    }
    for ((root, dir), keys) in [(EGRESS, Dir::Src), (INGRESS, Dir::Dst)].into_iter().zip(&keys) {
        if !keys.is_empty() {
            b.tree(root, dir, keys);
        }
    }
    let (chains, fresh, replaced) = b.into_patch();
    let mut out = std::mem::take(&mut last.tables[i]);
    let orphans: BTreeSet<String> = replaced.iter().flatten().map(|(n, _)| n.clone()).collect();
    for name in old_trees.iter().chain(&orphans) {
        out.chains.remove(name);
    }
    groups.groups.extend(fresh.groups);
    // A port chain is shared by the groups with that port set: it goes
    // only when no group makes it any more.
    for name in orphans.iter().filter(|n| n.starts_with("SEG-P-") && !chains.contains_key(*n)) {
        if let Some(rules) = groups.groups.values().flat_map(|(_, c)| c).find(|(n, _)| n == name) {
            out.chains.insert(name.clone(), rules.1.clone());
        }
    }
    out.chains.extend(chains);
    Some((out, keys))
}

/// Rebuilds (or finds unchanged) every group that reads a changed service.
fn rebuild_groups<'p>(b: &mut Builder<'p, '_, '_>, plan: &'p Plan, changes: &[Change], readers: &Readers) {
    let mut done = BTreeSet::new();
    let services = changes.iter().flat_map(|(o, n)| [o.as_ref(), *n]).flatten();
    for id in services.filter_map(|c| c.service.as_ref()) {
        for (ingress, reader) in readers.get(id).into_iter().flatten() {
            if !done.insert((*ingress, reader)) {
                continue;
            }
            let Some((reader, (_, spec))) = plan.specs.get_key_value(reader) else { continue };
            if *ingress && spec.ingress != Ingress::Any {
                b.service_ingress(reader);
            } else if !*ingress && spec.egress != Egress::Any {
                b.service_egress(reader);
            }
        }
    }
}

/// The subnets of the networks guarded last time, in one family.
fn last_subnets<'l>(last: &'l Last, plan: &'l Plan, family: Family) -> impl Iterator<Item = Cidr> + 'l {
    let nets = last.guarded.iter().filter_map(|n| plan.inv.network(n));
    nets.flat_map(|n| n.subnets.iter().copied()).filter(move |s| s.family() == family)
}

/// The addresses of one family that changed containers had or have.
fn changed_addrs(changes: &[Change], family: Family) -> BTreeSet<IpAddr> {
    let all = changes.iter().flat_map(|(o, n)| [o.as_ref(), *n]).flatten();
    all.flat_map(|c| c.endpoints.iter().filter_map(|e| e.ip(family))).collect()
}

/// Puts `action` on `key` in sorted `keys` (`None`: no key there).
fn set_key(keys: &mut Vec<(Cidr, Action)>, key: Cidr, action: Option<Action>) {
    match (keys.binary_search_by(|(k, _)| k.cmp(&key)), action) {
        (Ok(at), Some(a)) => keys[at].1 = a,
        (Ok(at), None) => drop(keys.remove(at)),
        (Err(at), Some(a)) => keys.insert(at, (key, a)),
        (Err(_), None) => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::firewall::fixture::random_change;
    use crate::firewall::{compile_cached, compile_with, synth, CompileCache, HostSettings};

    /// The first container of a named service on a network guards it, the
    /// last one's removal unguards it: both are patches, equal to a full compile.
    #[test]
    fn guarding_a_network_is_a_patch() {
        let (policies, mut inv) = synth::scenario(2, 1);
        let (host, mut cache) = (HostSettings::default(), CompileCache::new());
        let mut rng = fastrand::Rng::with_seed(1);
        random_change(&mut inv, &mut rng, 0);
        compile_cached(&policies, &inv, &host, &mut cache);
        for step in 1..6 {
            let had = inv.containers.iter().any(|c| c.id == "lone");
            inv.containers.retain(|c| c.id != "lone");
            if !had {
                let mut lone = inv.containers[1].clone();
                lone.id = "lone".into();
                lone.endpoints[0].network = "lone".into();
                lone.endpoints[0].ipv4 = Some(std::net::Ipv4Addr::new(10, 200, 0, 5));
                inv.containers.push(lone);
            }
            let before = cache.patched();
            let cached = compile_cached(&policies, &inv, &host, &mut cache);
            assert_eq!(cached, compile_with(&policies, &inv, &host), "step {step}");
            assert_eq!(cache.patched(), before + 1, "step {step} patched");
        }
    }
}
