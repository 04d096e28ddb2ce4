//! The nftables backend: `nft -j list table inet seg` to read, `nft -f -`
//! to write — one process and one atomic transaction per change, like
//! `iptables-restore`: the script is the transaction, nft checks all of it
//! before the kernel commits any of it, and a refused script changes
//! nothing (nft's error names the script's line). Both families live in the
//! one table, so one transaction covers IPv4 and IPv6.
//!
//! seg owns only `table inet seg`; Docker's tables (`ip filter` of
//! iptables-nft, Docker 29's `ip docker-bridges`) are never touched.

use super::exec::run;
use super::nft_cache::NftCache;
use super::nft_link::{LinkError, NftLink};
use super::nft_model::{element_delta, render, render_delta, Elem, NftTable, Part, Set, SetDelta};
use super::nft_render::{nft_name, to_nft, to_nft_cached};
use super::{ApplyReport, Backend, Firewall, FirewallError, Ruleset, Table};
use crate::policy::Family;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Default)]
pub struct NftablesFirewall {
    prefix: Vec<String>,
    /// The table as this process last wrote it (translating a ruleset again
    /// for every container event would double the work).
    applied: Option<NftTable>,
    /// Where element changes go as netlink batches ([`super::nft_netlink`]).
    netlink: Netlink,
    link: Arc<Mutex<Option<NftLink>>>,
    /// Translations of unchanged chains, reused ([`super::nft_cache`]).
    cache: NftCache,
    /// Netlink batches the kernel took (tests and benchmarks read it).
    batches: Arc<AtomicU64>,
}

/// The network namespace a netlink batch is sent in.
#[derive(Clone, Debug, Default)]
enum Netlink {
    /// This process's own.
    #[default]
    Here,
    /// A named namespace (`ip netns exec NS`).
    Named(PathBuf),
    /// A command prefix seg cannot follow with a socket: `nft -f` only.
    Off,
}

impl NftablesFirewall {
    /// The host's own ruleset.
    pub fn new() -> NftablesFirewall {
        NftablesFirewall::default()
    }

    /// The ruleset of network namespace `ns` (via `ip netns exec`).
    pub fn in_netns(ns: &str) -> NftablesFirewall {
        let mut fw = NftablesFirewall::with_prefix(["ip", "netns", "exec", ns]);
        fw.netlink = Netlink::Named(PathBuf::from("/run/netns").join(ns));
        fw
    }

    /// Runs every command behind `prefix` (e.g. `nsenter --net=/proc/N/ns/net`);
    /// element changes then go through `nft -f` too.
    pub fn with_prefix<S: Into<String>>(prefix: impl IntoIterator<Item = S>) -> NftablesFirewall {
        let prefix: Vec<String> = prefix.into_iter().map(Into::into).collect();
        let netlink = if prefix.is_empty() { Netlink::Here } else { Netlink::Off };
        NftablesFirewall { prefix, netlink, ..NftablesFirewall::default() }
    }

    /// Without netlink batches: every change through `nft -f` (the
    /// benchmark's baseline).
    pub fn nft_only(mut self) -> NftablesFirewall {
        self.netlink = Netlink::Off;
        self
    }

    /// How many changes went to the kernel as netlink batches.
    pub fn netlink_batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// seg's table as live now; `None` when there is none.
    pub fn live(&mut self) -> Result<Option<NftTable>, FirewallError> {
        let args = ["-j", "list", "table", "inet", "seg"];
        let text = match run(&self.prefix, "nft", &args, None) {
            Ok(text) => text,
            Err(FirewallError::Failed { stderr, .. }) if stderr.contains("No such file or directory") => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let json: Value = serde_json::from_str(&text).map_err(|e| FirewallError::BadJson {
            command: format!("nft {}", args.join(" ")),
            cause: e.to_string(),
        })?;
        Ok(Some(from_json(&json)))
    }

    /// Whether this kernel and nft accept seg's kind of table: a probe table
    /// (an interval verdict map and a forward base chain) created and
    /// deleted in one transaction, which leaves nothing behind.
    pub fn probe(&self) -> Result<(), FirewallError> {
        let script = "add table inet seg-probe\n\
            add chain inet seg-probe c { type filter hook forward priority filter - 10; policy accept; }\n\
            add map inet seg-probe m { type ipv4_addr : verdict; flags interval; }\n\
            add element inet seg-probe m { 10.0.0.0-10.0.0.9 : drop }\n\
            add rule inet seg-probe c ip daddr vmap @m\n\
            delete table inet seg-probe\n";
        run(&self.prefix, "nft", &["-f", "-"], Some(script)).map(drop)
    }

    /// Brings the table from `against` (`None`: no seg table) to `want` in
    /// one transaction: element changes as a netlink batch when they can
    /// be, anything else as an `nft -f` script. The report holds the script
    /// either way (what `policy diff` and the debug log show).
    fn write(&mut self, want: NftTable, against: Option<&NftTable>) -> Result<ApplyReport, FirewallError> {
        self.applied = None;
        let delta = against.filter(|_| !want.is_empty()).and_then(|live| element_delta(&want, live));
        let script = match &delta {
            Some(delta) => render_delta(delta),
            None => render(&want, against),
        };
        if !script.is_empty() {
            let batched = match &delta {
                Some(delta) => self.commit_elements(delta)?,
                None => false,
            };
            if !batched {
                run(&self.prefix, "nft", &["-f", "-"], Some(&script))?;
            }
        }
        drop(delta);
        self.applied = Some(want);
        Ok(ApplyReport { v4: script, v6: String::new() })
    }

    /// Sends `delta` as one netlink batch; `Ok(false)` when it should go
    /// through `nft -f` instead (not encodable, or no socket).
    fn commit_elements(&self, delta: &[SetDelta<'_>]) -> Result<bool, FirewallError> {
        let netns = match &self.netlink {
            Netlink::Off => return Ok(false),
            Netlink::Here => None,
            Netlink::Named(path) => Some(path.as_path()),
        };
        let mut link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        if link.is_none() {
            match NftLink::open(netns) {
                Ok(opened) => *link = Some(opened),
                Err(e) => {
                    tracing::debug!(error = %e, "no netlink socket to nf_tables; using nft -f");
                    return Ok(false);
                }
            }
        }
        let Some(open) = link.as_mut() else { return Ok(false) };
        match open.commit(delta) {
            Ok(()) => {
                self.batches.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Err(LinkError::NotEncodable(why)) => {
                tracing::debug!(%why, "element change goes through nft -f");
                Ok(false)
            }
            Err(LinkError::Io(e)) => {
                // The batch may or may not have been applied: the script
                // then fails on what is already there, and the caller reads
                // the kernel (a full sync).
                tracing::debug!(error = %e, "netlink batch failed; trying nft -f");
                *link = None;
                Ok(false)
            }
            Err(LinkError::Refused { what, cause }) => Err(FirewallError::Netlink { what, cause }),
        }
    }
}

impl Firewall for NftablesFirewall {
    /// seg's chains of `family` by their iptables names (their rules are
    /// not read back as text: chains compare by their rules' tags).
    fn current(&mut self, family: Family) -> Result<Table, FirewallError> {
        let live = self.live()?.unwrap_or_default();
        let mut table = Table::default();
        for name in live.chains.keys() {
            let own = match family {
                Family::V4 => !name.starts_with("SEG6-"),
                Family::V6 => name.starts_with("SEG6-") || name == super::naming::TOP,
            };
            if own {
                let iptables_name = name.replacen("SEG6-", "SEG-", 1);
                debug_assert_eq!(nft_name(&iptables_name, family), *name);
                table.chains.insert(iptables_name, Arc::new(Vec::new()));
            }
        }
        Ok(table)
    }

    /// Runs an nft script (both families at once; `family` is not used).
    fn restore(&mut self, _family: Family, text: &str) -> Result<(), FirewallError> {
        self.applied = None;
        run(&self.prefix, "nft", &["-f", "-"], Some(text)).map(drop)
    }

    fn backend(&self) -> Backend {
        Backend::Nftables
    }

    fn sync(&mut self, desired: &Ruleset) -> Result<ApplyReport, FirewallError> {
        let want = to_nft_cached(desired, &mut self.cache)?;
        let live = self.live()?;
        self.write(want, live.as_ref())
    }

    fn plan(&mut self, desired: &Ruleset) -> Result<ApplyReport, FirewallError> {
        let script = render(&to_nft(desired)?, self.live()?.as_ref());
        Ok(ApplyReport { v4: script, v6: String::new() })
    }

    fn update(&mut self, last: &Ruleset, desired: &Ruleset) -> Result<ApplyReport, FirewallError> {
        let before = match self.applied.take() {
            Some(t) => t,
            None => to_nft(last)?,
        };
        let want = to_nft_cached(desired, &mut self.cache)?;
        self.write(want, Some(&before).filter(|t| !t.is_empty()))
    }
}

/// The table from `nft -j list table inet seg`. Anything seg would not have
/// written (a rule without seg's tag, an element it cannot read) makes the
/// table differ from any wanted one, so the next sync replaces it whole.
pub fn from_json(json: &Value) -> NftTable {
    let mut table = NftTable::default();
    let objects = json.get("nftables").and_then(Value::as_array).cloned().unwrap_or_default();
    for obj in &objects {
        if let Some(c) = obj.get("chain") {
            let name = c["name"].as_str().unwrap_or_default().to_string();
            let hook = c.get("hook").map(|_| hook_text(c));
            Arc::make_mut(table.chains.entry(name).or_default()).hook = hook;
        } else if let Some(r) = obj.get("rule") {
            let chain = r["chain"].as_str().unwrap_or_default().to_string();
            let tag = r.get("comment").and_then(Value::as_str).unwrap_or("(untagged)").to_string();
            Arc::make_mut(table.chains.entry(chain).or_default()).tags.push(tag);
        } else if let Some(s) = obj.get("set").or_else(|| obj.get("map")) {
            let name = s["name"].as_str().unwrap_or_default().to_string();
            table.sets.insert(name, Arc::new(set_from_json(s)));
        }
    }
    table
}

/// A base chain's declaration in seg's spelling (`priority filter - 10`).
fn hook_text(c: &Value) -> String {
    let prio = c["prio"].as_i64().unwrap_or(0);
    let prio = match prio {
        0 => "filter".to_string(),
        p if p < 0 => format!("filter - {}", -p),
        p => format!("filter + {p}"),
    };
    let s = |k: &str| c[k].as_str().unwrap_or("?").to_string();
    format!("type {} hook {} priority {prio}; policy {};", s("type"), s("hook"), s("policy"))
}

fn set_from_json(s: &Value) -> Set {
    let key = match &s["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts.iter().map(|t| t.as_str().unwrap_or("?").to_string()).collect(),
        _ => vec!["?".to_string()],
    };
    let verdicts = s.get("map").and_then(Value::as_str) == Some("verdict");
    let flags = s.get("flags").and_then(Value::as_array).cloned().unwrap_or_default();
    let interval = flags.iter().any(|f| f.as_str() == Some("interval"));
    let mut elems = BTreeMap::new();
    for (i, e) in s.get("elem").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let (k, v) = match (verdicts, e.as_array()) {
            (true, Some(pair)) if pair.len() == 2 => (elem(&pair[0]), verdict(&pair[1])),
            (true, _) => (None, None),
            (false, _) => (elem(e), None),
        };
        // An unreadable element still counts, as one that matches nothing seg wants.
        let k = k.unwrap_or(Elem(vec![Part::Port(0), Part::Port(i as u16)]));
        elems.insert(k, v.or_else(|| verdicts.then(|| "(unreadable)".to_string())));
    }
    Set { key, verdicts, interval, elems }
}

fn elem(v: &Value) -> Option<Elem> {
    match v {
        Value::Object(o) if o.contains_key("concat") => {
            let parts: Option<Vec<Vec<Part>>> =
                o["concat"].as_array()?.iter().map(|p| elem(p).map(|e| e.0)).collect();
            Some(Elem(parts?.into_iter().flatten().collect()))
        }
        Value::Object(o) if o.contains_key("elem") => elem(&o["elem"]["val"]),
        _ => part(v).map(|p| Elem(vec![p])),
    }
}

fn part(v: &Value) -> Option<Part> {
    let ip = |v: &Value| v.as_str()?.parse::<IpAddr>().ok();
    match v {
        Value::String(_) => ip(v).map(|a| Part::Addrs(a, a)),
        Value::Number(n) => Some(Part::Port(u16::try_from(n.as_u64()?).ok()?)),
        Value::Object(o) if o.contains_key("range") => {
            let r = o["range"].as_array()?;
            Some(Part::Addrs(ip(r.first()?)?, ip(r.get(1)?)?))
        }
        Value::Object(o) if o.contains_key("prefix") => {
            let p = &o["prefix"];
            let cidr = crate::policy::Cidr::new(ip(&p["addr"])?, u8::try_from(p["len"].as_u64()?).ok()?)?;
            let host_bits = cidr.family().width() - cidr.prefix_len();
            let last = last_of(cidr.addr(), host_bits);
            Some(Part::Addrs(cidr.addr(), last))
        }
        _ => None,
    }
}

fn last_of(first: IpAddr, host_bits: u8) -> IpAddr {
    let ones = |bits: u8| if bits >= 128 { u128::MAX } else { (1u128 << bits) - 1 };
    match first {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) | ones(host_bits) as u32).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) | ones(host_bits)).into()),
    }
}

fn verdict(v: &Value) -> Option<String> {
    let o = v.as_object()?;
    let (kind, arg) = o.iter().next()?;
    match kind.as_str() {
        "jump" | "goto" => Some(format!("{kind} {}", arg["target"].as_str()?)),
        "drop" | "return" | "accept" | "continue" => Some(kind.clone()),
        _ => None,
    }
}
