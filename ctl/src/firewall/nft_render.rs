//! A compiled [`Ruleset`] in nftables terms (pure): the same decisions, in
//! the shapes nftables is fast at.
//!
//! - `SEG-FORWARD` becomes the one base chain (forward hook, priority
//!   `filter - 10`; see docs/policy.md for why), jumping to the two
//!   dispatch chains of each family.
//! - Every address tree (`SEG-EGRESS`, `SEG-INGRESS`, `SEG-IN-…`,
//!   `SEG-OUT-…` with their inner chains) becomes one chain and two verdict
//!   maps: container addresses in a hash map (cheap element updates), then
//!   the prefixes as disjoint ranges in an interval map (nftables refuses
//!   overlapping intervals) — together the tree's longest-prefix match.
//! - A world chain's published ports (`SEG-W-…`) become sets matched on
//!   (container address, port, conntrack's original destination).
//! - Port, ICC and world chains keep their rules, spelled for nft.
//!
//! Container addresses live only in map and set elements, so a container
//! that starts or stops changes elements, never a chain. IPv6 chains and
//! maps are named `SEG6-…`, in the same `inet` table.

use super::naming::{owned_prefix, EGRESS, INGRESS, PREFIX, TOP};
use super::nft_cache::{Decided, Flat, NftCache, Outcome, PieceData, Span};
use super::nft_model::{Chain, Elem, NftTable, Part, Set};
use super::nft_rules::{self, Rule};
use super::nft_spans::{max, merge, outcome, span, split};
use super::ruleset::{Rules, Ruleset, Table};
use crate::policy::Family;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// The base chain's declaration.
pub const HOOK: &str = "type filter hook forward priority filter - 10; policy accept;";

/// A rule of the compiled ruleset that has no nftables rendering (a bug:
/// the compiler emits only what this module understands).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot express `{rule}` of chain {chain} in nftables: {reason}")]
pub struct Untranslatable {
    pub chain: String,
    pub rule: String,
    pub reason: String,
}

/// The nftables table for `rs` (empty when seg has no rules).
pub fn to_nft(rs: &Ruleset) -> Result<NftTable, Untranslatable> {
    to_nft_cached(rs, &mut NftCache::new())
}

/// [`to_nft`], reusing the pieces of `cache` whose chains did not change
/// since the last call with it ([`super::nft_cache`]).
pub fn to_nft_cached(rs: &Ruleset, cache: &mut NftCache) -> Result<NftTable, Untranslatable> {
    let mut out = NftTable::default();
    let mut base: Vec<String> = Vec::new();
    for family in [Family::V4, Family::V6] {
        let table = rs.table(family);
        if table.chains.contains_key(TOP) {
            if let Err(e) = FamilyTable::new(table, family).translate(&mut out, &mut base, cache) {
                *cache = NftCache::new();
                return Err(e);
            }
        }
    }
    cache.finish();
    if !base.is_empty() {
        out.chains.insert(TOP.to_string(), Arc::new(Chain::new(Some(HOOK.to_string()), base)));
    }
    Ok(out)
}

/// A translated chain's rules, or why it has none.
type Made = Result<Vec<String>, Untranslatable>;

/// The nft name of a chain of `family` (IPv6: `SEG6-…`).
pub fn nft_name(name: &str, family: Family) -> String {
    match (family, name.strip_prefix(PREFIX)) {
        (Family::V6, Some(rest)) if name != TOP => format!("SEG6-{rest}"),
        _ => name.to_string(),
    }
}

/// What [`FamilyTable::flatten`] collects from one tree.
struct Walk<'w> {
    node_prefix: &'w str,
    /// Prefix keys: disjoint ranges and their decisions.
    spans: &'w mut Vec<Decided>,
    /// Address keys and their decisions.
    hosts: &'w mut Vec<(IpAddr, Outcome)>,
    consumed: &'w mut BTreeSet<String>,
    /// Inner chains walked, in order, with their rules (what a memo of a
    /// subtree must find unchanged to be reused).
    read: Vec<(String, Rules)>,
    cache: &'w mut NftCache,
}

struct FamilyTable<'t> {
    table: &'t Table,
    family: Family,
    ip: &'static str,
}

impl<'t> FamilyTable<'t> {
    fn new(table: &'t Table, family: Family) -> Self {
        let ip = if family == Family::V4 { "ip" } else { "ip6" };
        FamilyTable { table, family, ip }
    }

    fn name(&self, chain: &str) -> String {
        nft_name(chain, self.family)
    }

    fn key_type(&self) -> String {
        if self.family == Family::V4 { "ipv4_addr" } else { "ipv6_addr" }.to_string()
    }

    fn bad(&self, chain: &str, rule: &str, reason: &str) -> Untranslatable {
        Untranslatable { chain: chain.into(), rule: rule.into(), reason: reason.into() }
    }

    fn translate(
        &self,
        out: &mut NftTable,
        base: &mut Vec<String>,
        cache: &mut NftCache,
    ) -> Result<(), Untranslatable> {
        let mut consumed: BTreeSet<String> = BTreeSet::new();
        for rule in self.table.chains[TOP].iter() {
            let parsed = self.parse(TOP, rule)?;
            let line = match &parsed.target {
                Some((false, root)) if root == EGRESS || root == INGRESS => {
                    self.cached(root, out, &mut consumed, cache, |t, local, read, c| {
                        t.tree(root, local, read, c)
                    })?;
                    let nfproto = if self.family == Family::V4 { "ipv4" } else { "ipv6" };
                    format!("meta nfproto {nfproto} jump {}", self.name(root))
                }
                _ => self.rule_text(TOP, rule, &parsed, true)?,
            };
            if !base.contains(&line) {
                base.push(line);
            }
        }
        let services: Vec<&String> = self.table.chains.keys().filter(|n| is_service_tree(n)).collect();
        for name in services {
            self.cached(name, out, &mut consumed, cache, |t, local, read, c| t.tree(name, local, read, c))?;
        }
        for (name, rules) in &self.table.chains {
            if name == TOP || consumed.contains(name) || is_service_tree(name) {
                continue;
            }
            let plain = |t: &Self, local: &mut NftTable, read: &mut BTreeSet<String>, _: &mut NftCache| {
                read.insert(name.clone());
                t.plain_chain(name, rules, local)
            };
            self.cached(name, out, &mut consumed, cache, plain)?;
        }
        Ok(())
    }

    /// The chain `name` (and the sets it looks up) into `out`: from
    /// `cache` while the chains it was made from are unchanged, else made
    /// by `make` (which says which chains it read).
    fn cached(
        &self,
        name: &str,
        out: &mut NftTable,
        consumed: &mut BTreeSet<String>,
        cache: &mut NftCache,
        make: impl FnOnce(&Self, &mut NftTable, &mut BTreeSet<String>, &mut NftCache) -> Made,
    ) -> Result<(), Untranslatable> {
        let piece = match cache.get(self.family, name, self.table) {
            Some(piece) => piece,
            None => {
                let (mut local, mut read) = (NftTable::default(), BTreeSet::new());
                let rules = make(self, &mut local, &mut read, cache)?;
                let read = read.into_iter().map(|n| (n.clone(), self.table.chains[&n].clone())).collect();
                let chain = Arc::new(Chain::new(None, rules));
                let piece = Arc::new(PieceData { read, chain, sets: local.sets.into_iter().collect() });
                cache.put(self.family, name, Arc::clone(&piece));
                piece
            }
        };
        consumed.extend(piece.read.iter().map(|(n, _)| n.clone()));
        out.chains.insert(self.name(name), Arc::clone(&piece.chain));
        out.sets.extend(piece.sets.iter().map(|(n, s)| (n.clone(), Arc::clone(s))));
        Ok(())
    }

    /// Flattens the tree rooted at `root` into two maps and returns the
    /// rules of its chain: container addresses (exact keys) in a hash map,
    /// whose elements are cheap to add and delete, then the prefixes
    /// (subnets, policy CIDRs) as disjoint ranges in an interval map, then
    /// the fallback. An address key is longer than any prefix, so looking
    /// it up first is longest-prefix match.
    fn tree(
        &self,
        root: &str,
        out: &mut NftTable,
        consumed: &mut BTreeSet<String>,
        cache: &mut NftCache,
    ) -> Result<Vec<String>, Untranslatable> {
        let node_prefix = node_prefix(root, self.family);
        let (mut spans, mut hosts) = (Vec::new(), Vec::new());
        let everything = (0, max(self.family));
        let mut walk = Walk {
            node_prefix: &node_prefix,
            spans: &mut spans,
            hosts: &mut hosts,
            consumed,
            read: Vec::new(),
            cache,
        };
        self.flatten(root, vec![everything], &mut walk, 0)?;
        consumed.insert(root.to_string());
        spans.sort_by_key(|(s, _)| s.0);
        let fallback = self.fallback(root)?;
        let host_elems = hosts
            .into_iter()
            .map(|(ip, outcome)| (Elem(vec![Part::Addrs(ip, ip)]), Some(self.verdict(&outcome, "goto"))))
            .collect();
        let net_elems = merge(spans)
            .into_iter()
            .filter(|(_, outcome)| *outcome != fallback)
            .map(|((a, b), o)| {
                (Elem(vec![Part::Addrs(self.addr(a), self.addr(b))]), Some(self.verdict(&o, "goto")))
            })
            .collect();
        let (hosts_map, nets_map) = (self.name(root), format!("{}-nets", self.name(root)));
        let key = vec![self.key_type()];
        let hosts_set = Set { key: key.clone(), verdicts: true, interval: false, elems: host_elems };
        out.sets.insert(hosts_map.clone(), Arc::new(hosts_set));
        out.sets.insert(
            nets_map.clone(),
            Arc::new(Set { key, verdicts: true, interval: true, elems: net_elems }),
        );
        let side = if root == INGRESS || root.starts_with("SEG-OUT-") { "daddr" } else { "saddr" };
        let mut rules = vec![
            format!("{} {side} vmap @{hosts_map}", self.ip),
            format!("{} {side} vmap @{nets_map}", self.ip),
        ];
        if fallback != Outcome::Return {
            rules.push(self.verdict(&fallback, "goto"));
        }
        Ok(rules)
    }

    fn verdict(&self, outcome: &Outcome, verb: &str) -> String {
        match outcome {
            Outcome::Return => "return".into(),
            Outcome::Drop => "drop".into(),
            Outcome::Goto(chain) => format!("{verb} {}", self.name(chain)),
        }
    }

    /// What a packet matching no key of the tree gets: the root's last
    /// rule when it matches everything.
    fn fallback(&self, root: &str) -> Result<Outcome, Untranslatable> {
        let Some(last) = self.table.chains[root].last() else { return Ok(Outcome::Return) };
        let rule = self.parse(root, last)?;
        Ok(match (&rule.src, &rule.dst, &rule.target) {
            (None, None, Some(t)) => outcome(t),
            _ => Outcome::Return,
        })
    }

    /// First match wins: each rule takes what is left of `domain` inside its
    /// prefix; a rule going to an inner node continues there. Rules on one
    /// address are collected apart and take nothing from `domain`, which
    /// leaves the longest-prefix match among the prefixes alone.
    fn flatten(
        &self,
        chain: &str,
        domain: Vec<Span>,
        walk: &mut Walk,
        depth: usize,
    ) -> Result<(), Untranslatable> {
        let rules = self.table.chains.get(chain).ok_or_else(|| self.bad(chain, "", "no such chain"))?;
        if depth > 64 {
            return Err(self.bad(chain, "", "tree too deep"));
        }
        if depth == 0 {
            return self.flatten_rules(chain, rules, domain, walk, depth);
        }
        // An inner chain whose subtree is unchanged (every chain of it the
        // same allocation as last time) entered with the same domain gives
        // what it gave last time: reuse it rather than parse it again.
        if let Some(flat) = walk.cache.flat(self.family, chain, &domain, self.table) {
            walk.hosts.extend(flat.hosts.iter().cloned());
            walk.spans.extend(flat.spans.iter().cloned());
            walk.consumed.extend(flat.read.iter().skip(1).map(|(n, _)| n.clone()));
            walk.read.extend(flat.read.iter().cloned());
            return Ok(());
        }
        let at = (walk.hosts.len(), walk.spans.len(), walk.read.len());
        walk.read.push((chain.to_string(), Arc::clone(rules)));
        self.flatten_rules(chain, rules, domain.clone(), walk, depth)?;
        let flat = Flat {
            domain,
            hosts: walk.hosts[at.0..].to_vec(),
            spans: walk.spans[at.1..].to_vec(),
            read: walk.read[at.2..].to_vec(),
        };
        walk.cache.put_flat(self.family, chain, flat);
        Ok(())
    }

    /// [`FamilyTable::flatten`]'s work on one chain's rules.
    fn flatten_rules(
        &self,
        chain: &str,
        rules: &Rules,
        mut domain: Vec<Span>,
        walk: &mut Walk,
        depth: usize,
    ) -> Result<(), Untranslatable> {
        for text in rules.iter() {
            let rule = self.parse(chain, text)?;
            let Some(target) = &rule.target else { return Err(self.bad(chain, text, "no target")) };
            let key = rule.src.or(rule.dst);
            let inner = target.0 && target.1.starts_with(walk.node_prefix);
            if let Some(c) = key.filter(|c| c.is_host() && !inner) {
                walk.hosts.push((c.addr(), outcome(target)));
                continue;
            }
            let (inside, outside) = split(&domain, key.map_or((0, max(self.family)), |c| span(&c)));
            domain = outside;
            if inner {
                walk.consumed.insert(target.1.clone());
                self.flatten(&target.1, inside, walk, depth + 1)?;
            } else {
                walk.spans.extend(inside.into_iter().map(|s| (s, outcome(target))));
            }
        }
        walk.spans.extend(domain.into_iter().map(|s| (s, Outcome::Return)));
        Ok(())
    }

    fn parse(&self, chain: &str, text: &str) -> Result<Rule, Untranslatable> {
        nft_rules::parse(text).map_err(|reason| self.bad(chain, text, &reason))
    }

    fn rule_text(&self, chain: &str, text: &str, rule: &Rule, base: bool) -> Result<String, Untranslatable> {
        nft_rules::text(rule, self.ip, &|c| self.name(c), base)
            .map_err(|reason| self.bad(chain, text, &reason))
    }

    /// A chain kept as rules; its published-port accepts become sets, looked
    /// up where the first of them was.
    fn plain_chain(
        &self,
        name: &str,
        rules: &[String],
        out: &mut NftTable,
    ) -> Result<Vec<String>, Untranslatable> {
        let mut lines = Vec::new();
        let mut sets: BTreeMap<(String, bool), BTreeMap<Elem, Option<String>>> = BTreeMap::new();
        // A world chain looks up all four sets, empty or not: a container
        // publishing a port then adds an element, never a rule.
        let world = name.starts_with("SEG-W-");
        if world {
            for key in [("tcp", false), ("tcp", true), ("udp", false), ("udp", true)] {
                sets.insert((key.0.to_string(), key.1), BTreeMap::new());
            }
        }
        let mut at = None;
        for text in rules {
            let rule = self.parse(name, text)?;
            if let Some((proto, host, elem)) = nft_rules::published(&rule) {
                at.get_or_insert(lines.len());
                sets.entry((proto, host)).or_default().insert(elem, None);
                continue;
            }
            lines.push(self.rule_text(name, text, &rule, false)?);
        }
        let mut lookups = Vec::new();
        for ((proto, host), elems) in sets {
            let set = format!("{}-{proto}{}", self.name(name), if host { "-h" } else { "" });
            lookups.push(nft_rules::published_rule(self.ip, &proto, host, &set));
            let key = nft_rules::published_key(&self.key_type(), host);
            out.sets.insert(set, Arc::new(Set { key, verdicts: false, interval: false, elems }));
        }
        // Without an accept yet, the lookups go before the final drop.
        if let Some(at) = at.or_else(|| world.then(|| lines.len().saturating_sub(1))) {
            lines.splice(at..at, lookups);
        }
        Ok(lines)
    }

    fn addr(&self, bits: u128) -> IpAddr {
        match self.family {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(bits as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(bits)),
        }
    }
}

fn is_service_tree(name: &str) -> bool {
    name.starts_with("SEG-IN-") || name.starts_with("SEG-OUT-")
}

/// The prefix of a tree's inner chains, as the compiler names them.
fn node_prefix(root: &str, family: Family) -> String {
    let tag = if family == Family::V4 { "" } else { "6" };
    match root {
        EGRESS => format!("SEG-E{tag}-"),
        INGRESS => format!("SEG-I{tag}-"),
        _ => owned_prefix(root),
    }
}

#[cfg(test)]
#[path = "nft_render_tests.rs"]
mod tests;
