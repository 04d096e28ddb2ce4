//! The live container inventory the firewall engine compiles against, as
//! plain data: who runs (identity labels), on which networks with which
//! addresses and bridge interfaces, which ports are published on the host.
//!
//! Containers are read and identified by `segregation::live` and
//! [`crate::identity`]. [`bridges`] reads the host's bridge links over
//! rtnetlink, so the engine can check that a network's bridge interface
//! really exists.

mod netlink;
#[cfg(test)]
mod tests;

pub use netlink::{bridges, bridges_from, missing_bridges, Bridge, IfAddr};

use crate::network::{Attachments, NetworkInfo};
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
    /// Current network names per container id, for [`crate::network::plan_attachments`].
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
