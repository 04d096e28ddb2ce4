//! The container firewall: compute, then apply.
//!
//! - [`compile`] turns (policies, live inventory) into a [`Ruleset`] — pure.
//! - [`Ruleset::render_iptables_restore`] writes the difference to what is
//!   live as one `iptables-restore --noflush` transaction.
//! - [`Firewall`] is the narrow OS seam (read what is live, run one
//!   transaction); [`IptablesFirewall`] is the iptables backend and
//!   [`FakeFirewall`] an in-memory one for tests. [`apply`] ties them.
//! - [`check`] answers "may A reach B on port P, and which rule says so".
//!
//! Rules stay when the controller stops (fail closed): nothing here removes
//! seg's chains except a ruleset that no longer needs them.

mod cache;
mod check;
mod compile;
#[cfg(any(test, feature = "fakes"))]
mod fake;
#[cfg(test)]
mod fixture;
mod groups;
mod inventory;
mod iptables;
pub mod nft_model;
pub mod nft_render;
mod nft_rules;
pub mod naming;
mod plan;
mod ports;
mod ruleset;
#[cfg(any(test, feature = "fakes"))]
pub mod sim;
#[cfg(any(test, feature = "fakes"))]
pub mod synth;
mod trie;

pub use cache::{compile_cached, CompileCache};
pub use check::{check, Decision, FlowEnd};
pub use compile::{compile, compile_with, validate_set, ServiceClash};
#[cfg(any(test, feature = "fakes"))]
pub use fake::FakeFirewall;
pub use inventory::{
    bridge_name, inventory_from, Container, ContainerFacts, Inventory, NetEndpoint, Network, NetworkFacts,
    PublishedPort,
};
pub use iptables::IptablesFirewall;
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
    /// The fake backend refused a transaction the way the kernel would.
    #[error("transaction refused, nothing was changed: {0}")]
    Refused(String),
}

/// The OS seam: one backend per firewall implementation (iptables now; an
/// nftables backend fits the same two calls).
pub trait Firewall {
    /// seg's chains and the hooks (`FORWARD`, `DOCKER-USER`) as live now.
    fn current(&mut self, family: Family) -> Result<Table, FirewallError>;
    /// Runs one all-or-nothing transaction in `iptables-restore` format.
    fn restore(&mut self, family: Family, text: &str) -> Result<(), FirewallError>;
}

/// What [`apply`] sent: one transaction per family, empty when that family
/// was already as desired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub v4: String,
    pub v6: String,
}

impl ApplyReport {
    pub fn changed(&self) -> bool {
        !self.v4.is_empty() || !self.v6.is_empty()
    }
}

/// Brings the live firewall to `desired`: reads what is live, renders the
/// difference, runs it as one transaction per family. The `DOCKER-USER` jump
/// (and Docker's own `FORWARD` → `DOCKER-USER` jump) are checked and
/// restored on every call, so a flushed chain or a lost jump is repaired by
/// the next reconcile. IPv6 is touched only when seg has IPv6 rules or left
/// some behind.
pub fn apply(fw: &mut dyn Firewall, desired: &Ruleset) -> Result<ApplyReport, FirewallError> {
    let mut report = ApplyReport::default();
    for family in [Family::V4, Family::V6] {
        let want = desired.table(family);
        let live = match fw.current(family) {
            Ok(live) => live,
            // No ip6tables here and nothing to put there: nothing to do.
            Err(_) if want.is_empty() && family == Family::V6 => continue,
            Err(e) => return Err(e),
        };
        let text = want.render(Some(&live));
        if !text.is_empty() {
            fw.restore(family, &text)?;
        }
        match family {
            Family::V4 => report.v4 = text,
            Family::V6 => report.v6 = text,
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
