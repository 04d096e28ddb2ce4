//! (policies, inventory) → ruleset: a pure function.
//!
//! Layout of one family's table (all chains `SEG-`; see docs/policy.md):
//!
//! ```text
//! DOCKER-USER  -j SEG-FORWARD                       (first rule, one jump)
//! SEG-FORWARD  ESTABLISHED,RELATED -j RETURN         (replies leave at once)
//!              -j SEG-EGRESS                         (by source address)
//!              -j SEG-INGRESS                        (by destination address)
//! SEG-EGRESS   trie on -s: restricted container → -g SEG-OUT-<svc>,
//!              other known container → RETURN, guarded subnet → DROP
//! SEG-INGRESS  trie on -d: protected container → -g SEG-IN-<svc>,
//!              ICC-off container → -g SEG-ICC-<bridge>, other known → RETURN,
//!              guarded subnet → DROP
//! SEG-IN-<svc> trie on -s: allowed source → RETURN or -g SEG-P-<ports>;
//!              else -g SEG-W-<svc> (published ports from the world) or DROP
//! SEG-OUT-<svc> trie on -d: allowed destination → RETURN; else DROP
//! ```
//!
//! Allowed traffic RETURNs to Docker's own chains (seg only restricts, it
//! never accepts). ICC-off is dispatched by destination like the rest, so a
//! policy allow is decided before — and instead of — the ICC drop.

use super::groups::{Chains, Groups};
use super::inventory::{Container, NetEndpoint};
use super::naming::{owned_prefix, service_chain, EGRESS, INGRESS, TOP};
use super::plan::Plan;
use super::ports::{inherit_ports, PortSet};
use super::ruleset::{Rules, Ruleset, Table};
use super::trie::{self, Action, Dir, TrieSpec};
use super::HostSettings;
use crate::policy::{Cidr, Egress, Family, Ingress, Peer, Policy};
use seg_common::api::Identity;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

pub use super::inventory::Inventory;

/// Compiles policies against the live inventory. The inventory must list
/// every container (not only the protected ones): an address on a guarded
/// network that it does not list is dropped.
pub fn compile(policies: &[Policy], inventory: &Inventory) -> Ruleset {
    compile_with(policies, inventory, &HostSettings::default())
}

/// [`compile`] with the host's own settings (ICC off on `docker0`).
pub fn compile_with(policies: &[Policy], inventory: &Inventory, host: &HostSettings) -> Ruleset {
    let plan = Plan::new(policies, inventory, host);
    Ruleset {
        v4: Builder::new(&plan, Family::V4, None).build(),
        v6: Builder::new(&plan, Family::V6, None).build(),
    }
}

pub(super) struct Builder<'p, 'a, 'c> {
    pub(super) plan: &'p Plan<'a>,
    pub(super) family: Family,
    chains: BTreeMap<String, Rules>,
    /// Service chain groups built last time ([`super::CompileCache`]), and
    /// the ones built or reused this time (which replace them at the end).
    cache: Option<&'c mut Groups>,
    fresh: Groups,
    /// The chains of the group being built, when caching.
    recording: Option<Chains>,
    /// Service chains already built, by kind and service (one per service,
    /// however many containers dispatch to it).
    built: HashMap<(&'static str, &'p Identity), String>,
    /// Of every bridge device (what "not from a container" means), once.
    bridges: std::cell::OnceCell<u64>,
    /// The chains of cached groups that were rebuilt (their inputs changed).
    replaced: Vec<Chains>,
}

impl<'p, 'a, 'c> Builder<'p, 'a, 'c> {
    pub(super) fn new(plan: &'p Plan<'a>, family: Family, cache: Option<&'c mut Groups>) -> Self {
        Builder {
            plan,
            family,
            chains: BTreeMap::new(),
            cache,
            fresh: Groups::default(),
            recording: None,
            built: HashMap::new(),
            bridges: std::cell::OnceCell::new(),
            replaced: Vec::new(),
        }
    }

    /// Builds one service's chains, or reuses last time's when their inputs
    /// hash the same (`fingerprint`; `None`: no cache).
    fn group(&mut self, name: &str, fingerprint: Option<u64>, build: impl FnOnce(&mut Self)) {
        let Some(fp) = fingerprint else { return build(self) };
        match self.cache.as_deref_mut().and_then(|c| c.groups.remove(name)) {
            Some((old_fp, chains)) if old_fp == fp => {
                for (n, rules) in &chains {
                    self.chains.insert(n.clone(), Arc::clone(rules));
                }
                self.fresh.groups.insert(name.to_string(), (fp, chains));
                return;
            }
            Some((_, chains)) => self.replaced.push(chains),
            None => {}
        }
        let outer = self.recording.replace(Vec::new());
        build(self);
        let produced = std::mem::replace(&mut self.recording, outer).unwrap_or_default();
        self.fresh.groups.insert(name.to_string(), (fp, produced));
    }

    pub(super) fn bridges_hash(&self) -> u64 {
        *self.bridges.get_or_init(|| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            self.plan.bridges().hash(&mut h);
            h.finish()
        })
    }

    /// Every chain goes in through here (so a group being built records it).
    fn insert(&mut self, name: String, rules: Vec<String>) {
        self.insert_shared(name, Arc::new(rules));
    }

    fn insert_shared(&mut self, name: String, rules: Rules) {
        if let Some(group) = self.recording.as_mut() {
            group.push((name.clone(), Arc::clone(&rules)));
        }
        self.chains.insert(name, rules);
    }

    pub(super) fn build(self) -> Table {
        self.build_keys().0
    }

    /// [`Builder::build`], also handing back the dispatch keys (egress,
    /// ingress), sorted, which an incremental compile patches.
    pub(super) fn build_keys(mut self) -> (Table, [Vec<(Cidr, Action)>; 2]) {
        let egress: Vec<(Cidr, Action)> = self.dispatch(Dir::Src).into_iter().collect();
        let ingress: Vec<(Cidr, Action)> = self.dispatch(Dir::Dst).into_iter().collect();
        if egress.is_empty() && ingress.is_empty() {
            return (Table::default(), [egress, ingress]);
        }
        // Every named service has its chains, containers or not, so that
        // its first container (or a restarted single one) only adds
        // dispatch entries: set elements, on nftables.
        let plan = self.plan;
        for (id, (_, spec)) in &plan.specs {
            if spec.ingress != Ingress::Any {
                self.service_ingress(id);
            }
            if spec.egress != Egress::Any {
                self.service_egress(id);
            }
        }
        let mut top = vec!["-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN".to_string()];
        if self.family == Family::V6 {
            // Neighbour discovery is IPv6's ARP, but it is IP: bridged, it
            // crosses FORWARD (br_netfilter), and dropping it would cut the
            // allowed flows of a restricted container too.
            for icmp_type in [135, 136] {
                top.push(format!("-p ipv6-icmp -m icmp6 --icmpv6-type {icmp_type} -j RETURN"));
            }
        }
        for (entries, root, dir) in [(&egress, EGRESS, Dir::Src), (&ingress, INGRESS, Dir::Dst)] {
            if entries.is_empty() {
                continue;
            }
            self.tree(root, dir, entries);
            top.push(format!("-j {root}"));
        }
        self.chains.insert(TOP.to_string(), Arc::new(top));
        if let Some(cache) = self.cache.take() {
            cache.groups = std::mem::take(&mut self.fresh.groups);
        }
        (Table { chains: self.chains, hooks: None }, [egress, ingress])
    }

    /// One dispatch tree (`SEG-EGRESS`, `SEG-INGRESS`) from its keys.
    pub(super) fn tree(&mut self, root: &str, dir: Dir, entries: &[(Cidr, Action)]) {
        let tag = if self.family == Family::V4 { "" } else { "6" };
        let letter = if dir == Dir::Src { "E" } else { "I" };
        let node_prefix = format!("SEG-{letter}{tag}-");
        let spec = TrieSpec { root, node_prefix: &node_prefix, dir, fallback: None };
        let memo = self.cache.as_deref_mut().map(|c| c.trees.entry(root.to_string()).or_default());
        for (name, rules) in trie::build_sorted(&spec, entries, memo) {
            self.insert_shared(name, rules);
        }
    }

    /// The chains built or reused since [`Builder::new`], the groups they
    /// make up, and the groups they replaced (an incremental compile's
    /// patch: [`super::incremental`]).
    pub(super) fn into_patch(self) -> (BTreeMap<String, Rules>, Groups, Vec<Chains>) {
        (self.chains, self.fresh, self.replaced)
    }

    fn add(&mut self, chains: Vec<(String, Vec<String>)>) {
        for (name, rules) in chains {
            self.insert(name, rules);
        }
    }

    /// The keys of the top-level dispatch on source (egress) or destination
    /// (ingress) address. For one key the strictest action wins.
    pub(super) fn dispatch(&mut self, dir: Dir) -> BTreeMap<Cidr, Action> {
        let mut keys: BTreeMap<Cidr, Action> = BTreeMap::new();
        for subnet in self.plan.guarded_subnets(self.family) {
            put(&mut keys, subnet, Action::Drop);
        }
        if dir == Dir::Dst {
            // An address on a host ICC-off network that no container claims
            // (yet) still gets the ICC check: no window after a start.
            for (network, subnet) in self.plan.icc_only_subnets(self.family) {
                if let Some(chain) = self.icc_chain(&network) {
                    put(&mut keys, subnet, Action::Goto(chain));
                }
            }
        }
        let plan = self.plan;
        for (c, &flags) in plan.inv.containers.iter().zip(&plan.flags) {
            for ep in &c.endpoints {
                let Some(ip) = ep.ip(self.family) else { continue };
                if let Some(action) = self.endpoint_action(c, flags, ep, dir) {
                    put(&mut keys, Cidr::host(ip), action);
                }
            }
        }
        keys
    }

    /// The dispatch action of one address key, from the containers that
    /// claim it (in inventory order, as [`Builder::dispatch`] folds them);
    /// `None`: no key. Only for an address that is no subnet key.
    pub(super) fn host_action(&mut self, ip: IpAddr, dir: Dir) -> Option<Action> {
        let mut keys: BTreeMap<Cidr, Action> = BTreeMap::new();
        let plan = self.plan;
        for (c, &flags) in plan.inv.containers.iter().zip(&plan.flags) {
            let family = self.family;
            for ep in c.endpoints.iter().filter(|ep| ep.ip(family) == Some(ip)) {
                if let Some(action) = self.endpoint_action(c, flags, ep, dir) {
                    put(&mut keys, Cidr::host(ip), action);
                }
            }
        }
        keys.into_values().next()
    }

    /// What one container endpoint asks of the dispatch (`flags`: its
    /// service is ingress-protected, egress-restricted).
    fn endpoint_action(
        &mut self,
        c: &'a Container,
        (protected, restricted): (bool, bool),
        ep: &NetEndpoint,
        dir: Dir,
    ) -> Option<Action> {
        let plan = self.plan;
        Some(match (dir, c.service.as_ref()) {
            (Dir::Dst, Some(id)) if protected => Action::Goto(self.service_ingress(id)),
            (Dir::Src, Some(id)) if restricted => Action::Goto(self.service_egress(id)),
            (Dir::Dst, _) if plan.icc_off.contains(&ep.network) => match self.icc_chain(&ep.network) {
                Some(chain) => Action::Goto(chain),
                None => Action::Return,
            },
            _ if plan.guarded.contains(&ep.network) => Action::Return,
            _ => return None,
        })
    }

    /// `SEG-IN-<svc>`: who may reach the service, on which ports.
    pub(super) fn service_ingress(&mut self, id: &'p Identity) -> String {
        if let Some(name) = self.built.get(&("IN", id)) {
            return name.clone();
        }
        let name = service_chain("IN", id);
        let fp = self.cache.is_some().then(|| self.ingress_fingerprint(id));
        self.group(&name, fp, |b| b.build_ingress(id, &name));
        self.built.insert(("IN", id), name.clone());
        name
    }

    fn build_ingress(&mut self, id: &Identity, name: &str) {
        let (policy, spec) = self.plan.specs[id];
        let Ingress::Allow(rules) = &spec.ingress else {
            unreachable!("only protected services get a chain")
        };
        let mut sources: BTreeMap<Cidr, PortSet> = BTreeMap::new();
        let mut world: Option<PortSet> = None;
        for rule in rules {
            let ports = PortSet::from_policy(rule.ports.as_ref().map(|p| p.0.as_slice()));
            // The rule's port chain exists while no source container runs
            // too, so the first one to start only adds an element.
            if rule.from.0.iter().any(|p| *p != Peer::World) {
                self.port_action(&ports);
            }
            for peer in &rule.from.0 {
                if *peer == Peer::World {
                    world = Some(world.map_or(ports.clone(), |w| w.union(&ports)));
                }
                for key in self.plan.peer_keys(policy, peer, self.family) {
                    let merged = sources.get(&key).map_or(ports.clone(), |p| p.union(&ports));
                    sources.insert(key, merged);
                }
            }
        }
        let fallback = match world.and_then(|w| self.world_chain(id, &w)) {
            Some(chain) => Action::Goto(chain),
            None => Action::Drop,
        };
        let entries =
            inherit_ports(&sources).into_iter().map(|(key, ports)| (key, self.port_action(&ports))).collect();
        let node_prefix = owned_prefix(name);
        let spec =
            TrieSpec { root: name, node_prefix: &node_prefix, dir: Dir::Src, fallback: Some(fallback) };
        self.add(trie::build(&spec, entries));
    }

    /// `SEG-OUT-<svc>`: where the service may connect to.
    pub(super) fn service_egress(&mut self, id: &'p Identity) -> String {
        if let Some(name) = self.built.get(&("OUT", id)) {
            return name.clone();
        }
        let name = service_chain("OUT", id);
        let fp = self.cache.is_some().then(|| self.egress_fingerprint(id));
        self.group(&name, fp, |b| b.build_egress(id, &name));
        self.built.insert(("OUT", id), name.clone());
        name
    }

    fn build_egress(&mut self, id: &Identity, name: &str) {
        let (policy, spec) = self.plan.specs[id];
        let Egress::Allow(peers) = &spec.egress else { unreachable!("only restricted services get a chain") };
        let entries: Vec<(Cidr, Action)> = peers
            .iter()
            .flat_map(|p| self.plan.peer_keys(policy, p, self.family))
            .map(|key| (key, Action::Return))
            .collect();
        let node_prefix = owned_prefix(name);
        let spec =
            TrieSpec { root: name, node_prefix: &node_prefix, dir: Dir::Dst, fallback: Some(Action::Drop) };
        self.add(trie::build(&spec, entries));
    }

    /// `SEG-P-<hash>`: the allowed ports, shared by every source and service
    /// with the same set. A port outside the set is dropped.
    fn port_action(&mut self, ports: &PortSet) -> Action {
        if *ports == PortSet::Any {
            return Action::Return;
        }
        let name = format!("SEG-P-{}", super::naming::hash_hex(&ports.key(), 12));
        let mut rules: Vec<String> = ports.matches().into_iter().map(|m| format!("{m} -j RETURN")).collect();
        rules.push("-j DROP".to_string());
        self.insert(name.clone(), rules);
        Action::Goto(name)
    }

    /// `SEG-W-<svc>`: the world reaching the service through published
    /// ports, after Docker's DNAT. Packets from any container bridge are not
    /// the world. It exists while the policy lets the world in, even with
    /// no port published yet (a container that publishes one then changes
    /// only this chain, or set elements on nftables).
    fn world_chain(&mut self, id: &Identity, allowed: &PortSet) -> Option<String> {
        let mut accepts = Vec::new();
        for c in self.plan.members(id) {
            for p in c.published.iter().filter(|p| allowed.allows(p.proto, p.container_port)) {
                let orig = match p.host_ip.filter(|h| !h.is_unspecified()) {
                    Some(h) if family_of(h) != self.family => continue,
                    Some(h) => format!("--ctorigdst {h} "),
                    None => String::new(),
                };
                for ip in c.endpoints.iter().filter_map(|e| e.ip(self.family)) {
                    let proto = p.proto.name();
                    accepts.push(format!(
                        "-d {} -p {proto} -m {proto} --dport {} -m conntrack --ctstate DNAT {orig}--ctorigdstport {} -j RETURN",
                        Cidr::host(ip).to_iptables(),
                        p.container_port,
                        p.host_port
                    ));
                }
            }
        }
        accepts.sort();
        accepts.dedup();
        let mut rules = vec!["-i docker0 -j DROP".to_string(), "-i br-+ -j DROP".to_string()];
        let custom = self.plan.bridges().into_iter().filter(|b| b != "docker0" && !b.starts_with("br-"));
        rules.extend(custom.map(|b| format!("-i {b} -j DROP")));
        rules.extend(accepts);
        rules.push("-j DROP".to_string());
        let name = service_chain("W", id);
        self.insert(name.clone(), rules);
        Some(name)
    }

    /// `SEG-ICC-<bridge>`: drops same-bridge traffic to an unprotected container.
    fn icc_chain(&mut self, network: &str) -> Option<String> {
        let bridge = self.plan.inv.network(network)?.bridge.clone()?;
        let name = format!("SEG-ICC-{bridge}");
        self.insert(name.clone(), vec![format!("-i {bridge} -o {bridge} -j DROP")]);
        Some(name)
    }
}

/// Puts `action` on `key`, unless the key already has a stricter one.
fn put(keys: &mut BTreeMap<Cidr, Action>, key: Cidr, action: Action) {
    let slot = keys.entry(key).or_insert(Action::Return);
    if strictness(&action) > strictness(slot) {
        *slot = action;
    }
}

fn strictness(action: &Action) -> u8 {
    match action {
        Action::Return => 0,
        Action::Goto(chain) if chain.starts_with("SEG-ICC-") => 1,
        Action::Goto(_) => 2,
        Action::Drop => 3,
    }
}

fn family_of(ip: IpAddr) -> Family {
    if ip.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
}
