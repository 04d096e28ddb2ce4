//! The live container inventory the firewall engine compiles against, as
//! plain data: who runs (identity labels), on which networks with which
//! addresses and bridge interfaces, which ports are published on the host.
//!
//! [`from_summaries`] is the pure mapping; [`collect`] feeds it from the
//! engine with one network list, one container list and one inspect per
//! running container (the list carries no PID). [`bridges`] reads the host's
//! bridge links over rtnetlink, so the engine can check that a network's
//! bridge interface really exists.

mod netlink;
mod summary;
#[cfg(test)]
mod tests;

pub use netlink::{bridges, bridges_from, missing_bridges, Bridge, IfAddr};
pub use summary::{from_summaries, live_container};

use crate::network::{self, Attachments, NetworkInfo};
use bollard::errors::Error as BollardError;
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use futures_util::{stream, StreamExt};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Everything running, and every network (for subnets, ICC, internal, bridge).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Running containers, sorted by name.
    pub containers: Vec<LiveContainer>,
    /// All networks, sorted by name.
    pub networks: Vec<NetworkInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveContainer {
    pub id: String,
    pub name: String,
    /// `com.docker.compose.project`, else `seg.project`.
    pub project: Option<String>,
    /// The container's own service: `com.docker.compose.service`, else `seg.service`.
    pub service: Option<String>,
    /// `seg.for`: a seg sidecar acting for that service of its project. Unlike
    /// attestation (where it replaces the service), the firewall sees the
    /// sidecar as itself: it reaches seg over a unix socket, not the network.
    pub acts_for: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Sorted by network name.
    pub networks: Vec<Attachment>,
    /// Sorted, without duplicates.
    pub published: Vec<Published>,
    /// Host PID of the main process; `None` until inspected.
    pub pid: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub network_name: String,
    pub network_id: String,
    /// The bridge interface of the network (`None`: not a bridge network, or unknown).
    pub bridge_if: Option<String>,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// A container port published on the host (`-p 127.0.0.1:8080:80`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Published {
    /// `0.0.0.0` / `::` when published on every address.
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl Inventory {
    /// Current network names per container id, for [`network::plan_attachments`].
    pub fn attachments(&self) -> Attachments {
        self.containers
            .iter()
            .map(|c| (c.id.clone(), c.networks.iter().map(|a| a.network_name.clone()).collect()))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("Docker could not {action}: {reason}")]
    Docker { action: String, reason: String },
    #[error(
        "cannot read the host's network links over netlink ({action}): {reason}; \
         segctl must run on the Docker host, in its network namespace"
    )]
    Netlink { action: &'static str, reason: String },
}

fn docker_error(action: &str, e: BollardError) -> InventoryError {
    InventoryError::Docker { action: action.to_owned(), reason: e.to_string() }
}

/// How many inspections run at once: enough to hide latency, few enough
/// not to queue up behind a busy daemon.
const INSPECT_CONCURRENCY: usize = 8;

/// Reads the inventory from the engine.
///
/// A container that stops between the list and its inspection is left out:
/// it no longer runs, and the next collection reflects the change anyway.
pub async fn collect(docker: &Docker) -> Result<Inventory, InventoryError> {
    let networks = docker.list_networks(None).await.map_err(|e| docker_error("list networks", e))?;
    // All containers, so a network's attachment count includes stopped ones.
    let options = ListContainersOptionsBuilder::new().all(true).build();
    let summaries =
        docker.list_containers(Some(options)).await.map_err(|e| docker_error("list containers", e))?;
    let attached = network::attached_containers(&summaries);
    let mut networks: Vec<NetworkInfo> =
        networks.into_iter().map(|n| network::network_info(n, &attached)).collect();
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    let containers = from_summaries(summaries, &networks);
    let pids: Vec<Option<(String, u32)>> =
        stream::iter(containers.iter().map(|c| inspect_pid(docker, &c.id)))
            .buffer_unordered(INSPECT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
    let pids: BTreeMap<String, u32> = pids.into_iter().flatten().collect();
    let containers = containers
        .into_iter()
        .filter_map(|c| pids.get(&c.id).map(|pid| LiveContainer { pid: Some(*pid), ..c }))
        .collect();
    Ok(Inventory { containers, networks })
}

/// The host PID of a running container; `None` if it is gone or stopped.
async fn inspect_pid(docker: &Docker, id: &str) -> Result<Option<(String, u32)>, InventoryError> {
    match docker.inspect_container(id, None).await {
        Ok(r) => {
            let state = r.state.unwrap_or_default();
            let pid = state.pid.and_then(|p| u32::try_from(p).ok()).filter(|p| *p > 0);
            Ok(pid.filter(|_| state.running == Some(true)).map(|p| (id.to_owned(), p)))
        }
        Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
        Err(e) => Err(docker_error(&format!("inspect container {id}"), e)),
    }
}
