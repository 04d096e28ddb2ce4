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
