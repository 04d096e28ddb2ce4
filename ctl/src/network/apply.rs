//! Applying network plans: the narrow [`NetworkApi`] seam, its bollard
//! implementation, and the operations built on it.

use super::plan::{plan_networks, EnsureReport, Op};
use super::{
    validate_name, NetworkError, NetworkInfo, NetworkSpec, BRIDGE_NAME_OPTION, ICC_OPTION, MANAGED_LABEL,
};
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerSummary, Ipam, IpamConfig, Network, NetworkConnectRequest, NetworkCreateRequest,
    NetworkDisconnectRequest,
};
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
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

/// Maps the engine's view of a network; `attached` is keyed by network id or name.
pub fn network_info(n: Network, attached: &HashMap<String, Vec<String>>) -> NetworkInfo {
    let name = n.name.unwrap_or_default();
    let id = n.id.unwrap_or_default();
    let driver = n.driver.unwrap_or_default();
    let options = n.options.unwrap_or_default();
    let subnets =
        n.ipam.and_then(|i| i.config).unwrap_or_default().into_iter().filter_map(|c| c.subnet).collect();
    let mut containers = attached.get(&id).or_else(|| attached.get(&name)).cloned().unwrap_or_default();
    containers.sort();
    NetworkInfo {
        bridge_if: bridge_interface(&driver, &name, &id, &options),
        icc: options.get(ICC_OPTION).map(String::as_str) != Some("false"),
        managed: n.labels.unwrap_or_default().get(MANAGED_LABEL).is_some_and(|v| v == "true"),
        internal: n.internal.unwrap_or(false),
        subnets,
        containers,
        name,
        id,
        driver,
    }
}

/// Container names per network id (or network name, if the engine omits the id).
pub fn attached_containers(summaries: &[ContainerSummary]) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for c in summaries {
        let name = c.names.as_ref().and_then(|n| n.first()).map(|n| n.trim_start_matches('/'));
        let Some(name) = name.or(c.id.as_deref()) else { continue };
        let networks = c.network_settings.as_ref().and_then(|s| s.networks.as_ref());
        for (net_name, endpoint) in networks.into_iter().flatten() {
            let key =
                endpoint.network_id.clone().filter(|id| !id.is_empty()).unwrap_or_else(|| net_name.clone());
            out.entry(key).or_default().push(name.to_owned());
        }
    }
    out
}

/// [`NetworkApi`] on the real engine (a [`crate::docker::connect`]ed client).
pub struct DockerNetworks {
    pub docker: Docker,
}

fn docker_error(action: String, e: BollardError) -> NetworkError {
    let reason = match e {
        BollardError::DockerResponseServerError { status_code, message } => {
            format!("{message} (HTTP {status_code})")
        }
        other => other.to_string(),
    };
    NetworkError::Docker { action, reason }
}

pub(super) fn create_request(spec: &NetworkSpec) -> NetworkCreateRequest {
    let ipam = spec.subnet.map(|s| Ipam {
        driver: Some("default".to_owned()),
        config: Some(vec![IpamConfig { subnet: Some(s.to_string()), ..Default::default() }]),
        options: None,
    });
    let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
    labels.insert(MANAGED_LABEL.to_owned(), "true".to_owned());
    NetworkCreateRequest {
        name: spec.name.clone(),
        driver: Some("bridge".to_owned()),
        internal: Some(spec.internal),
        enable_ipv6: spec.subnet.map(|s| s.addr().is_ipv6()).filter(|v6| *v6),
        ipam,
        // Only when off: docker-compose refuses to adopt a network whose
        // driver options differ from its file's (none, usually).
        options: Some(if spec.icc {
            HashMap::new()
        } else {
            HashMap::from([(ICC_OPTION.to_owned(), "false".to_owned())])
        }),
        labels: Some(labels),
        ..Default::default()
    }
}

impl NetworkApi for DockerNetworks {
    fn networks(&self) -> BoxFuture<'_, Result<Vec<NetworkInfo>, NetworkError>> {
        Box::pin(async move {
            let networks =
                self.docker.list_networks(None).await.map_err(|e| docker_error("list networks".into(), e))?;
            // Stopped containers count too: removing their network breaks their next start.
            let options = ListContainersOptionsBuilder::new().all(true).build();
            let containers = self
                .docker
                .list_containers(Some(options))
                .await
                .map_err(|e| docker_error("list containers".into(), e))?;
            let attached = attached_containers(&containers);
            Ok(networks.into_iter().map(|n| network_info(n, &attached)).collect())
        })
    }

    fn create<'a>(&'a self, spec: &'a NetworkSpec) -> BoxFuture<'a, Result<String, NetworkError>> {
        Box::pin(async move {
            match self.docker.create_network(create_request(spec)).await {
                Ok(created) => Ok(created.id),
                Err(BollardError::DockerResponseServerError { status_code: 409, .. }) => {
                    Err(NetworkError::AlreadyExists(spec.name.clone()))
                }
                Err(e) => Err(docker_error(format!("create network {}", spec.name), e)),
            }
        })
    }

    fn remove<'a>(&'a self, network: &'a str) -> BoxFuture<'a, Result<(), NetworkError>> {
        Box::pin(async move {
            match self.docker.remove_network(network).await {
                Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => {
                    Err(NetworkError::NotFound(network.to_owned()))
                }
                other => other.map_err(|e| docker_error(format!("remove network {network}"), e)),
            }
        })
    }

    fn connect<'a>(
        &'a self,
        container: &'a str,
        network: &'a str,
    ) -> BoxFuture<'a, Result<(), NetworkError>> {
        Box::pin(async move {
            let request = NetworkConnectRequest { container: container.to_owned(), endpoint_config: None };
            self.docker
                .connect_network(network, request)
                .await
                .map_err(|e| docker_error(format!("connect container {container} to network {network}"), e))
        })
    }

    fn disconnect<'a>(
        &'a self,
        container: &'a str,
        network: &'a str,
    ) -> BoxFuture<'a, Result<(), NetworkError>> {
        Box::pin(async move {
            let request = NetworkDisconnectRequest { container: container.to_owned(), force: Some(false) };
            self.docker.disconnect_network(network, request).await.map_err(|e| {
                docker_error(format!("disconnect container {container} from network {network}"), e)
            })
        })
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
