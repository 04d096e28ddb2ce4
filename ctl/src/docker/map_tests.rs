use super::*;
use bollard::models::{
    ContainerConfig, ContainerState, ContainerSummaryNetworkSettings, EventActor, NetworkSettings,
    PortBinding, PortSummary,
};

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
fn inspect_response_maps_to_container_info() {
    let r = ContainerInspectResponse {
        id: Some("abc".into()),
        name: Some("/web-1".into()),
        config: Some(ContainerConfig {
            labels: Some(HashMap::from([("seg.service".to_owned(), "web".to_owned())])),
            ..Default::default()
        }),
        state: Some(ContainerState { pid: Some(4242), running: Some(true), ..Default::default() }),
        ..Default::default()
    };
    let info = container_info("abc", r);
    assert_eq!(info.name, "web-1");
    assert_eq!(info.labels.get("seg.service").map(String::as_str), Some("web"));
    assert_eq!((info.pid, info.running, info.id.as_str()), (4242, true, "abc"));
    let empty = container_info("xyz", ContainerInspectResponse::default());
    assert_eq!((empty.id.as_str(), empty.running, empty.pid), ("xyz", false, 0));
    assert!(empty.labels.is_empty());
}

#[test]
fn docker_events_map_to_seg_events() {
    let message = |typ, action: &str, attrs: &[(&str, &str)]| EventMessage {
        typ: Some(typ),
        action: Some(action.into()),
        actor: Some(EventActor {
            id: Some("n1".into()),
            attributes: Some(attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        }),
        time_nano: Some(1_500_000_000),
        ..Default::default()
    };
    let connect = event_from(message(EventMessageTypeEnum::NETWORK, "connect", &[("container", "c2")]));
    assert_eq!(
        connect,
        Some(Event {
            kind: Kind::Network,
            action: "connect".into(),
            actor: "n1".into(),
            container: Some("c2".into()),
            at: Some(Duration::from_millis(1500)),
        })
    );
    let die = event_from(message(EventMessageTypeEnum::CONTAINER, "die", &[])).unwrap();
    assert_eq!((die.kind, die.action.as_str(), die.container), (Kind::Container, "die", None));
    assert_eq!(event_from(message(EventMessageTypeEnum::IMAGE, "delete", &[])), None);
    assert_eq!(event_from(EventMessage::default()), None);
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
