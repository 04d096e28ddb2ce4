//! One iptables rule of seg's compiler, read and spelled again for nft.
//! Only the words the compiler writes are understood; anything else is an
//! error (a bug to fix here), never a rule silently dropped.

use super::nft_model::{Elem, Part};
use crate::policy::Cidr;
use std::net::IpAddr;

/// One parsed rule.
#[derive(Default)]
pub(super) struct Rule {
    pub src: Option<Cidr>,
    pub dst: Option<Cidr>,
    in_if: Option<String>,
    out_if: Option<String>,
    proto: Option<String>,
    dports: Option<String>,
    ctstate: Option<String>,
    orig_dst: Option<IpAddr>,
    orig_dport: Option<u16>,
    icmpv6_type: Option<u8>,
    /// `-j X` (`false`) or `-g X` (`true`).
    pub target: Option<(bool, String)>,
}

pub(super) fn parse(text: &str) -> Result<Rule, String> {
    let mut r = Rule::default();
    let mut words = text.split_whitespace();
    while let Some(word) = words.next() {
        let arg = words.next().ok_or_else(|| format!("`{word}` needs an argument"))?.to_string();
        let cidr = |a: &str| a.parse::<Cidr>().map_err(|e| e.to_string());
        match word {
            "-s" => r.src = Some(cidr(&arg)?),
            "-d" => r.dst = Some(cidr(&arg)?),
            "-i" => r.in_if = Some(arg),
            "-o" => r.out_if = Some(arg),
            "-p" => r.proto = Some(arg),
            "-m" if ["tcp", "udp", "multiport", "conntrack", "icmp6"].contains(&arg.as_str()) => {}
            "--icmpv6-type" => {
                r.icmpv6_type = Some(arg.parse().map_err(|_| format!("bad ICMPv6 type `{arg}`"))?)
            }
            "--dport" | "--dports" => r.dports = Some(arg),
            "--ctstate" => r.ctstate = Some(arg),
            "--ctorigdst" => r.orig_dst = Some(arg.parse().map_err(|_| format!("bad address `{arg}`"))?),
            "--ctorigdstport" => r.orig_dport = Some(arg.parse().map_err(|_| format!("bad port `{arg}`"))?),
            "-j" => r.target = Some((false, arg)),
            "-g" => r.target = Some((true, arg)),
            other => return Err(format!("unknown word `{other} {arg}`")),
        }
    }
    if r.target.is_none() {
        return Err("no target".into());
    }
    Ok(r)
}

/// The rule in nft syntax. `ip` is `ip` or `ip6`; `name` gives a chain's
/// nft name; in the base chain a RETURN is `accept` (not final there).
pub(super) fn text(r: &Rule, ip: &str, name: &dyn Fn(&str) -> String, base: bool) -> Result<String, String> {
    let mut parts: Vec<String> = Vec::new();
    let iface = |p: &str| format!("\"{}\"", p.strip_suffix('+').map_or(p.to_string(), |s| format!("{s}*")));
    if let Some(i) = &r.in_if {
        parts.push(format!("iifname {}", iface(i)));
    }
    if let Some(o) = &r.out_if {
        parts.push(format!("oifname {}", iface(o)));
    }
    if let Some(s) = &r.src {
        parts.push(format!("{ip} saddr {}", addr(s)));
    }
    if let Some(d) = &r.dst {
        parts.push(format!("{ip} daddr {}", addr(d)));
    }
    match (r.proto.as_deref(), r.icmpv6_type) {
        (Some("ipv6-icmp"), Some(t)) => parts.push(format!("icmpv6 type {}", icmpv6_name(t)?)),
        (Some("ipv6-icmp"), None) => parts.push("meta l4proto ipv6-icmp".into()),
        (_, Some(_)) => return Err("an ICMPv6 type without the protocol".into()),
        _ => {}
    }
    match (r.proto.as_deref().filter(|p| *p != "ipv6-icmp"), &r.dports) {
        (Some(p), Some(ports)) => parts.push(format!("{p} dport {}", ports_text(ports))),
        (Some(p), None) => parts.push(format!("meta l4proto {p}")),
        (None, Some(_)) => return Err("a port without a protocol".into()),
        (None, None) => {}
    }
    if let Some(states) = &r.ctstate {
        parts.push(ct(states)?);
    }
    if let Some(o) = r.orig_dst {
        parts.push(format!("ct original {ip} daddr {o}"));
    }
    if let Some(p) = r.orig_dport {
        parts.push(format!("ct original proto-dst {p}"));
    }
    let (goto, target) = r.target.as_ref().ok_or("no target")?;
    parts.push(match (goto, target.as_str()) {
        (false, "RETURN") if base => "accept".into(),
        (false, "RETURN") => "return".into(),
        (false, "DROP") => "drop".into(),
        (false, "ACCEPT" | "REJECT") => return Err("seg never accepts or rejects".into()),
        (false, chain) => format!("jump {}", name(chain)),
        (true, chain) => format!("goto {}", name(chain)),
    });
    Ok(parts.join(" "))
}

fn icmpv6_name(t: u8) -> Result<&'static str, String> {
    match t {
        135 => Ok("nd-neighbor-solicit"),
        136 => Ok("nd-neighbor-advert"),
        other => Err(format!("unexpected ICMPv6 type {other}")),
    }
}

fn addr(c: &Cidr) -> String {
    if c.is_host() {
        c.addr().to_string()
    } else {
        c.to_string()
    }
}

/// `80` → `80`, `80:90` → `80-90`, `80:90,100` → `{ 80-90, 100 }`.
fn ports_text(ports: &str) -> String {
    let list: Vec<String> = ports.split(',').map(|p| p.replace(':', "-")).collect();
    match list.as_slice() {
        [one] => one.clone(),
        _ => format!("{{ {} }}", list.join(", ")),
    }
}

fn ct(states: &str) -> Result<String, String> {
    if states == "DNAT" {
        return Ok("ct status dnat".into());
    }
    let mut names: Vec<&str> = Vec::new();
    for s in states.split(',') {
        names.push(match s {
            "ESTABLISHED" => "established",
            "RELATED" => "related",
            "NEW" => "new",
            "INVALID" => "invalid",
            other => return Err(format!("unknown conntrack state `{other}`")),
        });
    }
    names.sort();
    Ok(format!("ct state {}", names.join(",")))
}

/// A published port let in from the world (Docker's DNAT to one container
/// port): `(protocol, bound to a host address, element)`.
pub(super) fn published(r: &Rule) -> Option<(String, bool, Elem)> {
    let plain = r.src.is_none() && r.in_if.is_none() && r.out_if.is_none();
    let dst = r.dst.filter(|d| d.is_host())?;
    let port: u16 = r.dports.as_deref()?.parse().ok()?;
    let accepts = r.target.as_ref().is_some_and(|t| *t == (false, "RETURN".to_string()));
    if !plain || !accepts || r.ctstate.as_deref() != Some("DNAT") {
        return None;
    }
    let mut parts = vec![Part::Addrs(dst.addr(), dst.addr()), Part::Port(port)];
    if let Some(h) = r.orig_dst {
        parts.push(Part::Addrs(h, h));
    }
    parts.push(Part::Port(r.orig_dport?));
    Some((r.proto.clone()?, r.orig_dst.is_some(), Elem(parts)))
}

/// The key of a published-port set (`ipv4_addr . inet_service . …`).
pub(super) fn published_key(addr_type: &str, host: bool) -> Vec<String> {
    let mut key = vec![addr_type.to_string(), "inet_service".to_string()];
    if host {
        key.push(addr_type.to_string());
    }
    key.push("inet_service".to_string());
    key
}

/// The rule that lets in what a published-port set holds. The protocol in
/// front gives `ct original proto-dst` its type (nft 1.0.6 needs it).
pub(super) fn published_rule(ip: &str, proto: &str, host: bool, set: &str) -> String {
    let orig = if host { format!(" . ct original {ip} daddr") } else { String::new() };
    format!("meta l4proto {proto} {ip} daddr . {proto} dport{orig} . ct original proto-dst @{set} ct status dnat return")
}
