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

pub const FAMILY_TABLE: &str = "inet seg";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NftTable {
    pub chains: BTreeMap<String, Chain>,
    pub sets: BTreeMap<String, Set>,
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
            && self.chains.iter().all(|(n, c)| live.chains.get(n).is_some_and(|l| c.same(l)));
        let sets = self.sets.len() == live.sets.len()
            && self.sets.iter().all(|(n, s)| live.sets.get(n).is_some_and(|l| s.same_declaration(l)));
        chains && sets
    }
}

/// The `nft -f` script that turns `live` (`None`: no seg table) into
/// `want`; empty when nothing needs to change. Replacing the table is
/// `add table` (so that the `delete` cannot fail), `delete table`, then the
/// whole table — one transaction, so no packet ever sees a half-built table.
pub fn render(want: &NftTable, live: Option<&NftTable>) -> String {
    match live {
        None if want.is_empty() => String::new(),
        Some(_) if want.is_empty() => format!("delete table {FAMILY_TABLE}\n"),
        Some(live) if want.elements_only(live) => render_elements(want, live),
        _ => {
            let mut out = format!("add table {FAMILY_TABLE}\ndelete table {FAMILY_TABLE}\n");
            out.push_str(&render_full(want));
            out
        }
    }
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

/// Deletions first (a range that is split or merged must be gone before its
/// pieces come in), then additions. A changed verdict is both.
fn render_elements(want: &NftTable, live: &NftTable) -> String {
    let mut out = String::new();
    for (name, set) in &live.sets {
        let wanted = &want.sets[name].elems;
        let gone = set.elems.iter().filter(|(e, v)| wanted.get(*e) != Some(*v));
        push_elements(&mut out, "delete", name, gone.map(|(e, _)| (e, None)));
    }
    for (name, set) in &want.sets {
        let had = &live.sets[name].elems;
        let new = set.elems.iter().filter(|(e, v)| had.get(*e) != Some(*v));
        push_elements(&mut out, "add", name, new.map(|(e, v)| (e, v.as_deref())));
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
