//! The iptables backend: `iptables-save` to read, `iptables-restore
//! --noflush` (one process, one atomic transaction) to write; the same with
//! `ip6tables-*` for IPv6. Never one process per rule.
//!
//! A command prefix lets tests aim it at a network namespace
//! (`ip netns exec NS`) without touching the host's rules.

use super::{Firewall, FirewallError, Table};
use crate::policy::Family;
use std::io::Write;
use std::process::{Command, Stdio};

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

    fn command(&self, program: &str, args: &[&str]) -> (Command, String) {
        let mut words: Vec<String> = self.prefix.clone();
        words.push(program.to_string());
        words.extend(args.iter().map(|a| a.to_string()));
        let mut cmd = Command::new(&words[0]);
        cmd.args(&words[1..]);
        (cmd, words.join(" "))
    }

    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, FirewallError> {
        let (mut cmd, command) = self.command(program, args);
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let spawn_err = |cause| FirewallError::Spawn { command: command.clone(), cause };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            // A failed write shows up as the command's own failure below.
            let _ = pipe.write_all(text.as_bytes());
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(FirewallError::Failed { command, status: out.status.to_string(), stderr });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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
