//! [`EngineApi`] on the real Docker Engine (bollard, API version negotiated).

use super::collect::EngineApi;
use super::AuditError;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, SystemInfo};
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use futures_util::future::BoxFuture;

pub struct DockerEngine {
    pub docker: Docker,
}

fn docker_err(action: &'static str) -> impl Fn(BollardError) -> AuditError {
    move |e| AuditError::Docker { action, reason: e.to_string() }
}

impl EngineApi for DockerEngine {
    fn info(&self) -> BoxFuture<'_, Result<SystemInfo, AuditError>> {
        Box::pin(async move { self.docker.info().await.map_err(docker_err("docker info")) })
    }

    fn running(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, AuditError>> {
        Box::pin(async move {
            let opts = ListContainersOptionsBuilder::default().all(false).build();
            let list =
                self.docker.list_containers(Some(opts)).await.map_err(docker_err("listing containers"))?;
            Ok(list
                .into_iter()
                .filter_map(|c| {
                    let name = c.names.as_ref()?.first()?.trim_start_matches('/').to_owned();
                    Some((c.id?, name))
                })
                .collect())
        })
    }

    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ContainerInspectResponse>, AuditError>> {
        Box::pin(async move {
            match self.docker.inspect_container(id, None).await {
                Ok(r) => Ok(Some(r)),
                Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
                Err(e) => Err(docker_err("inspecting a container")(e)),
            }
        })
    }

    fn bridge_icc(&self) -> BoxFuture<'_, Result<Option<bool>, AuditError>> {
        Box::pin(async move {
            match self.docker.inspect_network("bridge", None).await {
                Ok(n) => {
                    let opts = n.options.unwrap_or_default();
                    Ok(Some(opts.get(crate::network::ICC_OPTION).map(String::as_str) != Some("false")))
                }
                Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
                Err(e) => Err(docker_err("inspecting the default bridge network")(e)),
            }
        })
    }
}
