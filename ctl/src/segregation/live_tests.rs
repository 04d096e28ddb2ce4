use super::*;
use bollard::models::{
    ContainerConfig, ContainerState, ContainerSummaryNetworkSettings, Ipam, IpamConfig, NetworkSettings,
    PortBinding, PortSummary,
};
use seg_common::api::Identity;

fn endpoint(v4: &str) -> EndpointSettings {
    EndpointSettings {
        ip_address: Some(v4.into()),
        global_ipv6_address: Some(String::new()),
        ..Default::default()
    }
}

fn labels() -> HashMap<String, String> {
    HashMap::from([
        ("com.docker.compose.project".to_owned(), "shop".to_owned()),
        ("com.docker.compose.service".to_owned(), "db".to_owned()),
    ])
}

#[test]
fn summaries_and_inspections_agree() {
    let summary = ContainerSummary {
        id: Some("c1".into()),
        names: Some(vec!["/shop_db_1".into()]),
        state: Some(ContainerSummaryStateEnum::RUNNING),
        labels: Some(labels()),
        network_settings: Some(ContainerSummaryNetworkSettings {
            networks: Some(HashMap::from([("shop_backend".to_owned(), endpoint("172.30.0.3"))])),
        }),
        ports: Some(vec![
            PortSummary {
                ip: Some("0.0.0.0".into()),
                private_port: 5432,
                public_port: Some(15432),
                typ: None,
            },
            PortSummary { ip: Some("::".into()), private_port: 5432, public_port: Some(15432), typ: None },
            PortSummary { ip: None, private_port: 9999, public_port: None, typ: None },
        ]),
        ..Default::default()
    };
    let from_list = from_summary(summary.clone()).unwrap();
    let inspect = ContainerInspectResponse {
        id: Some("c1".into()),
        name: Some("/shop_db_1".into()),
        state: Some(ContainerState { running: Some(true), pid: Some(4242), ..Default::default() }),
        config: Some(ContainerConfig { labels: Some(labels()), ..Default::default() }),
        network_settings: Some(NetworkSettings {
            networks: Some(HashMap::from([("shop_backend".to_owned(), endpoint("172.30.0.3"))])),
            ports: Some(HashMap::from([
                (
                    "5432/tcp".to_owned(),
                    Some(vec![
                        PortBinding { host_ip: Some("0.0.0.0".into()), host_port: Some("15432".into()) },
                        PortBinding { host_ip: Some("::".into()), host_port: Some("15432".into()) },
                    ]),
                ),
                ("9999/tcp".to_owned(), None),
            ])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let from_inspect = from_inspect(inspect.clone()).unwrap();
    assert_eq!((from_inspect.pid, from_list.pid), (Some(4242), None));
    assert_eq!(from_inspect.name, "shop_db_1");
    assert_eq!(from_list.facts.endpoints, from_inspect.facts.endpoints);
    assert_eq!(from_list.facts.published, from_inspect.facts.published);
    assert_eq!(from_list.facts.published.len(), 1, "one port, every host address");
    // A stopped container keeps its networks, not its addresses.
    let exited = ContainerSummary { state: Some(ContainerSummaryStateEnum::EXITED), ..summary };
    let stopped = from_summary(exited).unwrap();
    assert_eq!(stopped.facts.endpoints[0].network, "shop_backend");
    assert_eq!((stopped.facts.endpoints[0].ipv4, stopped.facts.published.len()), (None, 0));
    let mut dead = inspect;
    dead.state = Some(ContainerState { running: Some(false), pid: Some(0), ..Default::default() });
    let dead = super::from_inspect(dead).unwrap();
    assert_eq!((dead.pid, dead.facts.endpoints[0].ipv4), (None, None));
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
    let mut live = Live::default();
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
