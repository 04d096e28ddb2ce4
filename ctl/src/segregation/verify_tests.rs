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
    assert!(row("db", "api").row.because.contains("services.db.egress"), "{}", row("db", "api").row.because);
    assert_eq!(row("api", "web").row.expected, Reach::Blocked);
    assert_eq!(planned.len(), 6, "3 services, one port each, every ordered pair");
}
