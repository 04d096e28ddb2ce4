use super::*;
use bollard::models::{
    ContainerSummary, ContainerSummaryNetworkSettings, ContainerSummaryStateEnum, EndpointSettings,
    PortSummary, PortSummaryTypeEnum,
};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use std::collections::HashMap;

fn network(name: &str, id: &str, bridge: Option<&str>) -> NetworkInfo {
    NetworkInfo {
        name: name.into(),
        id: id.into(),
        driver: if bridge.is_some() { "bridge" } else { "host" }.into(),
        internal: false,
        icc: true,
        subnets: vec![],
        bridge_if: bridge.map(str::to_owned),
        managed: false,
        containers: vec![],
    }
}

fn endpoint(id: &str, v4: &str, v6: &str) -> EndpointSettings {
    EndpointSettings {
        network_id: Some(id.into()),
        ip_address: Some(v4.into()),
        global_ipv6_address: Some(v6.into()),
        ..Default::default()
    }
}

fn port(ip: &str, public: Option<u16>, private: u16, typ: PortSummaryTypeEnum) -> PortSummary {
    PortSummary { ip: Some(ip.into()), public_port: public, private_port: private, typ: Some(typ) }
}

fn web() -> ContainerSummary {
    let labels = [
        ("com.docker.compose.project", "shop"),
        ("com.docker.compose.service", "web"),
        ("seg.service", "ignored"),
    ];
    ContainerSummary {
        id: Some("c1".into()),
        names: Some(vec!["/shop_web_1".into()]),
        state: Some(ContainerSummaryStateEnum::RUNNING),
        labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        network_settings: Some(ContainerSummaryNetworkSettings {
            networks: Some(HashMap::from([
                ("shop_front".to_owned(), endpoint("n1", "172.20.0.2", "fd00:20::2")),
                ("bridge".to_owned(), endpoint("n0", "172.17.0.5", "")),
            ])),
        }),
        ports: Some(vec![
            port("0.0.0.0", Some(8080), 80, PortSummaryTypeEnum::TCP),
            port("::", Some(8080), 80, PortSummaryTypeEnum::TCP),
            port("0.0.0.0", Some(8080), 80, PortSummaryTypeEnum::TCP),
            port("127.0.0.1", Some(5353), 53, PortSummaryTypeEnum::UDP),
            port("", None, 9000, PortSummaryTypeEnum::TCP),
            port("not-an-ip", Some(1), 1, PortSummaryTypeEnum::TCP),
        ]),
        ..Default::default()
    }
}

#[test]
fn summaries_map_to_live_containers() {
    let networks = [network("bridge", "n0", Some("docker0")), network("shop_front", "n1", Some("br-n1"))];
    let stopped = ContainerSummary { state: Some(ContainerSummaryStateEnum::EXITED), ..web() };
    let sidecar = ContainerSummary {
        id: Some("c2".into()),
        names: Some(vec!["/a_sidecar".into()]),
        state: Some(ContainerSummaryStateEnum::PAUSED),
        labels: Some(HashMap::from([
            ("seg.service".to_owned(), "web-seg".to_owned()),
            ("seg.project".to_owned(), "shop".to_owned()),
            ("seg.for".to_owned(), "web".to_owned()),
        ])),
        ..Default::default()
    };
    let live = from_summaries(vec![web(), stopped, sidecar], &networks);
    assert_eq!(live.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["a_sidecar", "shop_web_1"]);
    let (car, web) = (&live[0], &live[1]);
    assert_eq!((car.project.as_deref(), car.service.as_deref()), (Some("shop"), Some("web-seg")));
    assert_eq!((car.acts_for.as_deref(), car.networks.len(), car.pid), (Some("web"), 0, None));
    assert_eq!(
        (web.project.as_deref(), web.service.as_deref(), web.acts_for.as_deref()),
        (Some("shop"), Some("web"), None)
    );
    assert_eq!(web.labels["seg.service"], "ignored");
    let nets: Vec<_> =
        web.networks.iter().map(|a| (a.network_name.as_str(), a.bridge_if.as_deref())).collect();
    assert_eq!(nets, [("bridge", Some("docker0")), ("shop_front", Some("br-n1"))]);
    assert_eq!((web.networks[0].ipv4, web.networks[0].ipv6), (Some("172.17.0.5".parse().unwrap()), None));
    assert_eq!(web.networks[1].ipv6, Some("fd00:20::2".parse().unwrap()));
    let published: Vec<String> = web
        .published
        .iter()
        .map(|p| format!("{}:{}->{}/{}", p.host_ip, p.host_port, p.container_port, p.proto.name()))
        .collect();
    assert_eq!(published, ["0.0.0.0:8080->80/tcp", "127.0.0.1:5353->53/udp", ":::8080->80/tcp"]);
}

#[test]
fn unknown_networks_and_missing_names_still_map() {
    let mut s = web();
    s.names = None;
    s.network_settings = Some(ContainerSummaryNetworkSettings {
        networks: Some(HashMap::from([("host".to_owned(), endpoint("", "", ""))])),
    });
    let c = live_container(s, &[]).unwrap();
    assert_eq!(c.name, "c1");
    assert_eq!((c.networks[0].bridge_if.clone(), c.networks[0].ipv4), (None, None));
    assert!(live_container(ContainerSummary::default(), &[]).is_none());
}

#[test]
fn inventory_attachments_by_container_id() {
    let inv = Inventory { containers: from_summaries(vec![web()], &[]), networks: vec![] };
    let a = inv.attachments();
    assert_eq!(a["c1"].iter().map(String::as_str).collect::<Vec<_>>(), ["bridge", "shop_front"]);
}

fn link(index: u32, name: &str, kind: Option<InfoKind>, up: bool) -> LinkMessage {
    let mut l = LinkMessage::default();
    l.header.index = index;
    if up {
        l.header.flags = LinkFlags::Up;
    }
    l.attributes.push(LinkAttribute::IfName(name.into()));
    if let Some(kind) = kind {
        l.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind)]));
    }
    l
}

fn addr(index: u32, attrs: Vec<AddressAttribute>, prefix_len: u8) -> AddressMessage {
    let mut a = AddressMessage::default();
    a.header.index = index;
    a.header.prefix_len = prefix_len;
    a.attributes = attrs;
    a
}

#[test]
fn bridges_are_picked_from_links_with_their_addresses() {
    let links = [
        link(1, "lo", None, true),
        link(3, "docker0", Some(InfoKind::Bridge), true),
        link(4, "veth1", Some(InfoKind::Veth), true),
        link(5, "br-abc", Some(InfoKind::Bridge), false),
    ];
    let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
    let addrs = [
        addr(
            3,
            vec![AddressAttribute::Address(v4("172.17.0.1")), AddressAttribute::Local(v4("172.17.0.1"))],
            16,
        ),
        addr(3, vec![AddressAttribute::Address(v4("fe80::1"))], 64),
        addr(1, vec![AddressAttribute::Local(v4("127.0.0.1"))], 8),
        addr(5, vec![AddressAttribute::Label("x".into())], 24),
    ];
    let bridges = bridges_from(&links, &addrs);
    assert_eq!(
        bridges.iter().map(|b| (b.name.as_str(), b.index, b.up)).collect::<Vec<_>>(),
        [("br-abc", 5, false), ("docker0", 3, true)]
    );
    let docker0: Vec<String> =
        bridges[1].addrs.iter().map(|a| format!("{}/{}", a.addr, a.prefix_len)).collect();
    assert_eq!(docker0, ["172.17.0.1/16", "fe80::1/64"]);
    assert!(bridges[0].addrs.is_empty());
    let networks = [
        network("bridge", "n0", Some("docker0")),
        network("x", "n2", Some("br-gone")),
        network("host", "h", None),
    ];
    assert_eq!(missing_bridges(&networks, &bridges), ["br-gone"]);
}
