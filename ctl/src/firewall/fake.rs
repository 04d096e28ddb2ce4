//! An in-memory firewall for tests. It interprets the restore text with the
//! kernel's rules that matter to seg — a chain must exist before rules go
//! into it, `-D` must find its rule, `-X` needs an empty, unreferenced chain,
//! and a transaction is all or nothing — so a wrong transaction fails here
//! as it would on a host.

use super::{Firewall, FirewallError, Table};
use crate::policy::Family;
use std::collections::BTreeMap;

type Chains = BTreeMap<String, Vec<String>>;

#[derive(Clone, Debug)]
pub struct FakeFirewall {
    v4: Chains,
    v6: Chains,
    /// Every transaction run, in order.
    pub restores: Vec<(Family, String)>,
}

impl Default for FakeFirewall {
    fn default() -> Self {
        FakeFirewall::new()
    }
}

impl FakeFirewall {
    /// Tables as Docker leaves them: `FORWARD` jumps to `DOCKER-USER`.
    pub fn new() -> FakeFirewall {
        let mut chains = Chains::new();
        chains.insert("INPUT".into(), vec![]);
        chains.insert("OUTPUT".into(), vec![]);
        chains.insert("FORWARD".into(), vec!["-j DOCKER-USER".into(), "-j DOCKER-ISOLATION-STAGE-1".into()]);
        chains.insert("DOCKER-USER".into(), vec!["-j RETURN".into()]);
        chains.insert("DOCKER-ISOLATION-STAGE-1".into(), vec!["-j RETURN".into()]);
        FakeFirewall { v4: chains.clone(), v6: chains, restores: Vec::new() }
    }

    pub fn chains(&self, family: Family) -> &Chains {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// For tests that tamper, as an admin or a firewall reload would.
    pub fn chains_mut(&mut self, family: Family) -> &mut Chains {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }

    /// The tables in `iptables-save` format.
    pub fn save(&self, family: Family) -> String {
        let chains = self.chains(family);
        let mut out = String::from("*filter\n");
        for name in chains.keys() {
            let policy = if ["INPUT", "FORWARD", "OUTPUT"].contains(&name.as_str()) { "ACCEPT" } else { "-" };
            out.push_str(&format!(":{name} {policy} [0:0]\n"));
        }
        for (name, rules) in chains {
            rules.iter().for_each(|r| out.push_str(&format!("-A {name} {r}\n")));
        }
        out.push_str("COMMIT\n");
        out
    }
}

impl Firewall for FakeFirewall {
    fn current(&mut self, family: Family) -> Result<Table, FirewallError> {
        Ok(Table::from_iptables_save(&self.save(family)))
    }

    fn restore(&mut self, family: Family, text: &str) -> Result<(), FirewallError> {
        let mut work = self.chains(family).clone();
        for (n, line) in text.lines().enumerate() {
            step(&mut work, line)
                .map_err(|e| FirewallError::Refused(format!("line {}: {e}: {line}", n + 1)))?;
        }
        check_references(&work)?;
        *self.chains_mut(family) = work;
        self.restores.push((family, text.to_string()));
        Ok(())
    }
}

fn step(chains: &mut Chains, line: &str) -> Result<(), String> {
    if line.is_empty() || line == "*filter" || line == "COMMIT" || line.starts_with('#') {
        return Ok(());
    }
    if let Some(decl) = line.strip_prefix(':') {
        let name = decl.split_whitespace().next().ok_or("empty declaration")?;
        // --noflush: declaring an existing chain flushes it.
        chains.insert(name.to_string(), Vec::new());
        return Ok(());
    }
    let (cmd, rest) = line.split_once(' ').ok_or("no command")?;
    let (chain, rule) = rest.split_once(' ').unwrap_or((rest, ""));
    let rules = chains.get_mut(chain).ok_or_else(|| format!("no chain {chain}"))?;
    match cmd {
        "-A" => rules.push(rule.to_string()),
        "-I" => {
            let (pos, rule) = rule.split_once(' ').ok_or("no position")?;
            let pos: usize = pos.parse().map_err(|_| "bad position")?;
            if pos == 0 || pos > rules.len() + 1 {
                return Err("index of insertion too big".into());
            }
            rules.insert(pos - 1, rule.to_string());
        }
        "-D" => {
            let at = rules.iter().position(|r| r == rule).ok_or("no such rule to delete")?;
            rules.remove(at);
        }
        "-F" => rules.clear(),
        "-X" => {
            if !rules.is_empty() {
                return Err("chain is not empty".into());
            }
            let used = chains.values().flatten().any(|r| target(r) == Some(chain));
            if used {
                return Err("chain is still referenced".into());
            }
            chains.remove(chain);
        }
        other => return Err(format!("unknown command {other}")),
    }
    Ok(())
}

fn target(rule: &str) -> Option<&str> {
    let mut words = rule.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-j" || w == "-g" {
            return words.next();
        }
    }
    None
}

/// Every jump must land on an existing chain (or a built-in target).
fn check_references(chains: &Chains) -> Result<(), FirewallError> {
    for (name, rules) in chains {
        for rule in rules {
            let Some(t) = target(rule) else { continue };
            if !["RETURN", "DROP", "ACCEPT", "REJECT"].contains(&t) && !chains.contains_key(t) {
                return Err(FirewallError::Refused(format!("{name}: `{rule}` targets a missing chain")));
            }
        }
    }
    Ok(())
}
