//! The controller's running picture of the host: every running container
//! (identity, addresses, published ports, PID) and every network, kept up to
//! date one container at a time from Docker events and replaced whole by
//! each resync. The firewall compiles against [`HostPicture::inventory`].
//!
//! The mapping from the Docker Engine's shapes is [`crate::docker::map`];
//! [`collect`] and [`inspect`] are the two ways in (two list calls for
//! everything, one inspect per event).

use crate::docker::map::strip;
pub use crate::docker::map::{from_inspect, from_summary, network_facts, Known};
use crate::firewall::{self, Inventory, NetworkFacts};
use bollard::errors::Error as BollardError;
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use std::collections::{BTreeMap, HashMap};

/// The running containers and networks of the host, as the firewall needs them.
#[derive(Clone, Debug, Default)]
pub struct HostPicture {
    inv: Inventory,
    names: HashMap<String, String>,
    pids: HashMap<String, u32>,
    /// Docker's own `enable_icc` per network name.
    docker_icc: BTreeMap<String, bool>,
    /// The last full read succeeded at least once.
    synced: bool,
    /// See [`HostPicture::seed_networks`].
    seeded: Vec<NetworkFacts>,
}

impl HostPicture {
    pub fn inventory(&self) -> &Inventory {
        &self.inv
    }

    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn name<'a>(&'a self, id: &'a str) -> &'a str {
        self.names.get(id).map_or(id, String::as_str)
    }

    pub fn pid(&self, id: &str) -> Option<u32> {
        self.pids.get(id).copied()
    }

    pub fn docker_icc(&self, network: &str) -> Option<bool> {
        self.docker_icc.get(network).copied()
    }

    /// Replaces everything (a resync). PIDs already known are kept for
    /// containers that are still there.
    pub fn replace(&mut self, containers: Vec<Known>, networks: Vec<NetworkFacts>) {
        let pids = std::mem::take(&mut self.pids);
        self.names.clear();
        self.inv.containers.clear();
        let _ = self.set_networks(networks);
        for mut k in containers {
            k.pid = k.pid.or_else(|| pids.get(&k.facts.id).copied());
            self.upsert(k);
        }
        self.synced = true;
    }

    /// Replaces the networks; returns whether what the firewall sees changed.
    pub fn set_networks(&mut self, mut networks: Vec<NetworkFacts>) -> bool {
        networks.extend(self.seeded.iter().cloned());
        let icc_of =
            |n: &NetworkFacts| n.options.get(crate::network::ICC_OPTION).map(String::as_str) != Some("false");
        self.docker_icc = networks.iter().map(|n| (n.name.clone(), icc_of(n))).collect();
        let mut interpreted = firewall::inventory_from([], networks).networks;
        interpreted.sort_by(|a, b| a.name.cmp(&b.name));
        interpreted.dedup_by(|a, b| a.name == b.name);
        let changed = interpreted != self.inv.networks;
        self.inv.networks = interpreted;
        changed
    }

    /// Networks Docker does not list that the picture keeps anyway (the
    /// benchmark's synthetic ones), through every later network refresh.
    /// They join at the next [`HostPicture::set_networks`].
    pub fn seed_networks(&mut self, networks: Vec<NetworkFacts>) {
        self.seeded = networks;
    }

    /// Adds or replaces one container; returns whether what the firewall
    /// sees of it changed.
    pub fn upsert(&mut self, k: Known) -> bool {
        let Known { facts, name, pid } = k;
        let id = facts.id.clone();
        self.names.insert(id.clone(), name);
        if let Some(pid) = pid {
            self.pids.insert(id.clone(), pid);
        }
        let container = firewall::inventory_from([facts], []).containers.remove(0);
        match self.inv.containers.iter_mut().find(|c| c.id == id) {
            Some(old) if *old == container => false,
            Some(old) => {
                *old = container;
                true
            }
            None => {
                self.inv.containers.push(container);
                true
            }
        }
    }

    /// A container stopped: it keeps its networks, loses its addresses.
    /// Returns whether what the firewall sees changed.
    pub fn park(&mut self, id: &str) -> bool {
        self.pids.remove(id);
        let Some(c) = self.inv.containers.iter_mut().find(|c| c.id == id) else { return false };
        let had = c.endpoints.iter().any(|e| e.ipv4.is_some() || e.ipv6.is_some()) || !c.published.is_empty();
        c.endpoints.iter_mut().for_each(strip);
        c.published.clear();
        had
    }

    /// Forgets a container (it was removed); returns whether it was known.
    pub fn remove(&mut self, id: &str) -> bool {
        self.names.remove(id);
        self.pids.remove(id);
        let before = self.inv.containers.len();
        self.inv.containers.retain(|c| c.id != id);
        before != self.inv.containers.len()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("Docker could not {action}: {reason}")]
pub struct DockerFailure {
    pub action: String,
    pub reason: String,
}

fn failure(action: impl Into<String>, e: BollardError) -> DockerFailure {
    DockerFailure { action: action.into(), reason: e.to_string() }
}

/// Every container and every network: two calls, however many containers
/// there are (lists carry labels, addresses and ports).
pub async fn collect(docker: &Docker) -> Result<(Vec<Known>, Vec<NetworkFacts>), DockerFailure> {
    let networks = networks(docker).await?;
    let options = ListContainersOptionsBuilder::new().all(true).build();
    let list = docker.list_containers(Some(options)).await.map_err(|e| failure("list containers", e))?;
    Ok((list.into_iter().filter_map(from_summary).collect(), networks))
}

pub async fn networks(docker: &Docker) -> Result<Vec<NetworkFacts>, DockerFailure> {
    let list = docker.list_networks(None).await.map_err(|e| failure("list networks", e))?;
    Ok(list.into_iter().map(network_facts).collect())
}

/// One container; `None` when it is gone.
pub async fn inspect(docker: &Docker, id: &str) -> Result<Option<Known>, DockerFailure> {
    match docker.inspect_container(id, None).await {
        Ok(r) => Ok(from_inspect(r)),
        Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
        Err(e) => Err(failure(format!("inspect container {id}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::{ContainerFacts, NetEndpoint};
    use bollard::models::{Ipam, IpamConfig, Network};
    use seg_common::api::Identity;

    fn labels() -> HashMap<String, String> {
        HashMap::from([
            ("com.docker.compose.project".to_owned(), "shop".to_owned()),
            ("com.docker.compose.service".to_owned(), "db".to_owned()),
        ])
    }

    #[test]
    fn the_picture_changes_one_container_at_a_time() {
        let network = network_facts(Network {
            name: Some("shop_backend".into()),
            id: Some("0123456789abcdef".into()),
            driver: Some("bridge".into()),
            options: Some(HashMap::from([(crate::network::ICC_OPTION.to_owned(), "false".to_owned())])),
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig { subnet: Some("172.30.0.0/16".into()), ..Default::default() }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let known = |id: &str, ip: &str| Known {
            facts: ContainerFacts {
                id: id.into(),
                labels: labels().into_iter().collect(),
                endpoints: vec![NetEndpoint {
                    network: "shop_backend".into(),
                    ipv4: ip.parse().ok(),
                    ipv6: None,
                }],
                published: vec![],
            },
            name: format!("n-{id}"),
            pid: None,
        };
        let mut live = HostPicture::default();
        assert!(!live.synced());
        live.replace(vec![known("a", "172.30.0.2")], vec![network]);
        assert!(live.synced());
        assert_eq!(live.inventory().networks[0].bridge.as_deref(), Some("br-0123456789ab"));
        assert_eq!(live.docker_icc("shop_backend"), Some(false));
        assert!(!live.upsert(known("a", "172.30.0.2")), "same facts: nothing changed");
        assert!(live.upsert(Known { pid: Some(7), ..known("a", "172.30.0.9") }));
        assert!(live.upsert(known("b", "172.30.0.3")));
        let id = Identity::new(Some("shop"), "db");
        assert_eq!(live.inventory().members(&id).count(), 2);
        assert_eq!((live.name("b"), live.pid("a")), ("n-b", Some(7)));
        assert!(live.park("a") && !live.park("a"), "a second stop changes nothing");
        assert_eq!(live.inventory().members(&id).count(), 2, "a stopped container stays a member");
        assert!(live.remove("a") && !live.remove("a"));
        live.replace(vec![known("b", "172.30.0.3")], vec![]);
        assert_eq!(live.inventory().containers.len(), 1);
    }
}
