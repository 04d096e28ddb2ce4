//! A packet walker over a compiled table: what the kernel would decide for a
//! packet, and how many rules it looked at. It understands exactly the rule
//! spellings seg emits (anything else is an error), which makes it an
//! oracle for tests and the measure of "rules traversed" in the benchmark.

use super::naming::TOP;
use super::ruleset::Table;
use crate::policy::{Cidr, CidrError, Proto, ProtoError};
use std::collections::HashMap;
use std::net::IpAddr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// `None`: neither tcp nor udp (e.g. ICMP).
    pub proto: Option<Proto>,
    pub dport: u16,
    pub in_if: String,
    pub out_if: String,
    pub established: bool,
    /// Docker's DNAT: the original (host address, host port).
    pub dnat: Option<(IpAddr, u16)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// seg returned it to Docker's chains (allowed as far as seg goes).
    Pass,
    Drop,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Return,
    Drop,
    Jump(String),
    Goto(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Rule {
    src: Option<Cidr>,
    dst: Option<Cidr>,
    in_if: Option<String>,
    out_if: Option<String>,
    proto: Option<Proto>,
    dports: Vec<(u16, u16)>,
    ctstates: Vec<String>,
    orig_dst: Option<IpAddr>,
    orig_dport: Option<u16>,
    /// An ICMPv6 rule: the walker's packets are tcp, udp or untyped, so it
    /// never matches one.
    icmp6: bool,
    target: Option<Target>,
}

/// A rule of the table that the walker does not understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{chain}: `{rule}`: {reason}")]
pub struct UnknownRule {
    pub chain: String,
    pub rule: String,
    pub reason: String,
}

/// A table, parsed once for many packets.
pub struct Walker {
    chains: HashMap<String, Vec<Rule>>,
}

impl Walker {
    pub fn new(table: &Table) -> Result<Walker, UnknownRule> {
        let mut chains = HashMap::new();
        for (name, rules) in &table.chains {
            let parsed = rules.iter().map(|r| {
                parse(r).map_err(|reason| UnknownRule { chain: name.clone(), rule: r.clone(), reason })
            });
            chains.insert(name.clone(), parsed.collect::<Result<Vec<_>, _>>()?);
        }
        Ok(Walker { chains })
    }

    /// The verdict and the number of rules tested on the way.
    pub fn walk(&self, p: &Packet) -> (Verdict, usize) {
        if !self.chains.contains_key(TOP) {
            return (Verdict::Pass, 0);
        }
        let mut stack: Vec<(&str, usize)> = vec![(TOP, 0)];
        let mut tested = 0;
        while let Some((chain, index)) = stack.pop() {
            let Some(rule) = self.chains.get(chain).and_then(|r| r.get(index)) else {
                continue; // fell off: back to the caller
            };
            tested += 1;
            if !matches(rule, p) {
                stack.push((chain, index + 1));
                continue;
            }
            match rule.target.as_ref().expect("parsed rules have a target") {
                Target::Return => {}
                Target::Drop => return (Verdict::Drop, tested),
                Target::Jump(next) => {
                    stack.push((chain, index + 1));
                    stack.push((next, 0));
                }
                Target::Goto(next) => stack.push((next, 0)),
            }
        }
        (Verdict::Pass, tested)
    }
}

fn matches(r: &Rule, p: &Packet) -> bool {
    let iface = |pat: &Option<String>, name: &str| match pat {
        None => true,
        Some(pat) => match pat.strip_suffix('+') {
            Some(prefix) => name.starts_with(prefix),
            None => pat == name,
        },
    };
    let ct_ok = r.ctstates.is_empty()
        || r.ctstates.iter().any(|s| match s.as_str() {
            "ESTABLISHED" | "RELATED" => p.established,
            "DNAT" => p.dnat.is_some(),
            _ => false,
        });
    !r.icmp6
        && r.src.is_none_or(|c| c.contains_ip(p.src))
        && r.dst.is_none_or(|c| c.contains_ip(p.dst))
        && iface(&r.in_if, &p.in_if)
        && iface(&r.out_if, &p.out_if)
        && r.proto.is_none_or(|proto| p.proto == Some(proto))
        && (r.dports.is_empty() || r.dports.iter().any(|(a, b)| (*a..=*b).contains(&p.dport)))
        && ct_ok
        && r.orig_dst.is_none_or(|o| p.dnat.is_some_and(|(h, _)| h == o))
        && r.orig_dport.is_none_or(|o| p.dnat.is_some_and(|(_, port)| port == o))
}

fn parse(text: &str) -> Result<Rule, String> {
    let mut rule = Rule::default();
    let mut words = text.split_whitespace();
    while let Some(word) = words.next() {
        let mut arg = || words.next().ok_or_else(|| format!("`{word}` needs an argument"));
        match word {
            "-s" => rule.src = Some(arg()?.parse().map_err(|e: CidrError| e.to_string())?),
            "-d" => rule.dst = Some(arg()?.parse().map_err(|e: CidrError| e.to_string())?),
            "-i" => rule.in_if = Some(arg()?.to_string()),
            "-o" => rule.out_if = Some(arg()?.to_string()),
            "-p" => match arg()? {
                "ipv6-icmp" => rule.icmp6 = true,
                p => rule.proto = Some(p.parse().map_err(|e: ProtoError| e.to_string())?),
            },
            "--icmpv6-type" => drop(arg()?),
            "-m" => {
                let module = arg()?;
                if !["tcp", "udp", "multiport", "conntrack", "icmp6"].contains(&module) {
                    return Err(format!("unknown match `{module}`"));
                }
            }
            "--dport" | "--dports" => {
                for part in arg()?.split(',') {
                    let (a, b) = part.split_once(':').unwrap_or((part, part));
                    rule.dports
                        .push((a.parse().map_err(|_| "bad port")?, b.parse().map_err(|_| "bad port")?));
                }
            }
            "--ctstate" => rule.ctstates = arg()?.split(',').map(str::to_string).collect(),
            "--ctorigdst" => rule.orig_dst = Some(arg()?.parse().map_err(|_| "bad address")?),
            "--ctorigdstport" => rule.orig_dport = Some(arg()?.parse().map_err(|_| "bad port")?),
            "-j" | "-g" => {
                let t = arg()?;
                rule.target = Some(match (word, t) {
                    ("-j", "RETURN") => Target::Return,
                    ("-j", "DROP") => Target::Drop,
                    ("-j", chain) => Target::Jump(chain.to_string()),
                    (_, chain) => Target::Goto(chain.to_string()),
                });
            }
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    if rule.target.is_none() {
        return Err("no target".into());
    }
    Ok(rule)
}
