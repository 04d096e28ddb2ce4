//! The ruleset value and its `iptables-restore` rendering.
//!
//! A [`Table`] is seg's chains of one family's filter table, each rule in the
//! exact spelling `iptables-save` prints back, so that a table read from the
//! kernel compares equal to the compiled one when nothing changed. Rendering
//! against what is live emits only the difference, as one transaction:
//! changed and new chains declared (which creates or flushes them) and
//! refilled, the `DOCKER-USER` jump repaired if needed, and chains that are
//! gone deleted last, once nothing references them.

use super::naming::{DOCKER_USER, PREFIX, TOP};
use crate::policy::Family;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A chain's rules. Shared, so that the controller's successive rulesets
/// (and its cache of unchanged services) hold one copy of what did not change.
pub type Rules = Arc<Vec<String>>;

const JUMP: &str = "-j SEG-FORWARD";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub v4: Table,
    pub v6: Table,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// seg's chains: name → rules (without the `-A NAME ` head).
    pub chains: BTreeMap<String, Rules>,
    /// The hooks as found in the kernel; `None` in a compiled table.
    pub hooks: Option<Hooks>,
}

/// The built-in and Docker chains seg hooks into, as read from the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hooks {
    /// `FORWARD`'s rules.
    pub forward: Vec<String>,
    /// `DOCKER-USER`'s rules; `None` when the chain does not exist.
    pub docker_user: Option<Vec<String>>,
}

impl Ruleset {
    pub fn table(&self, family: Family) -> &Table {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    pub fn table_mut(&mut self, family: Family) -> &mut Table {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }

    /// The `iptables-restore --noflush` input that turns `prev` (what is live;
    /// `None`: a table with no seg chains and no jump) into this ruleset.
    /// Empty when nothing needs to change.
    pub fn render_iptables_restore(&self, prev: Option<&Ruleset>) -> String {
        self.v4.render(prev.map(|p| &p.v4))
    }

    /// The same for `ip6tables-restore`.
    pub fn render_ip6tables_restore(&self, prev: Option<&Ruleset>) -> String {
        self.v6.render(prev.map(|p| &p.v6))
    }

    pub fn rule_count(&self) -> usize {
        self.v4.rule_count() + self.v6.rule_count()
    }
}

impl Table {
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(|r| r.len()).sum()
    }

    /// How many chains deep a packet can go from `SEG-FORWARD` (counting it).
    /// nftables refuses nesting deeper than 16 from `FORWARD`, and
    /// `FORWARD` → `DOCKER-USER` → `SEG-FORWARD` use two of those levels.
    pub fn max_depth(&self) -> usize {
        fn depth(chains: &BTreeMap<String, Rules>, name: &str, seen: usize) -> usize {
            let Some(rules) = chains.get(name).filter(|_| seen < 64) else { return 0 };
            let targets = rules
                .iter()
                .filter_map(|r| r.split_whitespace().skip_while(|w| *w != "-j" && *w != "-g").nth(1));
            1 + targets.map(|t| depth(chains, t, seen + 1)).max().unwrap_or(0)
        }
        depth(&self.chains, TOP, 0)
    }

    /// A table seg has nothing in (then the family is left alone).
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }

    pub fn render(&self, prev: Option<&Table>) -> String {
        let empty = Table::default();
        let old = prev.unwrap_or(&empty);
        let changed: Vec<&String> = self
            .chains
            .iter()
            // The same allocation is the same chain (no need to compare rules).
            .filter(|(name, rules)| {
                old.chains.get(*name).is_none_or(|o| !Arc::ptr_eq(o, rules) && o != *rules)
            })
            .map(|(n, _)| n)
            .collect();
        let removed: Vec<&String> =
            old.chains.keys().filter(|name| !self.chains.contains_key(*name)).collect();
        let (declare_hook, hook_lines) = self.hook_repairs(prev);
        if changed.is_empty() && removed.is_empty() && hook_lines.is_empty() {
            return String::new();
        }
        let mut out = String::from("*filter\n");
        if declare_hook {
            out.push_str(&format!(":{DOCKER_USER} - [0:0]\n"));
        }
        for name in changed.iter().chain(&removed) {
            out.push_str(&format!(":{name} - [0:0]\n"));
        }
        for name in &changed {
            for rule in self.chains[*name].iter() {
                out.push_str(&format!("-A {name} {rule}\n"));
            }
        }
        for line in hook_lines {
            out.push_str(&line);
            out.push('\n');
        }
        for name in &removed {
            out.push_str(&format!("-X {name}\n"));
        }
        out.push_str("COMMIT\n");
        out
    }

    /// Lines that put exactly one `-j SEG-FORWARD` at the top of
    /// `DOCKER-USER` (or remove it when seg has no chains), and that restore
    /// `FORWARD`'s jump to `DOCKER-USER` if it went missing (libnetwork #2631).
    /// Returns whether `DOCKER-USER` must be created first.
    fn hook_repairs(&self, prev: Option<&Table>) -> (bool, Vec<String>) {
        let want = self.chains.contains_key(TOP);
        let Some(hooks) = prev.and_then(|p| p.hooks.as_ref()) else {
            let lines = if want { vec![format!("-I {DOCKER_USER} 1 {JUMP}")] } else { vec![] };
            return (false, lines);
        };
        let mut lines = Vec::new();
        let user_rules = hooks.docker_user.clone().unwrap_or_default();
        let declare = want && hooks.docker_user.is_none();
        if want && !hooks.forward.iter().any(|r| r == &format!("-j {DOCKER_USER}")) {
            lines.push(format!("-I FORWARD 1 -j {DOCKER_USER}"));
        }
        let count = user_rules.iter().filter(|r| *r == JUMP).count();
        let in_place = user_rules.first().map(String::as_str) == Some(JUMP) && count == 1;
        if !want || !in_place {
            lines.extend(std::iter::repeat_n(format!("-D {DOCKER_USER} {JUMP}"), count));
            if want {
                lines.push(format!("-I {DOCKER_USER} 1 {JUMP}"));
            }
        }
        (declare, lines)
    }

    /// Reads the `*filter` section of `iptables-save` output: seg's chains and the hooks.
    pub fn from_iptables_save(text: &str) -> Table {
        let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut hooks = Hooks::default();
        let mut in_filter = false;
        for line in text.lines() {
            let line = line.trim_end();
            if line.starts_with('*') {
                in_filter = line == "*filter";
            } else if !in_filter || line.starts_with('#') {
                continue;
            } else if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or_default();
                if name.starts_with(PREFIX) {
                    chains.insert(name.to_string(), Vec::new());
                } else if name == DOCKER_USER {
                    hooks.docker_user.get_or_insert_with(Vec::new);
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let (chain, rest) = rule.split_once(' ').unwrap_or((rule, ""));
                if chain.starts_with(PREFIX) {
                    chains.entry(chain.to_string()).or_default().push(rest.to_string());
                } else if chain == DOCKER_USER {
                    hooks.docker_user.get_or_insert_with(Vec::new).push(rest.to_string());
                } else if chain == "FORWARD" {
                    hooks.forward.push(rest.to_string());
                }
            }
        }
        Table { chains: chains.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(), hooks: Some(hooks) }
    }
}
