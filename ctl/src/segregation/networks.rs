//! `segctl net`: seg-managed Docker networks, made through the controller's
//! one Docker connection (the CLI is a client of the admin API only). The
//! running picture learns of the change from Docker's network event, as it
//! does of one made with `docker network create`.

use super::ops::OpError;
use super::Segregation;
use crate::docker::DockerNetworks;
use crate::network::{self, NetworkInfo, NetworkSpec};
use seg_common::api::network::{NetworkCreate, NetworkCreated, NetworkRemoved};

impl Segregation {
    /// Every network, sorted by name, with the containers attached to it.
    pub async fn networks(&self) -> Result<Vec<NetworkInfo>, OpError> {
        let docker = self.require_docker().await?;
        Ok(network::list(&DockerNetworks { docker }).await?)
    }

    /// Creates a seg-managed bridge network (checked before Docker is asked).
    pub async fn create_network(&self, req: &NetworkCreate) -> Result<NetworkCreated, OpError> {
        let subnet = req.subnet.as_deref().map(network::parse_subnet).transpose()?;
        let spec = NetworkSpec::new(&req.name, req.internal, req.icc, subnet)?;
        let docker = self.require_docker().await?;
        let id = network::create(&DockerNetworks { docker }, &spec).await?;
        Ok(NetworkCreated { name: spec.name, id })
    }

    /// Removes a network nothing is attached to; never a predefined one.
    pub async fn remove_network(&self, name: &str) -> Result<NetworkRemoved, OpError> {
        let docker = self.require_docker().await?;
        network::remove(&DockerNetworks { docker }, name).await?;
        Ok(NetworkRemoved { name: name.to_owned() })
    }
}
