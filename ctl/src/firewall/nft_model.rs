//! seg's nftables table as a value, and the scripts that change it.
//!
//! One `table inet seg` holds both families. A [`NftTable`] is what seg
//! wants (rendered from a compiled ruleset) or what is live (read with
//! `nft -j list table inet seg`); both compare on the same terms: chain
//! names, hooks and one tag per rule (the rule's hash, which seg writes as
//! the rule's comment — nft's JSON spelling of a rule is not seg's text),
//! set declarations and set elements. [`render`] turns one into the other
//! as one `nft -f` transaction: element additions and deletions only when
//! every chain and set declaration is unchanged (a container that starts or
//! stops), otherwise the whole table replaced at once.

use super::naming::hash_hex;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

pub const FAMILY_TABLE: &str = "inet seg";

/// Chains and sets are shared (`Arc`): a translation that reuses an
/// unchanged piece ([`super::nft_cache`]) hands out the same allocation,
/// and comparing it with the previous table is a pointer comparison.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NftTable {
    pub chains: BTreeMap<String, Arc<Chain>>,
    pub sets: BTreeMap<String, Arc<Set>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// A base chain's declaration (`type filter hook forward priority …`).
    pub hook: Option<String>,
    /// The rules in nft syntax (empty when read from the kernel).
    pub rules: Vec<String>,
    /// One tag per rule: its hash, kept in the kernel as its comment.
    pub tags: Vec<String>,
}

impl Chain {
    pub fn new(hook: Option<String>, rules: Vec<String>) -> Chain {
        let tags = rules.iter().map(|r| tag(r)).collect();
        Chain { hook, rules, tags }
    }

    fn same(&self, other: &Chain) -> bool {
        self.hook == other.hook && self.tags == other.tags
    }
}

/// A rule's tag: stable across runs, short enough for a comment.
pub fn tag(rule: &str) -> String {
    format!("seg:{}", hash_hex(rule, 10))
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Set {
    /// Key types, concatenated with ` . ` (`ipv4_addr`, `inet_service`, …).
    pub key: Vec<String>,
    /// A verdict map (elements carry a verdict) rather than a set.
    pub verdicts: bool,
    pub interval: bool,
    /// Element → verdict (`None` in a plain set).
    pub elems: BTreeMap<Elem, Option<String>>,
}

impl Set {
    fn declaration(&self) -> String {
        let map = if self.verdicts { " : verdict" } else { "" };
        let flags = if self.interval { " flags interval;" } else { "" };
        format!("{{ type {}{map};{flags} }}", self.key.join(" . "))
    }

    fn same_declaration(&self, other: &Set) -> bool {
        (&self.key, self.verdicts, self.interval) == (&other.key, other.verdicts, other.interval)
    }
}

/// One set element: its parts, concatenated with ` . `.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Elem(pub Vec<Part>);

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// An address range, both ends included (one address when equal).
    Addrs(IpAddr, IpAddr),
    Port(u16),
}

impl fmt::Display for Elem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" . ")?;
            }
            match part {
                Part::Addrs(a, b) if a == b => write!(f, "{a}")?,
                Part::Addrs(a, b) => write!(f, "{a}-{b}")?,
                Part::Port(p) => write!(f, "{p}")?,
            }
        }
        Ok(())
    }
}

impl NftTable {
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.sets.is_empty()
    }

    /// Rules and elements in the table.
    pub fn rule_count(&self) -> usize {
        let rules: usize = self.chains.values().map(|c| c.tags.len()).sum();
        rules + self.sets.values().map(|s| s.elems.len()).sum::<usize>()
    }

    /// Whether only set elements differ from `live` (same chains, same sets).
    fn elements_only(&self, live: &NftTable) -> bool {
        let chains = self.chains.len() == live.chains.len()
            && self
                .chains
                .iter()
                .all(|(n, c)| live.chains.get(n).is_some_and(|l| Arc::ptr_eq(c, l) || c.same(l)));
        let sets = self.sets.len() == live.sets.len()
            && self
                .sets
                .iter()
                .all(|(n, s)| live.sets.get(n).is_some_and(|l| Arc::ptr_eq(s, l) || s.same_declaration(l)));
        chains && sets
    }
}

/// The element changes of one set between two tables whose chains and set
/// declarations are the same: what a container that starts or stops changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetDelta<'a> {
    pub name: &'a str,
    /// The set's declaration (key types; map or set).
    pub set: &'a Set,
    /// Elements to delete (also those whose verdict changes).
    pub gone: Vec<&'a Elem>,
    /// Elements to add, with their verdict in a map.
    pub new: Vec<(&'a Elem, Option<&'a str>)>,
}

/// The element changes from `live` to `want`, set by set (sets without a
/// change are left out); `None` when more than elements differ.
pub fn element_delta<'a>(want: &'a NftTable, live: &'a NftTable) -> Option<Vec<SetDelta<'a>>> {
    if !want.elements_only(live) {
        return None;
    }
    let mut out = Vec::new();
    for (name, set) in &want.sets {
        let live_set = &live.sets[name];
        if Arc::ptr_eq(set, live_set) || set.elems == live_set.elems {
            continue;
        }
        let (gone, new) = merge_diff(&live_set.elems, &set.elems);
        out.push(SetDelta { name, set, gone, new });
    }
    Some(out)
}

type Elems = BTreeMap<Elem, Option<String>>;

/// What differs between two sets' elements, in one pass over both (they
/// are sorted): the elements of `had` that `want` lacks or maps to another
/// verdict, and those of `want` that `had` lacks or maps otherwise. A
/// container event at 10,000 services compares ~120,000 elements; lookups
/// one by one cost several times this.
#[allow(clippy::type_complexity)]
fn merge_diff<'a>(had: &'a Elems, want: &'a Elems) -> (Vec<&'a Elem>, Vec<(&'a Elem, Option<&'a str>)>) {
    let (mut gone, mut new) = (Vec::new(), Vec::new());
    let (mut h, mut w) = (had.iter().peekable(), want.iter().peekable());
    loop {
        match (h.peek(), w.peek()) {
            (None, None) => break,
            (Some((he, _)), Some((we, _))) if he < we => gone.push(h.next().expect("peeked").0),
            (Some(_), None) => gone.push(h.next().expect("peeked").0),
            (Some((he, _)), Some((we, _))) if he > we => {
                let (e, v) = w.next().expect("peeked");
                new.push((e, v.as_deref()));
            }
            (None, Some(_)) => {
                let (e, v) = w.next().expect("peeked");
                new.push((e, v.as_deref()));
            }
            (Some(_), Some(_)) => {
                let ((he, hv), (we, wv)) = (h.next().expect("peeked"), w.next().expect("peeked"));
                if hv != wv {
                    gone.push(he);
                    new.push((we, wv.as_deref()));
                }
            }
        }
    }
    (gone, new)
}

/// The `nft -f` script that turns `live` (`None`: no seg table) into
/// `want`; empty when nothing needs to change. Replacing the table is
/// `add table` (so that the `delete` cannot fail), `delete table`, then the
/// whole table — one transaction, so no packet ever sees a half-built table.
pub fn render(want: &NftTable, live: Option<&NftTable>) -> String {
    match live {
        None if want.is_empty() => String::new(),
        Some(_) if want.is_empty() => format!("delete table {FAMILY_TABLE}\n"),
        Some(live) => match element_delta(want, live) {
            Some(delta) => render_delta(&delta),
            None => render_replacement(want),
        },
        None => render_replacement(want),
    }
}

fn render_replacement(want: &NftTable) -> String {
    let mut out = format!("add table {FAMILY_TABLE}\ndelete table {FAMILY_TABLE}\n");
    out.push_str(&render_full(want));
    out
}

/// The whole table: chains, sets, elements, rules (everything a rule or an
/// element refers to is declared before it).
pub fn render_full(want: &NftTable) -> String {
    let mut out = format!("add table {FAMILY_TABLE}\n");
    for (name, chain) in &want.chains {
        match &chain.hook {
            Some(hook) => out.push_str(&format!("add chain {FAMILY_TABLE} {name} {{ {hook} }}\n")),
            None => out.push_str(&format!("add chain {FAMILY_TABLE} {name}\n")),
        }
    }
    for (name, set) in &want.sets {
        let kind = if set.verdicts { "map" } else { "set" };
        out.push_str(&format!("add {kind} {FAMILY_TABLE} {name} {}\n", set.declaration()));
    }
    for (name, set) in &want.sets {
        push_elements(&mut out, "add", name, set.elems.iter().map(|(e, v)| (e, v.as_deref())));
    }
    for (name, chain) in &want.chains {
        for (rule, tag) in chain.rules.iter().zip(&chain.tags) {
            out.push_str(&format!("add rule {FAMILY_TABLE} {name} {rule} comment \"{tag}\"\n"));
        }
    }
    out
}

/// An element delta as a script. Deletions first (a range that is split or
/// merged must be gone before its pieces come in), then additions. A
/// changed verdict is both.
pub fn render_delta(delta: &[SetDelta<'_>]) -> String {
    let mut out = String::new();
    for d in delta {
        push_elements(&mut out, "delete", d.name, d.gone.iter().map(|e| (*e, None)));
    }
    for d in delta {
        push_elements(&mut out, "add", d.name, d.new.iter().copied());
    }
    out
}

fn push_elements<'a>(
    out: &mut String,
    verb: &str,
    set: &str,
    elems: impl Iterator<Item = (&'a Elem, Option<&'a str>)>,
) {
    let lines: Vec<String> = elems
        .map(|(e, v)| match v {
            Some(v) => format!("\t{e} : {v}"),
            None => format!("\t{e}"),
        })
        .collect();
    if !lines.is_empty() {
        out.push_str(&format!("{verb} element {FAMILY_TABLE} {set} {{\n{}\n}}\n", lines.join(",\n")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass diff says what element-by-element lookups say, on
    /// sets that overlap in every way (same, gone, new, verdict changed).
    #[test]
    fn the_merged_diff_matches_lookups() {
        let elem = |i: u16| Elem(vec![Part::Port(i)]);
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let mut pick = || -> Elems {
                (0..rng.usize(..40))
                    .map(|_| (elem(rng.u16(..30)), Some(format!("v{}", rng.u8(..2)))))
                    .collect()
            };
            let (had, want) = (pick(), pick());
            let (gone, new) = merge_diff(&had, &want);
            let gone_by_lookup: Vec<&Elem> =
                had.iter().filter(|(e, v)| want.get(*e) != Some(*v)).map(|(e, _)| e).collect();
            let new_by_lookup: Vec<(&Elem, Option<&str>)> = want
                .iter()
                .filter(|(e, v)| had.get(*e) != Some(*v))
                .map(|(e, v)| (e, v.as_deref()))
                .collect();
            assert_eq!((gone, new), (gone_by_lookup, new_by_lookup));
        }
    }
}
