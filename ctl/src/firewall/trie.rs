//! Longest-prefix-match dispatch as a tree of chains.
//!
//! iptables evaluates a chain rule by rule, so a flat list of one rule per
//! container makes a packet's path grow with the number of containers. Here
//! the keys (container addresses, subnets, CIDRs) form a path-compressed
//! binary trie, cut into chains that each decide [`STRIDE`] address bits
//! (at most 8 branches): a chain tests a few disjoint prefixes and `-g`oes
//! into the matching one. A packet traverses at most about 8 rules per chain
//! and one chain per 3 bits in which the keys differ. The wide fan-out also
//! keeps the nesting shallow: nftables refuses jumps more than 16 chains
//! deep (`Too many links`).
//!
//! Within a chain, rules are ordered most specific first, which is longest-
//! prefix match; a packet that enters a subtree and matches no key in it
//! gets the action of the nearest enclosing key (or the tree's fallback).
//! Chains are named after their prefix, so adding one container rewrites
//! only the chains on its path.

use super::naming::{fits, hash_hex};
use super::ruleset::Rules;
use crate::policy::Cidr;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Subtrees with at most this many keys are one flat chain.
pub const FLAT_MAX: usize = 8;
/// Address bits one chain decides: at most 2^STRIDE = 8 branches per chain.
pub const STRIDE: u8 = 3;

/// What a matching key does. All are terminal, so the first match wins.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Back to the caller of the tree (the checks passed).
    Return,
    Drop,
    /// Continue in another chain (`-g`: its RETURN goes back to our caller).
    Goto(String),
}

impl Action {
    pub fn target(&self) -> String {
        match self {
            Action::Return => "-j RETURN".to_string(),
            Action::Drop => "-j DROP".to_string(),
            Action::Goto(chain) => format!("-g {chain}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Src,
    Dst,
}

impl Dir {
    fn flag(self) -> &'static str {
        match self {
            Dir::Src => "-s",
            Dir::Dst => "-d",
        }
    }
}

/// How to build one tree.
pub struct TrieSpec<'a> {
    /// The root chain's name (the caller jumps or goes to it).
    pub root: &'a str,
    /// Prefix of the inner chains' names (`SEG-I-`); the key prefix follows.
    pub node_prefix: &'a str,
    pub dir: Dir,
    /// What happens to a packet no key matches. `None`: it falls off, back
    /// to the caller of the tree.
    pub fallback: Option<Action>,
}

/// A node of the binary trie: a prefix, maybe a key on it, 0 or 2 children.
struct Node<'e> {
    prefix: Cidr,
    own: Option<&'e Action>,
    children: Vec<Node<'e>>,
    keys: usize,
    /// Of the prefix, the key and everything below: equal hashes, equal subtrees.
    hash: u64,
}

/// `entries` are sorted, distinct and inside `prefix`. Sorted by address
/// then length, a key equal to `prefix` comes first, and the keys below its
/// 0 and 1 branches are two runs, so the recursion only slices (a dispatch
/// tree holds every container: no copying per level).
fn trie(prefix: Cidr, entries: &[(Cidr, Action)]) -> Node<'_> {
    let (own, rest) = match entries.split_first() {
        Some(((c, a), rest)) if *c == prefix => (Some(a), rest),
        _ => (None, entries),
    };
    let split = rest.partition_point(|(c, _)| !c.bit(prefix.prefix_len()));
    let (left, right) = rest.split_at(split);
    let children: Vec<Node<'_>> = [left, right]
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(|side| trie(common_prefix(side), side))
        .collect();
    let keys = usize::from(own.is_some()) + children.iter().map(|c| c.keys).sum::<usize>();
    let mut h = DefaultHasher::new();
    (prefix, &own).hash(&mut h);
    children.iter().for_each(|c| c.hash.hash(&mut h));
    Node { prefix, own, children, keys, hash: h.finish() }
}

/// The rules of a tree's chains from its last build, by chain name, with a
/// hash of what each was made of: an unchanged chain is not formatted again.
pub type Memo = HashMap<String, (u64, Rules)>;

struct Out<'m> {
    chains: Vec<(String, Rules)>,
    /// Last build's chains (taken from as they are reused) and this build's.
    memo: Option<(&'m mut Memo, Memo)>,
}

/// Builds the chains for `entries` (keys must be distinct and of one
/// family). The root chain comes first; it exists even when there are no keys.
pub fn build(spec: &TrieSpec, entries: Vec<(Cidr, Action)>) -> Vec<(String, Vec<String>)> {
    build_memo(spec, entries, None).into_iter().map(|(n, r)| (n, Arc::unwrap_or_clone(r))).collect()
}

/// [`build`], reusing the rules of chains whose subtree did not change
/// since the build that left `memo` (which then holds this build's).
pub fn build_memo(
    spec: &TrieSpec,
    mut entries: Vec<(Cidr, Action)>,
    memo: Option<&mut Memo>,
) -> Vec<(String, Rules)> {
    entries.sort();
    entries.dedup_by(|a, b| a.0 == b.0);
    build_sorted(spec, &entries, memo)
}

/// [`build_memo`] of keys already sorted and distinct (a dispatch tree's,
/// kept that way between compiles: nothing is copied or sorted again).
pub fn build_sorted(
    spec: &TrieSpec,
    entries: &[(Cidr, Action)],
    memo: Option<&mut Memo>,
) -> Vec<(String, Rules)> {
    debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0), "sorted, distinct keys");
    if entries.is_empty() {
        if let Some(m) = memo {
            m.clear();
        }
        return vec![(spec.root.to_string(), Arc::new(spec.fallback.iter().map(Action::target).collect()))];
    }
    let root = trie(common_prefix(entries), entries);
    let mut out = Out { chains: Vec::new(), memo: memo.map(|m| (m, Memo::new())) };
    chain(spec, spec.root.to_string(), &root, true, spec.fallback.as_ref(), &mut out);
    if let Some((old, new)) = out.memo {
        *old = new;
    }
    out.chains
}

/// Where a rule of a chain leads: a key's action, or a child chain.
enum To<'n> {
    Key(&'n Action),
    Chain(String),
}

/// One chain for `node`'s subtree. `is_root`: entered without having matched
/// `node.prefix`. `default`: the action for a packet matching no key here.
fn chain<'e>(
    spec: &TrieSpec,
    name: String,
    node: &Node<'e>,
    is_root: bool,
    default: Option<&'e Action>,
    out: &mut Out,
) {
    let slot = out.chains.len();
    out.chains.push((name, Rules::default()));
    // The chain covers the trie nodes of its own stride (bit positions
    // aligned to STRIDE), or its whole subtree when that is small. Where
    // chains start depends only on prefixes, not on how many keys sit
    // where, so one more key rewrites only the chains on its path.
    let flat = node.keys <= FLAT_MAX;
    let stride = node.prefix.prefix_len() / STRIDE;
    let mut frontier: Vec<(&Node<'e>, Option<&'e Action>)> =
        node.children.iter().map(|c| (c, None)).collect();
    let mut rules: Vec<(u8, Cidr, To)> = Vec::new();
    while let Some(i) = frontier
        .iter()
        .position(|(n, _)| !n.children.is_empty() && (flat || n.prefix.prefix_len() / STRIDE == stride))
    {
        let (n, inherited) = frontier.swap_remove(i);
        let below = n.own.or(inherited);
        if let Some(own) = n.own {
            rules.push((n.prefix.prefix_len(), n.prefix, To::Key(own)));
        }
        frontier.extend(n.children.iter().map(|c| (c, below)));
    }
    for (n, inherited) in frontier {
        let to = if n.children.is_empty() {
            To::Key(n.own.expect("a leaf is a key"))
        } else {
            let child_name = node_name(spec.node_prefix, &n.prefix);
            let child_default = inherited.or(node.own).or(default);
            chain(spec, child_name.clone(), n, false, child_default, out);
            To::Chain(child_name)
        };
        rules.push((n.prefix.prefix_len(), n.prefix, to));
    }
    let mut h = DefaultHasher::new();
    (node.hash, is_root, &default, spec.dir == Dir::Src).hash(&mut h);
    let fp = h.finish();
    let name = &out.chains[slot].0;
    let reused = out.memo.as_mut().and_then(|(old, _)| old.remove(name)).filter(|(f, _)| *f == fp);
    let lines = match reused {
        Some((_, lines)) => lines,
        None => Arc::new(lines(spec, node, is_root, default, rules)),
    };
    if let Some((_, new)) = out.memo.as_mut() {
        new.insert(name.clone(), (fp, Arc::clone(&lines)));
    }
    out.chains[slot].1 = lines;
}

/// The rules of one chain, most specific first (in one chain, that is
/// longest-prefix match).
fn lines(
    spec: &TrieSpec,
    node: &Node,
    is_root: bool,
    default: Option<&Action>,
    mut rules: Vec<(u8, Cidr, To)>,
) -> Vec<String> {
    rules.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut lines: Vec<String> = rules
        .into_iter()
        .map(|(_, c, to)| {
            let target = match to {
                To::Key(a) => a.target(),
                To::Chain(child) => format!("-g {child}"),
            };
            format!("{} {} {target}", spec.dir.flag(), c.to_iptables())
        })
        .collect();
    match (node.own, is_root && node.prefix.prefix_len() > 0) {
        (Some(own), true) => {
            lines.push(format!("{} {} {}", spec.dir.flag(), node.prefix.to_iptables(), own.target()));
            lines.extend(default.map(Action::target));
        }
        (Some(own), false) => lines.push(own.target()),
        (None, _) => lines.extend(default.map(Action::target)),
    }
    lines
}

/// The longest prefix containing every key of `side` (non-empty).
fn common_prefix(side: &[(Cidr, Action)]) -> Cidr {
    let first = side[0].0;
    let len = side.iter().fold(first.prefix_len(), |len, (c, _)| len.min(first.common_len(c)));
    first.truncate(len)
}

/// `SEG-I-0aca00-24`: the prefix's significant hex digits and its length;
/// long IPv6 prefixes are hashed to stay within iptables' 28 characters.
pub fn node_name(node_prefix: &str, prefix: &Cidr) -> String {
    let width = prefix.family().width() as u32;
    let nibbles = (prefix.prefix_len() as u32).div_ceil(4).max(1);
    let raw = match prefix.addr() {
        std::net::IpAddr::V4(a) => u32::from(a) as u128,
        std::net::IpAddr::V6(a) => u128::from(a),
    };
    let digits = format!("{:0w$x}", raw, w = (width / 4) as usize);
    let name = format!("{node_prefix}{}-{}", &digits[..nibbles as usize], prefix.prefix_len());
    if fits(&name) {
        name
    } else {
        format!("{node_prefix}{}-{}", hash_hex(&prefix.to_string(), 10), prefix.prefix_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn spec<'a>(fallback: Option<Action>) -> TrieSpec<'a> {
        TrieSpec { root: "SEG-INGRESS", node_prefix: "SEG-I-", dir: Dir::Dst, fallback }
    }

    #[test]
    fn small_sets_are_flat_and_most_specific_first() {
        let chains =
            build(&spec(None), vec![(ip("10.0.0.0/16"), Action::Drop), (ip("10.0.0.5"), Action::Return)]);
        assert_eq!(chains.len(), 1);
        assert_eq!(chains[0].1, vec!["-d 10.0.0.5/32 -j RETURN", "-d 10.0.0.0/16 -j DROP"]);
        let empty = build(&spec(Some(Action::Drop)), vec![]);
        assert_eq!(empty, vec![("SEG-INGRESS".to_string(), vec!["-j DROP".to_string()])]);
    }

    #[test]
    fn large_sets_become_a_shallow_tree_of_small_chains() {
        let entries: Vec<_> = (0..1000u32)
            .map(|i| (Cidr::host(std::net::Ipv4Addr::from(0x0a00_0000 + i).into()), Action::Return))
            .collect();
        let chains = build(&spec(None), entries);
        assert!(chains.iter().all(|(_, rules)| rules.len() <= 9), "{chains:?}");
        let names: std::collections::BTreeSet<_> = chains.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(names.len(), chains.len(), "chain names are unique");
        assert_eq!(depth(&chains, "SEG-INGRESS"), 4, "1000 keys: root + 3 levels");
    }

    fn depth(chains: &[(String, Vec<String>)], name: &str) -> usize {
        let rules = &chains.iter().find(|(n, _)| n == name).unwrap().1;
        1 + rules.iter().filter_map(|r| r.split(" -g ").nth(1)).map(|c| depth(chains, c)).max().unwrap_or(0)
    }

    /// The tree answers exactly what a longest-prefix match over the keys answers.
    #[test]
    fn tree_is_longest_prefix_match() {
        use crate::firewall::sim::{Packet, Verdict, Walker};
        // Seeded, so a failure reproduces.
        let mut rng = fastrand::Rng::with_seed(0x2545_f491_4f6c_dd1d);
        let mut next = move |n: u64| rng.u64(..n);
        for round in 0..30 {
            let mut keys = std::collections::BTreeMap::new();
            for _ in 0..next(120) + 1 {
                let len = [32, 32, 32, 30, 28, 24, 20, 16][next(8) as usize];
                let addr = std::net::Ipv4Addr::from(0x0a00_0000 | next(1 << 12) as u32);
                let action = if next(2) == 0 { Action::Return } else { Action::Drop };
                keys.insert(Cidr::new(addr.into(), len).unwrap(), action);
            }
            let fallback = if round % 2 == 0 { None } else { Some(Action::Drop) };
            let chains = build(&spec(fallback.clone()), keys.clone().into_iter().collect());
            assert!(depth(&chains, "SEG-INGRESS") <= 6);
            let mut table = crate::firewall::Table::default();
            table.chains.extend(chains.into_iter().map(|(n, r)| (n, Arc::new(r))));
            table.chains.insert("SEG-FORWARD".into(), Arc::new(vec!["-j SEG-INGRESS".into()]));
            let walker = Walker::new(&table).unwrap();
            for _ in 0..300 {
                let dst = std::net::Ipv4Addr::from(0x0a00_0000 | next(1 << 12) as u32);
                let lpm = keys
                    .iter()
                    .filter(|(k, _)| k.contains_ip(dst.into()))
                    .max_by_key(|(k, _)| k.prefix_len());
                let want = match lpm.map(|(_, a)| a).or(fallback.as_ref()) {
                    Some(Action::Drop) => Verdict::Drop,
                    _ => Verdict::Pass,
                };
                let p = Packet {
                    src: dst.into(),
                    dst: dst.into(),
                    proto: None,
                    dport: 0,
                    in_if: String::new(),
                    out_if: String::new(),
                    established: false,
                    dnat: None,
                };
                assert_eq!(walker.walk(&p).0, want, "{dst} in round {round}");
            }
        }
    }

    #[test]
    fn a_root_key_only_applies_inside_its_prefix() {
        let mut entries: Vec<_> = (1..=10u32)
            .map(|i| (Cidr::host(std::net::Ipv4Addr::from(0x0a00_0000 + i).into()), Action::Return))
            .collect();
        entries.push((ip("10.0.0.0/24"), Action::Drop));
        let chains = build(&spec(None), entries);
        assert_eq!(chains[0].1.last().unwrap(), "-d 10.0.0.0/24 -j DROP");
        let chains = build(&spec(Some(Action::Drop)), vec![(ip("0.0.0.0/0"), Action::Return)]);
        assert_eq!(chains[0].1, vec!["-j RETURN"]);
    }

    #[test]
    fn names_fit_iptables() {
        let v6 = ip("fd00:1234:5678:9abc:def0:1234:5678:9a00/120");
        let name = node_name("SEG-a1b2c3-", &v6);
        assert!(name.len() <= 28 && name.ends_with("-120"), "{name}");
        assert_eq!(node_name("SEG-I-", &ip("172.18.0.0/16")), "SEG-I-ac12-16");
    }
}
