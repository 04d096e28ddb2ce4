//! The host's own settings in the compiled rules: ICC off on docker0 (the
//! controller's `segctl icc disable`) without any policy, and with one.

use super::sim::{Packet, Verdict, Walker};
use super::*;
use crate::policy::{parse_policy, Proto};
use seg_common::api::Identity;
use std::net::IpAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn docker0_inventory() -> Inventory {
    let labelled = |id: &str, addr: &str, svc: Option<&str>| Container {
        id: id.into(),
        service: svc.map(|s| Identity::new(None, s)),
        endpoints: vec![NetEndpoint {
            network: "bridge".into(),
            ipv4: Some(addr.parse().unwrap()),
            ipv6: None,
        }],
        published: vec![],
    };
    Inventory {
        containers: vec![
            labelled("a", "172.17.0.2", None),
            labelled("b", "172.17.0.3", None),
            labelled("vault", "172.17.0.4", Some("vault")),
            labelled("app", "172.17.0.5", Some("app")),
        ],
        networks: vec![Network {
            name: "bridge".into(),
            bridge: Some("docker0".into()),
            subnets: vec!["172.17.0.0/16".parse().unwrap()],
            compose_project: None,
            compose_network: None,
        }],
    }
}

fn on_docker0(src: &str, dst: &str, port: u16) -> Packet {
    Packet {
        src: ip(src),
        dst: ip(dst),
        proto: Some(Proto::Tcp),
        dport: port,
        in_if: "docker0".into(),
        out_if: "docker0".into(),
        established: false,
        dnat: None,
    }
}

fn icc_off() -> HostSettings {
    HostSettings { icc_off: ["bridge".to_string()].into() }
}

#[test]
fn host_icc_off_drops_docker0_traffic_even_to_unknown_containers() {
    let inv = docker0_inventory();
    assert!(compile(&[], &inv).v4.is_empty(), "nothing to do without policies or ICC");
    let table = compile_with(&[], &inv, &icc_off()).v4;
    let walker = Walker::new(&table).unwrap();
    assert_eq!(walker.walk(&on_docker0("172.17.0.2", "172.17.0.3", 80)).0, Verdict::Drop);
    // Started since the last reconcile: still checked (the subnet's entry).
    assert_eq!(walker.walk(&on_docker0("172.17.0.2", "172.17.0.99", 80)).0, Verdict::Drop);
    // docker0 is not guarded: unknown addresses keep their other traffic.
    let mut out = on_docker0("172.17.0.99", "8.8.8.8", 53);
    out.out_if = "eth0".into();
    assert_eq!(walker.walk(&out).0, Verdict::Pass);
    // The world through a published port is not container-to-container.
    let mut world = on_docker0("192.0.2.1", "172.17.0.3", 80);
    world.in_if = "eth0".into();
    assert_eq!(walker.walk(&world).0, Verdict::Pass);
}

#[test]
fn a_policy_allow_on_docker0_wins_over_host_icc_off() {
    let text = "version: 1\nservices:\n  vault: { ingress: [{ from: [app], ports: [8200/tcp] }] }\n  app: { ingress: any }\n";
    let policies = vec![parse_policy(text, "vault.yaml").unwrap()];
    let inv = docker0_inventory();
    let walker = Walker::new(&compile_with(&policies, &inv, &icc_off()).v4).unwrap();
    assert_eq!(walker.walk(&on_docker0("172.17.0.5", "172.17.0.4", 8200)).0, Verdict::Pass);
    assert_eq!(walker.walk(&on_docker0("172.17.0.2", "172.17.0.4", 8200)).0, Verdict::Drop);
    assert_eq!(walker.walk(&on_docker0("172.17.0.5", "172.17.0.2", 80)).0, Verdict::Drop, "ICC");
}
