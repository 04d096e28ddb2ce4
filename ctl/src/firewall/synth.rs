//! Synthetic scenarios of any size, for the benchmark and scale tests:
//! `projects` compose projects of 10 services each, one network per
//! project, each service reachable from the previous one, the first from
//! the world through a published port, the last with no egress.

use super::inventory::{Container, Inventory, NetEndpoint, Network, PublishedPort};
use crate::policy::{parse_policy, Cidr, Policy, Proto};
use seg_common::api::Identity;
use std::net::Ipv4Addr;

pub const SERVICES_PER_PROJECT: usize = 10;

/// The subnet of project `k`: 10.(100 + k/256).(k%256).0/24.
pub fn subnet(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 100 + (k / 256) as u8, (k % 256) as u8, 0)
}

/// The address of replica `r` of service `s` in project `k`.
pub fn address(k: usize, s: usize, r: usize) -> Ipv4Addr {
    let o = subnet(k).octets();
    Ipv4Addr::new(o[0], o[1], o[2], (10 + s * 10 + r) as u8)
}

/// The policy of project `k`.
pub fn policy(k: usize) -> Policy {
    parse_policy(&policy_text(k), &format!("p{k}.yaml")).expect("synthetic policy is valid")
}

/// The policy of project `k`, as the YAML a user would write.
pub fn policy_text(k: usize) -> String {
    let mut text = format!("version: 1\nproject: p{k}\nservices:\n");
    for s in 0..SERVICES_PER_PROJECT {
        let ingress = if s == 0 {
            "[{ from: world, ports: [80/tcp] }, { from: [10.0.0.0/8], ports: [22/tcp] }]".to_string()
        } else {
            format!(
                "[{{ from: [s{}], ports: [{}/tcp, 9000-9100/tcp] }}, {{ from: [s0], ports: [53/udp] }}]",
                s - 1,
                5000 + s
            )
        };
        let egress = match s {
            9 => "none".to_string(),
            5 => "[s6, 192.168.0.0/16]".to_string(),
            _ => "any".to_string(),
        };
        text.push_str(&format!("  s{s}: {{ ingress: {ingress}, egress: {egress} }}\n"));
    }
    text
}

/// `projects` projects × 10 services × `replicas` containers (replicas ≤ 10).
pub fn scenario(projects: usize, replicas: usize) -> (Vec<Policy>, Inventory) {
    let mut inv = Inventory::default();
    for k in 0..projects {
        let name = format!("p{k}_default");
        let net = Cidr::new(subnet(k).into(), 24).expect("valid");
        let bridge = Some(format!("br-{:012x}", k));
        let (project, network) = (Some(format!("p{k}")), Some("default".to_string()));
        inv.networks.push(Network {
            name: name.clone(),
            bridge,
            subnets: vec![net],
            compose_project: project,
            compose_network: network,
        });
        for s in 0..SERVICES_PER_PROJECT {
            for r in 0..replicas {
                let published = if s == 0 {
                    let host_port = 20000 + (k * replicas + r) as u16;
                    vec![PublishedPort { proto: Proto::Tcp, container_port: 80, host_ip: None, host_port }]
                } else {
                    vec![]
                };
                inv.containers.push(Container {
                    id: format!("c{k}-{s}-{r}"),
                    service: Some(Identity::new(Some(&format!("p{k}")), &format!("s{s}"))),
                    endpoints: vec![NetEndpoint {
                        network: name.clone(),
                        ipv4: Some(address(k, s, r)),
                        ipv6: None,
                    }],
                    published,
                });
            }
        }
    }
    ((0..projects).map(policy).collect(), inv)
}
