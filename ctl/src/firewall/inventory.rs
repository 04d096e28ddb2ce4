//! The live containers and networks the rules are compiled against, as plain
//! data. The Docker side (bollard) fills these through [`inventory_from`];
//! nothing here talks to Docker, so tests build inventories by hand.

use crate::identity::{identity_from_labels, COMPOSE_NETWORK, COMPOSE_PROJECT};
use crate::policy::{Cidr, Family, Proto};
use seg_common::api::Identity;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Docker's option naming a network's bridge device.
pub const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    pub containers: Vec<Container>,
    pub networks: Vec<Network>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    /// Its seg identity ([`crate::identity`], the rule attestation uses: a
    /// `seg.for` sidecar is the service it acts for). `None`: no identity
    /// labels, or an invalid one; such a container is never protected, only
    /// ever restricted as a peer of one that is.
    pub service: Option<Identity>,
    pub endpoints: Vec<NetEndpoint>,
    pub published: Vec<PublishedPort>,
}

/// One network attachment of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetEndpoint {
    /// The Docker network name (`shop_backend`, `bridge`).
    pub network: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

impl NetEndpoint {
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
    pub fn members<'a>(&'a self, id: &'a Identity) -> impl Iterator<Item = &'a Container> + 'a {
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
    pub endpoints: Vec<NetEndpoint>,
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
            service: identity_from_labels(&c.labels).ok(),
            id: c.id,
            endpoints: c.endpoints,
            published: c.published,
        })
        .collect();
    let networks = networks
        .into_iter()
        .map(|n| Network {
            bridge: bridge_name(&n),
            compose_project: n.labels.get(COMPOSE_PROJECT).cloned(),
            compose_network: n.labels.get(COMPOSE_NETWORK).cloned(),
            name: n.name,
            subnets: n.subnets,
        })
        .collect();
    Inventory { containers, networks }
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
    use crate::identity::{COMPOSE_SERVICE, SEG_FOR, SEG_SERVICE};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn identities_and_bridges() {
        let facts = |pairs: &[(&str, &str)]| ContainerFacts { labels: labels(pairs), ..Default::default() };
        let inv = inventory_from(
            [
                facts(&[(COMPOSE_PROJECT, "shop"), (COMPOSE_SERVICE, "db"), (SEG_SERVICE, "x")]),
                facts(&[(SEG_SERVICE, "vault")]),
                facts(&[(COMPOSE_PROJECT, "shop")]),
                facts(&[(COMPOSE_PROJECT, "shop"), (COMPOSE_SERVICE, "db-seg"), (SEG_FOR, "db")]),
            ],
            [],
        );
        let ids: Vec<Option<String>> =
            inv.containers.iter().map(|c| c.service.as_ref().map(ToString::to_string)).collect();
        let want = [Some("shop/db"), Some("vault"), None, Some("shop/db")];
        assert_eq!(ids, want.map(|s| s.map(str::to_owned)));
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
