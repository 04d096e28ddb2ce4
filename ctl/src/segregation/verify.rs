//! `segctl policy verify`: which flows to probe and what each should do.
//!
//! For every ordered pair of a policy's services (A → B, A ≠ B), from each
//! running container of A (at most [`PER_SERVICE`]) to each of B, on each
//! TCP port B's ingress names (the first of a range) and each port B
//! publishes. The expectation combines the policies ([`check`]) with what
//! Docker itself does: containers with no network in common cannot reach
//! each other, and an ICC-off network drops what no policy allows.

use super::api::{Reach, VerifyRow};
use super::live::HostPicture;
use crate::firewall::{check, Container, FlowEnd, HostSettings, Inventory};
use crate::policy::{Ingress, Policy, Proto};
use seg_common::api::Identity;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

/// Containers probed per service (replicas beyond are alike).
pub const PER_SERVICE: usize = 2;

/// A probe to run: the row to fill in, from which container to where.
#[derive(Clone, Debug)]
pub struct Planned {
    pub row: VerifyRow,
    pub from_id: String,
    pub addr: SocketAddr,
}

/// Plans the probes for `selected` (some of `all`, the applied policies).
pub fn plan(
    all: &[Policy],
    selected: &[&Policy],
    live: &HostPicture,
    host: &HostSettings,
) -> (Vec<Planned>, Vec<String>) {
    let inv = live.inventory();
    let icc_off = icc_off_networks(all, live, host);
    let mut planned = Vec::new();
    let mut skipped = Vec::new();
    for policy in selected {
        let ids: Vec<Identity> =
            policy.services.keys().map(|k| Identity::new(policy.project(), &k.0)).collect();
        for id in &ids {
            if running(inv, id).next().is_none() {
                skipped.push(format!("{id}: no running container"));
            }
        }
        for to in &ids {
            let ports = probe_ports(policy, to, live);
            if ports.is_empty() && running(inv, to).next().is_some() {
                skipped.push(format!(
                    "{to}: no TCP port to probe (its ingress names none and it publishes none)"
                ));
            }
            for from in ids.iter().filter(|f| *f != to) {
                for src in running(inv, from).take(PER_SERVICE) {
                    for dst in running(inv, to).take(PER_SERVICE) {
                        for port in &ports {
                            let flow = Flow { all, from, to, src, dst, port: *port, icc_off: &icc_off };
                            planned.extend(flow.plan(live));
                        }
                    }
                }
            }
        }
    }
    (planned, skipped)
}

struct Flow<'a> {
    all: &'a [Policy],
    from: &'a Identity,
    to: &'a Identity,
    src: &'a Container,
    dst: &'a Container,
    port: u16,
    icc_off: &'a BTreeSet<String>,
}

impl Flow<'_> {
    fn plan(&self, live: &HostPicture) -> Option<Planned> {
        let src_nets: BTreeSet<&str> = self.src.endpoints.iter().map(|e| e.network.as_str()).collect();
        let shared: Vec<&str> =
            self.dst.endpoints.iter().map(|e| e.network.as_str()).filter(|n| src_nets.contains(n)).collect();
        let ip: IpAddr = match shared.first() {
            Some(net) => self.dst.endpoints.iter().find(|e| e.network == *net)?.ipv4?.into(),
            None => self.dst.endpoints.iter().find_map(|e| e.ipv4)?.into(),
        };
        let (expected, because) = self.expect(&shared, live);
        let row = VerifyRow {
            from: self.from.to_string(),
            from_container: live.name(&self.src.id).to_string(),
            to: self.to.to_string(),
            to_container: live.name(&self.dst.id).to_string(),
            target: format!("{ip}:{}/tcp", self.port),
            expected,
            because,
            observed: Reach::Unknown,
            detail: String::new(),
        };
        Some(Planned { row, from_id: self.src.id.clone(), addr: SocketAddr::new(ip, self.port) })
    }

    fn expect(&self, shared: &[&str], live: &HostPicture) -> (Reach, String) {
        if shared.is_empty() {
            return (Reach::Blocked, "no network in common (Docker isolates networks)".into());
        }
        let docker_off: Vec<&&str> = shared.iter().filter(|n| live.docker_icc(n) == Some(false)).collect();
        if docker_off.len() == shared.len() {
            return (Reach::Blocked, format!("Docker's enable_icc=false on {}", docker_off[0]));
        }
        let decision = check(
            self.all,
            &FlowEnd::Service(self.from.clone()),
            &FlowEnd::Service(self.to.clone()),
            Proto::Tcp,
            self.port,
        );
        let on_icc_off = shared.iter().all(|n| self.icc_off.contains(*n));
        if decision.allowed && on_icc_off && !ingress_protected(self.all, self.to) {
            return (Reach::Blocked, format!("ICC off on {} and no policy allows it", shared[0]));
        }
        let reach = if decision.allowed { Reach::Reachable } else { Reach::Blocked };
        (reach, decision.rule)
    }
}

/// A service's containers that run (stopped ones are members without addresses).
fn running<'a>(inv: &'a Inventory, id: &'a Identity) -> impl Iterator<Item = &'a Container> + 'a {
    inv.members(id).filter(|c| c.endpoints.iter().any(|e| e.ipv4.is_some()))
}

fn ingress_protected(all: &[Policy], id: &Identity) -> bool {
    all.iter()
        .filter(|p| p.project() == id.project.as_deref())
        .find_map(|p| p.services.get(id.service.as_str()))
        .is_some_and(|s| s.ingress != Ingress::Any)
}

/// Networks on which seg drops what no policy allows (policy `icc: false`,
/// the host's docker0 setting).
fn icc_off_networks(all: &[Policy], live: &HostPicture, host: &HostSettings) -> BTreeSet<String> {
    let mut out = host.icc_off.clone();
    for p in all {
        for (key, _) in p.networks.iter().filter(|(_, d)| !d.icc) {
            if let Some(n) = live.inventory().resolve_network(p.project(), &key.0) {
                out.insert(n.name.clone());
            }
        }
    }
    out
}

/// The TCP ports worth probing on a service.
fn probe_ports(policy: &Policy, id: &Identity, live: &HostPicture) -> Vec<u16> {
    let mut ports = BTreeSet::new();
    if let Some(Ingress::Allow(rules)) = policy.services.get(id.service.as_str()).map(|s| &s.ingress) {
        let ranges = rules.iter().filter_map(|r| r.ports.as_ref()).flat_map(|p| p.0.iter());
        ports.extend(ranges.filter(|r| r.proto == Proto::Tcp).map(|r| r.first));
    }
    for c in live.inventory().members(id) {
        ports.extend(c.published.iter().filter(|p| p.proto == Proto::Tcp).map(|p| p.container_port));
    }
    ports.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::{ContainerFacts, NetEndpoint, NetworkFacts};
    use crate::policy::parse_policy;
    use crate::segregation::live::Known;
    use std::collections::BTreeMap;

    const SHOP: &str = "version: 1\nproject: shop\nnetworks:\n  backend: {}\nservices:\n  web: { ingress: [{ from: world, ports: [8080/tcp] }] }\n  api: { ingress: [{ from: [web], ports: [9000/tcp] }], egress: [db], networks: [default, backend] }\n  db: { ingress: [{ from: [api], ports: [5432/tcp] }], egress: none, networks: [backend] }\n";

    fn known(service: &str, nets: &[(&str, &str)]) -> Known {
        let labels = BTreeMap::from([
            ("com.docker.compose.project".to_string(), "shop".to_string()),
            ("com.docker.compose.service".to_string(), service.to_string()),
        ]);
        let endpoints = nets
            .iter()
            .map(|(n, ip)| NetEndpoint { network: n.to_string(), ipv4: ip.parse().ok(), ipv6: None })
            .collect();
        Known {
            facts: ContainerFacts { id: service.into(), labels, endpoints, published: vec![] },
            name: service.into(),
            pid: None,
        }
    }

    fn network(name: &str, key: &str) -> NetworkFacts {
        NetworkFacts {
            id: format!("{name}-id-0123456789"),
            name: name.into(),
            driver: "bridge".into(),
            labels: BTreeMap::from([
                ("com.docker.compose.project".to_string(), "shop".to_string()),
                ("com.docker.compose.network".to_string(), key.to_string()),
            ]),
            ..Default::default()
        }
    }

    #[test]
    fn the_shop_matrix_expects_what_the_policy_and_docker_allow() {
        let policy = parse_policy(SHOP, "shop.yaml").unwrap();
        let mut live = HostPicture::default();
        live.replace(
            vec![
                known("web", &[("shop_default", "172.20.0.2")]),
                known("api", &[("shop_backend", "172.21.0.3"), ("shop_default", "172.20.0.3")]),
                known("db", &[("shop_backend", "172.21.0.4")]),
            ],
            vec![network("shop_default", "default"), network("shop_backend", "backend")],
        );
        let all = [policy];
        let (planned, skipped) = plan(&all, &[&all[0]], &live, &HostSettings::default());
        assert!(skipped.is_empty(), "{skipped:?}");
        let row = |from: &str, to: &str| {
            planned
                .iter()
                .find(|p| p.row.from == format!("shop/{from}") && p.row.to == format!("shop/{to}"))
                .unwrap()
        };
        assert_eq!(row("web", "api").row.expected, Reach::Reachable);
        assert_eq!(row("web", "api").row.target, "172.20.0.3:9000/tcp", "the address on the shared network");
        assert_eq!(row("api", "db").row.expected, Reach::Reachable);
        assert!(row("api", "db").row.because.ends_with("services.db.ingress[0]"));
        assert_eq!(row("web", "db").row.expected, Reach::Blocked);
        assert!(row("web", "db").row.because.contains("no network in common"));
        assert_eq!(row("db", "api").row.expected, Reach::Blocked);
        assert!(
            row("db", "api").row.because.contains("services.db.egress"),
            "{}",
            row("db", "api").row.because
        );
        assert_eq!(row("api", "web").row.expected, Reach::Blocked);
        assert_eq!(planned.len(), 6, "3 services, one port each, every ordered pair");
    }
}
