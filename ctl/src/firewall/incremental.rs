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
/// networks, same guarded and ICC-only networks, no changed container on
/// an ICC-off network (its ICC chain may come or go).
pub(super) fn patchable(last: &Last, plan: &Plan, inv: &Inventory, changes: &[Change]) -> bool {
    let icc = |c: &Container| c.endpoints.iter().any(|e| plan.icc_off.contains(&e.network));
    last.networks == inv.networks
        && last.guarded == plan.guarded
        && last.icc_only == plan.icc_only
        && !changes.iter().any(|(o, n)| o.as_ref().is_some_and(icc) || n.is_some_and(icc))
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
    let (table, mut keys) = (&mut last.tables[i], last.keys[i].clone());
    let addrs = changed_addrs(changes, family);
    if table.chains.is_empty() {
        // Nothing in this family, and nothing to add (else: the full way).
        return addrs.is_empty().then(|| (Table::default(), keys));
    }
    let subnets: BTreeSet<Cidr> = plan.guarded_subnets(family).into_iter().collect();
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
    if keys.iter().zip(&last.keys[i]).any(|(new, old)| new.is_empty() != old.is_empty()) {
        return None;
    }
    for ((root, dir), keys) in [(EGRESS, Dir::Src), (INGRESS, Dir::Dst)].into_iter().zip(&keys) {
        if !keys.is_empty() {
            b.tree(root, dir, keys);
        }
    }
    let (chains, fresh, replaced) = b.into_patch();
    let mut out = std::mem::take(table);
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
