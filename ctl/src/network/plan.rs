//! Pure planning: declared networks vs existing ones, and declared attachments
//! vs current ones, each turned into the list of operations to run.

use super::{NetworkError, NetworkInfo, NetworkSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Per container (id or name, the same key in both maps), its network names.
pub type Attachments = BTreeMap<String, BTreeSet<String>>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Connect { container: String, network: String },
    Disconnect { container: String, network: String },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Connect { container, network } => write!(f, "connect {container} to {network}"),
            Op::Disconnect { container, network } => write!(f, "disconnect {container} from {network}"),
        }
    }
}

/// Puts every container of `desired` on exactly its declared networks.
///
/// Containers absent from `desired` are never touched (their services are
/// not the policy's business), and ones absent from `actual` are skipped (they
/// do not exist, so there is nothing to attach). All connects come before all
/// disconnects, so a container moving from A to B is never left without a
/// network in between, and a failed connect leaves the old attachments intact.
pub fn plan_attachments(desired: &Attachments, actual: &Attachments) -> Vec<Op> {
    let mut connects = Vec::new();
    let mut disconnects = Vec::new();
    for (container, want) in desired {
        let Some(have) = actual.get(container) else { continue };
        for network in want.difference(have) {
            connects.push(Op::Connect { container: container.clone(), network: network.clone() });
        }
        for network in have.difference(want) {
            disconnects.push(Op::Disconnect { container: container.clone(), network: network.clone() });
        }
    }
    connects.extend(disconnects);
    connects
}

/// A declared network that exists with other settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub name: String,
    /// E.g. "internal is false (policy: true)".
    pub differences: Vec<String>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "network `{name}` exists but differs from the policy: {}; seg does not recreate networks \
             (containers may be attached): remove it (`docker network rm {name}`) or change the policy",
            self.differences.join(", "),
            name = self.name
        )
    }
}

/// What [`plan_networks`] decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkPlan {
    pub create: Vec<NetworkSpec>,
    /// Declared networks that exist with the declared settings.
    pub unchanged: Vec<String>,
    pub mismatched: Vec<Mismatch>,
}

/// What [`super::ensure_networks`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnsureReport {
    pub created: Vec<String>,
    pub unchanged: Vec<String>,
    pub mismatched: Vec<Mismatch>,
}

impl EnsureReport {
    /// Every declared network now exists as declared.
    pub fn is_clean(&self) -> bool {
        self.mismatched.is_empty()
    }
}

/// How an existing network differs from its declaration (empty: it matches).
fn differences(spec: &NetworkSpec, have: &NetworkInfo) -> Vec<String> {
    let mut out = Vec::new();
    if have.driver != "bridge" {
        out.push(format!("driver is {} (policy: bridge)", have.driver));
    }
    if have.internal != spec.internal {
        out.push(format!("internal is {} (policy: {})", have.internal, spec.internal));
    }
    if have.icc != spec.icc {
        out.push(format!("icc is {} (policy: {})", have.icc, spec.icc));
    }
    if let Some(subnet) = spec.subnet {
        // Docker's spelling may differ (`fd00:0::/64`): compare parsed values.
        if !have.subnets.iter().any(|s| s.parse().ok() == Some(subnet)) {
            out.push(format!("subnets are [{}] (policy: {subnet})", have.subnets.join(", ")));
        }
    }
    out
}

/// Declared networks vs existing ones: which to create, which differ.
pub fn plan_networks(
    declared: &[NetworkSpec],
    existing: &[NetworkInfo],
) -> Result<NetworkPlan, NetworkError> {
    let mut by_name: BTreeMap<&str, &NetworkSpec> = BTreeMap::new();
    for spec in declared {
        super::validate_name(&spec.name)?;
        match by_name.insert(&spec.name, spec) {
            Some(earlier) if earlier != spec => {
                return Err(NetworkError::ConflictingDeclarations { name: spec.name.clone() })
            }
            _ => {}
        }
    }
    let mut plan = NetworkPlan::default();
    for (name, spec) in by_name {
        match existing.iter().find(|n| n.name == name) {
            None => plan.create.push(spec.clone()),
            Some(have) => {
                let differences = differences(spec, have);
                if differences.is_empty() {
                    plan.unchanged.push(name.to_owned());
                } else {
                    plan.mismatched.push(Mismatch { name: name.to_owned(), differences });
                }
            }
        }
    }
    Ok(plan)
}
