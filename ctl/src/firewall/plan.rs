//! Policies resolved against the inventory: which services are named, which
//! addresses a reference stands for, which networks are guarded or ICC-off.

use super::inventory::{Container, Inventory};
use super::HostSettings;
use crate::policy::{Cidr, Egress, Family, Ingress, Peer, Policy, ServiceSpec};
use seg_common::api::Identity;
use std::collections::{BTreeMap, BTreeSet};

pub(crate) struct Plan<'a> {
    pub inv: &'a Inventory,
    /// Every service a policy names, with its spec and policy. When two
    /// policies name the same service the first one wins (`validate_set`
    /// refuses such sets before they get here).
    pub specs: BTreeMap<Identity, (&'a Policy, &'a ServiceSpec)>,
    /// Docker networks on which containers reach each other only where a
    /// policy allows (`icc: false` in any policy: the restrictive one wins).
    pub icc_off: BTreeSet<String>,
    /// Docker networks where an address that is not in the inventory is
    /// dropped both ways: those of every container of a named service, and
    /// the networks policies declare. A container started since the last
    /// reconcile is cut off until the next one accounts for it (fail closed).
    pub guarded: BTreeSet<String>,
    /// ICC-off networks that are not guarded (the host's own setting, e.g.
    /// docker0): every address on them, known or not, gets the ICC check.
    pub icc_only: BTreeSet<String>,
    /// The containers of each service, looked up once (compiling 1,000
    /// services must not scan every container per reference).
    members: BTreeMap<&'a Identity, Vec<&'a Container>>,
    /// Per container, in inventory order: (ingress protected, egress
    /// restricted), so the dispatch looks each service up once.
    pub flags: Vec<(bool, bool)>,
}

impl<'a> Plan<'a> {
    pub fn new(policies: &'a [Policy], inv: &'a Inventory, host: &HostSettings) -> Plan<'a> {
        let mut specs = BTreeMap::new();
        let mut icc_off: BTreeSet<String> = BTreeSet::new();
        let mut guarded = BTreeSet::new();
        for policy in policies {
            for (key, spec) in &policy.services {
                let id = Identity::new(policy.project(), &key.0);
                specs.entry(id).or_insert((policy, spec));
            }
            for (key, decl) in &policy.networks {
                if let Some(net) = inv.resolve_network(policy.project(), &key.0) {
                    guarded.insert(net.name.clone());
                    if !decl.icc {
                        icc_off.insert(net.name.clone());
                    }
                }
            }
        }
        let mut members: BTreeMap<&Identity, Vec<&Container>> = BTreeMap::new();
        let mut flags = Vec::with_capacity(inv.containers.len());
        for c in &inv.containers {
            let Some(id) = c.service.as_ref() else {
                flags.push((false, false));
                continue;
            };
            members.entry(id).or_default().push(c);
            let spec: Option<&(&Policy, &ServiceSpec)> = specs.get(id);
            flags.push(
                spec.map_or((false, false), |(_, s)| (s.ingress != Ingress::Any, s.egress != Egress::Any)),
            );
            if spec.is_some() {
                for e in &c.endpoints {
                    if !guarded.contains(&e.network) {
                        guarded.insert(e.network.clone());
                    }
                }
            }
        }
        let host_off = host.icc_off.iter().filter(|n| inv.network(n).is_some());
        let icc_only = host_off.filter(|n| !guarded.contains(*n)).cloned().collect();
        icc_off.extend(host.icc_off.iter().cloned());
        Plan { inv, specs, icc_off, guarded, icc_only, members, flags }
    }

    /// The containers of a service, in inventory order.
    pub fn members(&self, id: &Identity) -> impl Iterator<Item = &'a Container> + '_ {
        self.members.get(id).into_iter().flatten().copied()
    }

    /// Every address of a service's containers in one family.
    pub fn addrs(&self, id: &Identity, family: Family) -> Vec<Cidr> {
        let mut out: Vec<Cidr> = self
            .members(id)
            .flat_map(|c| c.endpoints.iter().filter_map(move |e| e.ip(family)))
            .map(Cidr::host)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The prefixes a peer stands for (`world` stands for none: it is
    /// matched by interface and conntrack instead).
    pub fn peer_keys(&self, policy: &Policy, peer: &Peer, family: Family) -> Vec<Cidr> {
        match peer {
            Peer::World => Vec::new(),
            Peer::Cidr(c) if c.family() == family => vec![*c],
            Peer::Cidr(_) => Vec::new(),
            Peer::Service(r) => {
                let (project, service) = policy.resolve(r);
                self.addrs(&Identity { project, service }, family)
            }
        }
    }

    /// Subnets of the guarded networks in one family.
    pub fn guarded_subnets(&self, family: Family) -> Vec<Cidr> {
        let nets = self.guarded.iter().filter_map(|n| self.inv.network(n));
        nets.flat_map(|n| n.subnets.iter().copied()).filter(|s| s.family() == family).collect()
    }

    /// Subnets of the ICC-only networks in one family.
    pub fn icc_only_subnets(&self, family: Family) -> Vec<(String, Cidr)> {
        let nets = self.icc_only.iter().filter_map(|n| self.inv.network(n));
        let subnets = nets.flat_map(|n| n.subnets.iter().map(move |s| (n.name.clone(), *s)));
        subnets.filter(|(_, s)| s.family() == family).collect()
    }

    /// Bridge devices of every network in the inventory (for "not from a container").
    pub fn bridges(&self) -> BTreeSet<String> {
        self.inv.networks.iter().filter_map(|n| n.bridge.clone()).collect()
    }
}

/// Two policies of one set name the same service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service `{service}` is named by both {first} and {second}")]
pub struct ServiceClash {
    pub service: Identity,
    /// Origins (file names) of the two policies.
    pub first: String,
    pub second: String,
}

/// Refuses policy sets in which two policies name the same service (they
/// would otherwise silently shadow each other).
pub fn validate_set(policies: &[Policy]) -> Result<(), ServiceClash> {
    let mut seen: BTreeMap<Identity, &str> = BTreeMap::new();
    for p in policies {
        for key in p.services.keys() {
            let id = Identity::new(p.project(), &key.0);
            if let Some(first) = seen.insert(id.clone(), &p.origin) {
                return Err(ServiceClash { service: id, first: first.to_owned(), second: p.origin.clone() });
            }
        }
    }
    Ok(())
}
