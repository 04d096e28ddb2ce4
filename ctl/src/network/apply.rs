//! Applying network plans: the narrow [`NetworkApi`] seam and the
//! operations built on it. Its Docker implementation is
//! `crate::docker::DockerNetworks` (the Docker layer sits above this one).

use super::plan::{plan_networks, EnsureReport, Op};
use super::{validate_name, NetworkError, NetworkInfo, NetworkSpec, BRIDGE_NAME_OPTION};
use futures_util::future::BoxFuture;
use std::collections::HashMap;

/// The engine calls network management needs; a fake implements it in tests.
pub trait NetworkApi: Send + Sync {
    /// Every network, with the containers attached to it.
    fn networks(&self) -> BoxFuture<'_, Result<Vec<NetworkInfo>, NetworkError>>;
    /// Creates a bridge network as specified, labelled managed; returns its id.
    fn create<'a>(&'a self, spec: &'a NetworkSpec) -> BoxFuture<'a, Result<String, NetworkError>>;
    /// Removes a network by name or id.
    fn remove<'a>(&'a self, network: &'a str) -> BoxFuture<'a, Result<(), NetworkError>>;
    fn connect<'a>(&'a self, container: &'a str, network: &'a str)
        -> BoxFuture<'a, Result<(), NetworkError>>;
    fn disconnect<'a>(
        &'a self,
        container: &'a str,
        network: &'a str,
    ) -> BoxFuture<'a, Result<(), NetworkError>>;
}

/// The host interface of a bridge network: the `bridge.name` option, else
/// docker0 for the default `bridge`, else Docker's `br-<first 12 of the id>`.
pub fn bridge_interface(
    driver: &str,
    name: &str,
    id: &str,
    options: &HashMap<String, String>,
) -> Option<String> {
    if driver != "bridge" {
        return None;
    }
    match options.get(BRIDGE_NAME_OPTION) {
        Some(explicit) if !explicit.is_empty() => Some(explicit.clone()),
        _ if name == "bridge" => Some("docker0".to_owned()),
        _ => Some(format!("br-{}", id.get(..12).unwrap_or(id))),
    }
}

/// Every network, sorted by name.
pub async fn list(api: &impl NetworkApi) -> Result<Vec<NetworkInfo>, NetworkError> {
    let mut networks = api.networks().await?;
    networks.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    Ok(networks)
}

/// Creates a seg-managed bridge network; returns its id.
///
/// Engines before 25 accept two networks with one name (the API's
/// `CheckDuplicate` is gone from current clients), so the name is checked
/// before, and after: if a concurrent creator won, ours is removed again.
pub async fn create(api: &impl NetworkApi, spec: &NetworkSpec) -> Result<String, NetworkError> {
    validate_name(&spec.name)?;
    if api.networks().await?.iter().any(|n| n.name == spec.name) {
        return Err(NetworkError::AlreadyExists(spec.name.clone()));
    }
    let id = api.create(spec).await?;
    let same_name = api.networks().await?.into_iter().filter(|n| n.name == spec.name).count();
    if same_name > 1 {
        api.remove(&id).await?;
        return Err(NetworkError::AlreadyExists(spec.name.clone()));
    }
    Ok(id)
}

/// Removes a network nothing is attached to; never a predefined one.
pub async fn remove(api: &impl NetworkApi, name: &str) -> Result<(), NetworkError> {
    validate_name(name)?;
    let networks = api.networks().await?;
    let network =
        networks.iter().find(|n| n.name == name).ok_or_else(|| NetworkError::NotFound(name.to_owned()))?;
    if !network.containers.is_empty() {
        return Err(NetworkError::InUse { name: name.to_owned(), containers: network.containers.clone() });
    }
    api.remove(name).await
}

/// Creates the declared networks that are missing; reports the ones that
/// exist with other settings without touching them.
pub async fn ensure_networks(
    api: &impl NetworkApi,
    declared: &[NetworkSpec],
) -> Result<EnsureReport, NetworkError> {
    let plan = plan_networks(declared, &api.networks().await?)?;
    let mut created = Vec::new();
    for spec in &plan.create {
        create(api, spec).await?;
        created.push(spec.name.clone());
    }
    Ok(EnsureReport { created, unchanged: plan.unchanged, mismatched: plan.mismatched })
}

/// Runs the operations in order, stopping at the first failure; returns how
/// many ran. Plans from [`super::plan_attachments`] put connects first.
pub async fn apply_attachments(api: &impl NetworkApi, ops: &[Op]) -> Result<usize, NetworkError> {
    for (done, op) in ops.iter().enumerate() {
        let outcome = match op {
            Op::Connect { container, network } => api.connect(container, network).await,
            Op::Disconnect { container, network } => api.disconnect(container, network).await,
        };
        outcome.map_err(|cause| NetworkError::Step {
            done,
            total: ops.len(),
            op: op.clone(),
            cause: Box::new(cause),
        })?;
    }
    Ok(ops.len())
}
