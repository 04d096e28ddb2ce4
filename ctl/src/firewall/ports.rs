//! Port sets and their rules. Sets are normalized (sorted, overlapping and
//! adjacent ranges merged) so that equal sets render — and hash — equally.

use crate::policy::{Cidr, PortRange, Proto};
use std::collections::{BTreeMap, BTreeSet};

/// `multiport` takes at most 15 ports per rule; a range counts as two.
const MULTIPORT_SLOTS: usize = 15;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PortSet {
    /// Every port and protocol (a rule without `ports:`).
    Any,
    Ranges(Vec<PortRange>),
}

impl PortSet {
    pub fn from_policy(ports: Option<&[PortRange]>) -> PortSet {
        match ports {
            None => PortSet::Any,
            Some(p) => PortSet::Ranges(normalize(p.iter().copied())),
        }
    }

    pub fn union(&self, other: &PortSet) -> PortSet {
        match (self, other) {
            (PortSet::Ranges(a), PortSet::Ranges(b)) => {
                PortSet::Ranges(normalize(a.iter().chain(b).copied()))
            }
            _ => PortSet::Any,
        }
    }

    pub fn allows(&self, proto: Proto, port: u16) -> bool {
        match self {
            PortSet::Any => true,
            PortSet::Ranges(r) => r.iter().any(|r| r.contains(proto, port)),
        }
    }

    /// A stable text for chain names: `8080/tcp,9000-9100/udp` or `any`.
    pub fn key(&self) -> String {
        match self {
            PortSet::Any => "any".to_string(),
            PortSet::Ranges(r) => r.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        }
    }

    /// The match parts, one per rule: `-p tcp -m tcp --dport 80`,
    /// `-p tcp -m multiport --dports 80,443,8000:8100`; `[""]` for `Any`.
    pub fn matches(&self) -> Vec<String> {
        let PortSet::Ranges(ranges) = self else {
            return vec![String::new()];
        };
        let mut out = Vec::new();
        for proto in [Proto::Tcp, Proto::Udp] {
            let of: Vec<&PortRange> = ranges.iter().filter(|r| r.proto == proto).collect();
            let p = proto.name();
            if let [one] = of.as_slice() {
                out.push(format!("-p {p} -m {p} --dport {}", one.to_iptables()));
                continue;
            }
            let mut chunk: Vec<String> = Vec::new();
            let mut slots = 0;
            for r in of {
                let cost = if r.first == r.last { 1 } else { 2 };
                if slots + cost > MULTIPORT_SLOTS {
                    out.push(format!("-p {p} -m multiport --dports {}", chunk.join(",")));
                    chunk.clear();
                    slots = 0;
                }
                chunk.push(r.to_iptables());
                slots += cost;
            }
            if !chunk.is_empty() {
                out.push(format!("-p {p} -m multiport --dports {}", chunk.join(",")));
            }
        }
        out
    }
}

fn normalize(ranges: impl Iterator<Item = PortRange>) -> Vec<PortRange> {
    let sorted: BTreeSet<PortRange> = ranges.collect();
    let mut out: Vec<PortRange> = Vec::new();
    for r in sorted {
        match out.last_mut() {
            Some(last) if last.proto == r.proto && u32::from(r.first) <= u32::from(last.last) + 1 => {
                last.last = last.last.max(r.last);
            }
            _ => out.push(r),
        }
    }
    out
}

/// A source inside a wider allowed CIDR also gets that CIDR's ports: the
/// trie picks the longest prefix only, while allows add up.
pub(super) fn inherit_ports(sources: &BTreeMap<Cidr, PortSet>) -> BTreeMap<Cidr, PortSet> {
    sources
        .iter()
        .map(|(key, ports)| {
            let wider = sources.iter().filter(|(k, _)| *k != key && k.contains(key));
            (*key, wider.fold(ports.clone(), |acc, (_, p)| acc.union(p)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(list: &[&str]) -> PortSet {
        let ranges: Vec<PortRange> = list.iter().map(|s| s.parse().unwrap()).collect();
        PortSet::from_policy(Some(&ranges))
    }

    #[test]
    fn normalizes_and_renders() {
        let s = set(&["81/tcp", "80/tcp", "82-90/tcp", "53/udp", "100/tcp"]);
        assert_eq!(s.key(), "80-90/tcp,100/tcp,53/udp");
        assert_eq!(s.matches(), vec!["-p tcp -m multiport --dports 80:90,100", "-p udp -m udp --dport 53"]);
        assert!(s.allows(Proto::Tcp, 85) && !s.allows(Proto::Udp, 85));
        assert_eq!(s.union(&PortSet::Any), PortSet::Any);
        let many: Vec<String> = (1..=20).map(|i| format!("{}/tcp", i * 10)).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(set(&many).matches().len(), 2);
        assert_eq!(PortSet::Any.matches(), vec![String::new()]);
    }
}
