//! [`NetworkApi`] on the real engine: the network module's plans and
//! operations, carried out through the one Docker layer. Docker's answers
//! become seg's [`NetworkInfo`] in [`super::map`].

use super::map::{attached_containers, network_info};
use crate::network::{NetworkApi, NetworkError, NetworkInfo, NetworkSpec, ICC_OPTION, MANAGED_LABEL};
use bollard::errors::Error as BollardError;
use bollard::models::{
    Ipam, IpamConfig, NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest,
};
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use futures_util::future::BoxFuture;
use std::collections::HashMap;

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

pub(crate) fn create_request(spec: &NetworkSpec) -> NetworkCreateRequest {
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
