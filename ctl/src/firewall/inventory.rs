//! The live containers and networks the rules are compiled against, as plain
//! data. The Docker side (bollard) fills these through [`inventory_from`];
//! nothing here talks to Docker, so tests build inventories by hand.

use crate::policy::{Cidr, Family, Proto};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const LABEL_PROJECT: &str = "com.docker.compose.project";
pub const LABEL_SERVICE: &str = "com.docker.compose.service";
pub const LABEL_NETWORK: &str = "com.docker.compose.network";
pub const LABEL_SEG_SERVICE: &str = "seg.service";
pub const LABEL_SEG_PROJECT: &str = "seg.project";
/// Docker's option naming a network's bridge device.
pub const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";

/// A service a container belongs to: `shop/db`, or `db` for a standalone container.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId {
    pub project: Option<String>,
    pub service: String,
}

impl ServiceId {
    pub fn new(project: Option<&str>, service: &str) -> ServiceId {
        ServiceId { project: project.map(str::to_string), service: service.to_string() }
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.project {
            Some(p) => write!(f, "{p}/{}", self.service),
            None => f.write_str(&self.service),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    pub containers: Vec<Container>,
    pub networks: Vec<Network>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    /// `None`: no identity labels; such a container is never protected, only
    /// ever restricted as a peer of one that is.
    pub service: Option<ServiceId>,
    pub endpoints: Vec<Endpoint>,
    pub published: Vec<PublishedPort>,
}

/// One network attachment of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The Docker network name (`shop_backend`, `bridge`).
    pub network: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

impl Endpoint {
    pub fn ip(&self, family: Family) -> Option<IpAddr> {
        match family {
            Family::V4 => self.ipv4.map(IpAddr::V4),
            Family::V6 => self.ipv6.map(IpAddr::V6),
        }
    }
}

/// A published port: Docker DNATs `host_ip:host_port` to the container's port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublishedPort {
    pub proto: Proto,
    pub container_port: u16,
    /// `None` (or 0.0.0.0 / ::): every host address.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    /// The Docker network name.
    pub name: String,
    /// The bridge device (`docker0`, `br-0123456789ab`); `None` for non-bridge drivers.
    pub bridge: Option<String>,
    pub subnets: Vec<Cidr>,
    /// The compose labels, when compose created the network.
    pub compose_project: Option<String>,
    pub compose_network: Option<String>,
}

impl Inventory {
    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// The containers of a service, in inventory order.
    pub fn members<'a>(&'a self, id: &'a ServiceId) -> impl Iterator<Item = &'a Container> + 'a {
        self.containers.iter().filter(move |c| c.service.as_ref() == Some(id))
    }

    /// The inventory network a policy's `networks:` key names, for a project:
    /// compose's labels first, then `PROJECT_KEY`, then the plain name (`bridge`).
    pub fn resolve_network(&self, project: Option<&str>, key: &str) -> Option<&Network> {
        let by_labels = self.networks.iter().find(|n| {
            n.compose_network.as_deref() == Some(key)
                && n.compose_project.as_deref() == project
                && project.is_some()
        });
        let prefixed = project.map(|p| format!("{p}_{key}"));
        by_labels.or_else(|| prefixed.and_then(|name| self.network(&name))).or_else(|| self.network(key))
    }
}

/// What the Docker side knows of a container, before interpretation.
#[derive(Clone, Debug, Default)]
pub struct ContainerFacts {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub endpoints: Vec<Endpoint>,
    pub published: Vec<PublishedPort>,
}

/// What the Docker side knows of a network, before interpretation.
#[derive(Clone, Debug, Default)]
pub struct NetworkFacts {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    pub subnets: Vec<Cidr>,
}

/// Builds an inventory from plain facts (the seam for the Docker inventory).
pub fn inventory_from(
    containers: impl IntoIterator<Item = ContainerFacts>,
    networks: impl IntoIterator<Item = NetworkFacts>,
) -> Inventory {
    let containers = containers
        .into_iter()
        .map(|c| Container {
            service: identity_from_labels(&c.labels),
            id: c.id,
            endpoints: c.endpoints,
            published: c.published,
        })
        .collect();
    let networks = networks
        .into_iter()
        .map(|n| Network {
            bridge: bridge_name(&n),
            compose_project: n.labels.get(LABEL_PROJECT).cloned(),
            compose_network: n.labels.get(LABEL_NETWORK).cloned(),
            name: n.name,
            subnets: n.subnets,
        })
        .collect();
    Inventory { containers, networks }
}

/// A container's service, from the same labels attestation reads: compose's
/// project/service, else `seg.service` (+ optional `seg.project`).
pub fn identity_from_labels(labels: &BTreeMap<String, String>) -> Option<ServiceId> {
    let get = |k: &str| labels.get(k).map(String::as_str).filter(|v| !v.is_empty());
    if let (Some(p), Some(s)) = (get(LABEL_PROJECT), get(LABEL_SERVICE)) {
        return Some(ServiceId::new(Some(p), s));
    }
    get(LABEL_SEG_SERVICE).map(|s| ServiceId::new(get(LABEL_SEG_PROJECT), s))
}

/// The bridge device Docker uses for a bridge network: the option when set,
/// `docker0` for the default network, else `br-` and the first 12 id digits.
pub fn bridge_name(n: &NetworkFacts) -> Option<String> {
    if n.driver != "bridge" {
        return None;
    }
    if let Some(name) = n.options.get(OPT_BRIDGE_NAME) {
        return Some(name.clone());
    }
    if n.name == "bridge" {
        return Some("docker0".to_string());
    }
    Some(format!("br-{}", n.id.get(..12).unwrap_or(&n.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn identities_and_bridges() {
        let compose = labels(&[(LABEL_PROJECT, "shop"), (LABEL_SERVICE, "db"), (LABEL_SEG_SERVICE, "x")]);
        assert_eq!(identity_from_labels(&compose), Some(ServiceId::new(Some("shop"), "db")));
        let seg = labels(&[(LABEL_SEG_SERVICE, "vault")]);
        assert_eq!(identity_from_labels(&seg).unwrap().to_string(), "vault");
        assert_eq!(identity_from_labels(&labels(&[(LABEL_PROJECT, "shop")])), None);
        let mut n = NetworkFacts {
            id: "0123456789abcdef".into(),
            name: "shop_backend".into(),
            driver: "bridge".into(),
            ..Default::default()
        };
        assert_eq!(bridge_name(&n).as_deref(), Some("br-0123456789ab"));
        n.options.insert(OPT_BRIDGE_NAME.into(), "segbr0".into());
        assert_eq!(bridge_name(&n).as_deref(), Some("segbr0"));
        n.name = "bridge".into();
        n.options.clear();
        assert_eq!(bridge_name(&n).as_deref(), Some("docker0"));
        n.driver = "overlay".into();
        assert_eq!(bridge_name(&n), None);
    }

    #[test]
    fn network_resolution() {
        let net = |name: &str, p: Option<&str>, k: Option<&str>| Network {
            name: name.into(),
            bridge: None,
            subnets: vec![],
            compose_project: p.map(Into::into),
            compose_network: k.map(Into::into),
        };
        let inv = Inventory {
            containers: vec![],
            networks: vec![
                net("custom", Some("shop"), Some("backend")),
                net("shop_front", None, None),
                net("bridge", None, None),
            ],
        };
        assert_eq!(inv.resolve_network(Some("shop"), "backend").unwrap().name, "custom");
        assert_eq!(inv.resolve_network(Some("shop"), "front").unwrap().name, "shop_front");
        assert_eq!(inv.resolve_network(Some("shop"), "bridge").unwrap().name, "bridge");
        assert!(inv.resolve_network(Some("other"), "backend").is_none());
    }
}
