//! User-defined Docker networks for segregation: a policy declares bridge
//! networks (internal or not, ICC on or off) and which services sit on which;
//! seg creates the missing ones, reports the ones that differ (it never
//! recreates a network: containers may be on it), and moves containers so each
//! mentioned service is on exactly its declared networks.
//!
//! Compute, then apply: [`plan_networks`] and [`plan_attachments`] are pure;
//! [`ensure_networks`], [`apply_attachments`], [`create`], [`remove`] and
//! [`list`] go through the narrow [`NetworkApi`] trait (`crate::docker::DockerNetworks`
//! for the Docker Engine, a fake in unit tests).

mod apply;
pub mod bridges;
mod plan;
mod spec;
#[cfg(test)]
mod tests;

pub use apply::{apply_attachments, bridge_interface, create, ensure_networks, list, remove, NetworkApi};
pub use plan::{plan_attachments, plan_networks, Attachments, EnsureReport, Mismatch, NetworkPlan, Op};
pub use seg_common::api::network::NetworkInfo;
pub use spec::{parse_subnet, validate_name, NetworkSpec};

/// Label on every network seg creates, so it knows its own.
pub const MANAGED_LABEL: &str = "seg.managed";
/// Bridge driver option turning inter-container traffic on the bridge on/off.
pub const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";
/// Bridge driver option naming the host interface (docker0 for `bridge`).
pub const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";
/// Networks every Docker Engine has; seg never creates, removes or changes them.
pub const PREDEFINED: [&str; 3] = ["bridge", "host", "none"];

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid network name `{name}`: {why}")]
    BadName { name: String, why: String },
    #[error("invalid subnet `{text}`: {why}")]
    BadSubnet { text: String, why: String },
    #[error("network `{0}` is predefined by Docker (bridge, host, none): seg never creates, removes or changes it")]
    Predefined(String),
    #[error("network `{0}` does not exist (see `docker network ls`)")]
    NotFound(String),
    #[error("network `{0}` already exists: use it, or remove it first (`docker network rm {0}`)")]
    AlreadyExists(String),
    #[error(
        "network `{name}` is declared twice with different settings; \
         keep one declaration per network in the policy"
    )]
    ConflictingDeclarations { name: String },
    #[error(
        "network `{name}` still has {} container(s) attached: {}; disconnect or remove them first \
         (`docker network disconnect {name} <container>`)",
        containers.len(), containers.join(", ")
    )]
    InUse { name: String, containers: Vec<String> },
    #[error("Docker could not {action}: {reason}")]
    Docker { action: String, reason: String },
    #[error(
        "attachment plan stopped at step {} of {total} ({op}): {cause}; the steps before it \
         were applied (connects run before disconnects, so no container lost its last network)",
        done + 1
    )]
    Step { done: usize, total: usize, op: Op, cause: Box<NetworkError> },
}
