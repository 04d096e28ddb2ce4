//! The iptables backend: `iptables-save` to read, `iptables-restore
//! --noflush` (one process, one atomic transaction) to write; the same with
//! `ip6tables-*` for IPv6. Never one process per rule.
//!
//! A command prefix lets tests aim it at a network namespace
//! (`ip netns exec NS`) without touching the host's rules.

use super::{Firewall, FirewallError, Table};
use crate::policy::Family;

#[derive(Clone, Debug, Default)]
pub struct IptablesFirewall {
    prefix: Vec<String>,
}

impl IptablesFirewall {
    /// The host's own tables.
    pub fn new() -> IptablesFirewall {
        IptablesFirewall::default()
    }

    /// The tables of network namespace `ns` (via `ip netns exec`).
    pub fn in_netns(ns: &str) -> IptablesFirewall {
        IptablesFirewall::with_prefix(["ip", "netns", "exec", ns])
    }

    /// Runs every command behind `prefix` (e.g. `nsenter --net=/proc/N/ns/net`).
    pub fn with_prefix<S: Into<String>>(prefix: impl IntoIterator<Item = S>) -> IptablesFirewall {
        IptablesFirewall { prefix: prefix.into_iter().map(Into::into).collect() }
    }

    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, FirewallError> {
        super::exec::run(&self.prefix, program, args, stdin)
    }
}

fn tool(family: Family, what: &str) -> String {
    match family {
        Family::V4 => format!("iptables-{what}"),
        Family::V6 => format!("ip6tables-{what}"),
    }
}

impl Firewall for IptablesFirewall {
    fn current(&mut self, family: Family) -> Result<Table, FirewallError> {
        let text = self.run(&tool(family, "save"), &["-t", "filter"], None)?;
        Ok(Table::from_iptables_save(&text))
    }

    fn restore(&mut self, family: Family, text: &str) -> Result<(), FirewallError> {
        // `-w`: wait for the xtables lock (legacy backend) instead of failing.
        self.run(&tool(family, "restore"), &["--noflush", "-w", "10"], Some(text)).map(drop)
    }
}
