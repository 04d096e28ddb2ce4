//! The container firewall: compute, then apply.
//!
//! - [`compile`] turns (policies, live inventory) into a [`Ruleset`] — pure.
//! - [`Ruleset::render_iptables_restore`] writes the difference to what is
//!   live as one `iptables-restore --noflush` transaction.
//! - [`Firewall`] is the narrow OS seam (read what is live, run one
//!   transaction); [`IptablesFirewall`] is the iptables backend,
//!   [`NftablesFirewall`] the nftables one (the same ruleset as one
//!   `table inet seg`, [`nft_render`]) and [`FakeFirewall`] an in-memory
//!   one for tests. [`apply`] ties them.
//! - [`check`] answers "may A reach B on port P, and which rule says so".
//!
//! Rules stay when the controller stops (fail closed): nothing here removes
//! seg's chains except a ruleset that no longer needs them.

mod cache;
mod check;
mod compile;
mod exec;
#[cfg(any(test, feature = "fakes"))]
mod fake;
#[cfg(test)]
mod fixture;
mod groups;
mod incremental;
mod inventory;
mod iptables;
pub mod naming;
mod nft_cache;
pub mod nft_link;
pub mod nft_model;
pub mod nft_netlink;
pub mod nft_render;
mod nft_rules;
mod nft_spans;
mod nftables;
mod plan;
mod ports;
mod ruleset;
pub mod select;
#[cfg(any(test, feature = "fakes"))]
pub mod sim;
#[cfg(any(test, feature = "fakes"))]
pub mod synth;
mod trie;

pub use cache::{compile_cached, CompileCache};
pub use check::{check, Decision, FlowEnd};
pub use compile::{compile, compile_with};
pub use exec::started_by_us;
#[cfg(any(test, feature = "fakes"))]
pub use fake::FakeFirewall;
pub use inventory::{
    bridge_name, inventory_from, Container, ContainerFacts, Inventory, NetEndpoint, Network, NetworkFacts,
    PublishedPort,
};
pub use iptables::IptablesFirewall;
pub use nft_cache::NftCache;
pub use nftables::NftablesFirewall;
pub use plan::{validate_set, ServiceClash};
pub use ruleset::{Hooks, Rules, Ruleset, Table};
pub use trie::FLAT_MAX;

use crate::policy::Family;
use std::collections::BTreeSet;

/// Settings of the host that shape the rules besides the policies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostSettings {
    /// Docker networks (by name, e.g. `bridge` for docker0) on which
    /// containers reach each other only where a policy allows — the
    /// controller's `segctl icc disable`, effective at once.
    pub icc_off: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("cannot run `{command}`: {cause}")]
    Spawn { command: String, cause: std::io::Error },
    #[error("`{command}` failed ({status}); nothing was changed: {stderr}")]
    Failed { command: String, status: String, stderr: String },
    #[error(transparent)]
    Untranslatable(#[from] nft_render::Untranslatable),
    #[error(
        "the kernel refused seg's element changes to table inet seg ({what}): {cause}; nothing was changed"
    )]
    Netlink { what: String, cause: std::io::Error },
    #[error("cannot read `{command}`'s JSON output: {cause}")]
    BadJson { command: String, cause: String },
    /// The fake backend refused a transaction the way the kernel would.
    #[error("transaction refused, nothing was changed: {0}")]
    Refused(String),
}

/// Which firewall implementation a [`Firewall`] drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Iptables,
    Nftables,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Iptables => "iptables",
            Backend::Nftables => "nftables",
        }
    }
}

/// The OS seam: one backend per firewall implementation. A backend reads
/// what is live and runs one all-or-nothing transaction; the provided
/// methods are the iptables way (`iptables-restore` text per family, seg's
/// chains plus the `DOCKER-USER` jump), which the nftables backend replaces.
pub trait Firewall {
    /// seg's chains and the hooks (`FORWARD`, `DOCKER-USER`) as live now.
    fn current(&mut self, family: Family) -> Result<Table, FirewallError>;
    /// Runs one all-or-nothing transaction in the backend's own format.
    fn restore(&mut self, family: Family, text: &str) -> Result<(), FirewallError>;

    fn backend(&self) -> Backend {
        Backend::Iptables
    }

    /// Reads what is live and writes the difference to `desired`.
    fn sync(&mut self, desired: &Ruleset) -> Result<ApplyReport, FirewallError> {
        let report = self.plan(desired)?;
        for (family, text) in [(Family::V4, &report.v4), (Family::V6, &report.v6)] {
            if !text.is_empty() {
                self.restore(family, text)?;
            }
        }
        Ok(report)
    }

    /// What [`Firewall::sync`] would write now (nothing is written).
    fn plan(&mut self, desired: &Ruleset) -> Result<ApplyReport, FirewallError> {
        let mut report = ApplyReport::default();
        for family in [Family::V4, Family::V6] {
            let want = desired.table(family);
            let live = match self.current(family) {
                Ok(live) => live,
                // No ip6tables here and nothing to put there: nothing to do.
                Err(_) if want.is_empty() && family == Family::V6 => continue,
                Err(e) => return Err(e),
            };
            *report.text_mut(family) = want.render(Some(&live));
        }
        Ok(report)
    }

    /// Writes the difference from `last` (what this process applied last)
    /// to `desired` without reading the kernel. An error means the kernel
    /// no longer holds `last`: read it ([`Firewall::sync`]).
    fn update(&mut self, last: &Ruleset, desired: &Ruleset) -> Result<ApplyReport, FirewallError> {
        let mut report = ApplyReport::default();
        for family in [Family::V4, Family::V6] {
            let text = desired.table(family).render(Some(&presumed(last.table(family))));
            if !text.is_empty() {
                self.restore(family, &text)?;
            }
            *report.text_mut(family) = text;
        }
        Ok(report)
    }
}

/// A family's table as it is once `t` was applied: its chains, the jump
/// first in `DOCKER-USER` (only when there is a `SEG-FORWARD`), Docker's
/// `FORWARD` jump in place. Only the hooks' seg-relevant rules are modelled;
/// rendering against this never touches the hooks.
fn presumed(t: &Table) -> Table {
    let jump = t.chains.contains_key(naming::TOP).then(|| format!("-j {}", naming::TOP));
    let hooks = Hooks {
        forward: vec![format!("-j {}", naming::DOCKER_USER)],
        docker_user: Some(jump.into_iter().collect()),
    };
    Table { chains: t.chains.clone(), hooks: Some(hooks) }
}

/// What [`apply`] sent: one transaction per family, empty when that family
/// was already as desired (nftables: the one script, in `v4`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub v4: String,
    pub v6: String,
}

impl ApplyReport {
    pub fn changed(&self) -> bool {
        !self.v4.is_empty() || !self.v6.is_empty()
    }

    fn text_mut(&mut self, family: Family) -> &mut String {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }
}

/// Brings the live firewall to `desired`: reads what is live, renders the
/// difference, runs it as one transaction (iptables: one per family). The
/// hooks (iptables: the `DOCKER-USER` jump and Docker's own `FORWARD` →
/// `DOCKER-USER` jump; nftables: seg's base chain) are checked and restored
/// on every call, so a flushed chain or a lost jump is repaired by the next
/// reconcile. IPv6 is touched only when seg has IPv6 rules or left some behind.
pub fn apply(fw: &mut dyn Firewall, desired: &Ruleset) -> Result<ApplyReport, FirewallError> {
    fw.sync(desired)
}

/// Removes every rule of seg's from `fw` (when another backend takes over).
pub fn remove_all(fw: &mut dyn Firewall) -> Result<ApplyReport, FirewallError> {
    fw.sync(&Ruleset::default())
}

#[cfg(test)]
mod tests;
