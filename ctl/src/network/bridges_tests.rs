use super::*;
use crate::network::NetworkInfo;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};

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
    let wanted = networks.iter().filter_map(|n| n.bridge_if.as_deref());
    assert_eq!(missing_bridges(wanted, &bridges), ["br-gone"]);
}
