//! Network segregation against the real Docker engine: seg-managed networks
//! are created with the right flags and bridges (checked over rtnetlink), a
//! container is moved between networks by an attachment plan, the inventory
//! sees identities, addresses and published ports, and removal refuses a
//! network in use. Every object is named `segt-<pid>-<random>-…` and removed
//! by a guard however the test ends.
//!
//! Needs root, a running dockerd on /var/run/docker.sock and busybox-static
//! (`apt-get install -y busybox-static`). It fails, never skips, without them.

mod support;

use seg_common::api::Identity;
use segctl::docker::DockerNetworks;
use segctl::firewall::Container;
use segctl::network::bridges as host_bridges;
use segctl::network::{self, NetworkError, NetworkInfo, NetworkSpec};
use segctl::policy::{Cidr, Proto};
use segctl::segregation::{attach, live};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use support::{build_busybox_image, docker_cli, Guard, SOCKET};

const IMAGE: &str = "seg-test-busybox:net";

fn find<'a>(networks: &'a [NetworkInfo], name: &str) -> &'a NetworkInfo {
    networks.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("network {name} not listed"))
}

/// Creates `name` with a random 10.77.x.0/24, retrying when another test's
/// network already holds that range.
async fn create_with_subnet(api: &DockerNetworks, name: &str) -> Cidr {
    for _ in 0..5 {
        let subnet = network::parse_subnet(&format!("10.77.{}.0/24", fastrand::u8(..))).unwrap();
        let spec = NetworkSpec::new(name, false, true, Some(subnet)).unwrap();
        match network::create(api, &spec).await {
            Ok(_) => return subnet,
            Err(NetworkError::Docker { reason, .. }) if reason.contains("overlap") => continue,
            Err(e) => panic!("creating {name}: {e}"),
        }
    }
    panic!("no free 10.77.x.0/24 for {name} after 5 tries");
}

fn in_subnet(ip: Option<Ipv4Addr>, subnet: &Cidr) -> bool {
    let IpAddr::V4(net) = subnet.addr() else { return false };
    ip.is_some_and(|ip| ip.octets()[..3] == net.octets()[..3])
}

/// The controller's picture of the engine (the one the firewall compiles against).
async fn picture(docker: &bollard::Docker) -> live::HostPicture {
    let (containers, networks) = live::collect(docker).await.expect("collect the inventory");
    let mut picture = live::HostPicture::default();
    picture.replace(containers, networks);
    picture
}

fn container<'a>(picture: &'a live::HostPicture, name: &str) -> &'a Container {
    let inv = picture.inventory();
    inv.containers
        .iter()
        .find(|c| picture.name(&c.id) == name)
        .unwrap_or_else(|| panic!("{name} missing from the inventory"))
}

/// The network names a container is on, per `docker inspect`.
fn inspected_networks(container: &str) -> Vec<String> {
    let json = docker_cli(&["inspect", "-f", "{{json .NetworkSettings.Networks}}", container]);
    let map: BTreeMap<String, serde_json::Value> = serde_json::from_str(&json).expect("networks as JSON");
    map.into_keys().collect()
}

/// Every object name of one run, under one unique prefix.
struct Names {
    prefix: String,
    net_a: String,
    net_b: String,
    net_c: String,
    one: String,
    two: String,
}

impl Names {
    fn new() -> Names {
        let prefix = format!("segt-{}-{:04x}", std::process::id(), fastrand::u16(..));
        let name = |suffix: &str| format!("{prefix}-{suffix}");
        Names {
            net_a: name("a"),
            net_b: name("b"),
            net_c: name("c"),
            one: name("one"),
            two: name("two"),
            prefix,
        }
    }

    /// The compose service label of a container: its name after the prefix.
    fn service<'a>(&self, container: &'a str) -> &'a str {
        &container[self.prefix.len() + 1..]
    }
}

/// A: internal, ICC off, Docker's subnet; B: routed, ICC on, our subnet.
/// Checks both as listed; returns B's listing and subnet.
async fn create_networks(api: &DockerNetworks, n: &Names, spec_a: &NetworkSpec) -> (NetworkInfo, Cidr) {
    network::create(api, spec_a).await.expect("create network A");
    let subnet_b = create_with_subnet(api, &n.net_b).await;
    let err = network::create(api, spec_a).await.unwrap_err();
    assert!(matches!(err, NetworkError::AlreadyExists(_)), "{err}");

    let networks = network::list(api).await.unwrap();
    let (a, b) = (find(&networks, &n.net_a), find(&networks, &n.net_b));
    assert_eq!((a.driver.as_str(), a.internal, a.icc, a.managed), ("bridge", true, false, true));
    assert_eq!(a.bridge_if.as_deref(), Some(format!("br-{}", &a.id[..12]).as_str()));
    assert_eq!((b.internal, b.icc, b.subnets.clone()), (false, true, vec![subnet_b.to_string()]));
    assert_eq!(find(&networks, "bridge").bridge_if.as_deref(), Some("docker0"));

    // The bridges exist on the host; B's carries its gateway address.
    let bridges = host_bridges::bridges().await.expect("netlink dump of the host's links");
    assert!(bridges.iter().any(|br| br.name == "docker0"), "no docker0 among {bridges:?}");
    let bridge_b = bridges.iter().find(|br| Some(&br.name) == b.bridge_if.as_ref()).expect("B's bridge link");
    let gateway =
        |x: &host_bridges::IfAddr| matches!(x.addr, IpAddr::V4(v4) if in_subnet(Some(v4), &subnet_b));
    assert!(bridge_b.addrs.iter().any(|x| gateway(x) && x.prefix_len == 24), "{bridge_b:?}");
    assert!(host_bridges::missing_bridges([&a, &b].iter().filter_map(|n| n.bridge_if.as_deref()), &bridges)
        .is_empty());
    (b.clone(), subnet_b)
}

/// A matches, B differs (reported, left as it is), C is created.
async fn check_ensure(api: &DockerNetworks, n: &Names, spec_a: &NetworkSpec) {
    let declared = [
        spec_a.clone(),
        NetworkSpec::new(&n.net_b, false, false, None).unwrap(),
        NetworkSpec::new(&n.net_c, true, true, None).unwrap(),
    ];
    let report = network::ensure_networks(api, &declared).await.unwrap();
    assert_eq!((report.created, report.unchanged), (vec![n.net_c.clone()], vec![n.net_a.clone()]));
    let mismatch = report.mismatched[0].to_string();
    assert!(mismatch.contains("icc is true (policy: false)") && mismatch.contains(&n.net_b), "{mismatch}");
    assert!(find(&network::list(api).await.unwrap(), &n.net_b).icc, "B must not be changed");
}

/// `one` on B with a published port; `two` on A (to be moved to B).
fn run_containers(n: &Names) -> [Guard; 2] {
    let guards = [Guard::container(&n.one), Guard::container(&n.two)];
    for (name, net, publish) in [(&n.one, &n.net_b, Some("127.0.0.1::8080")), (&n.two, &n.net_a, None)] {
        let service = format!("com.docker.compose.service={}", n.service(name));
        let project = format!("com.docker.compose.project={}", n.prefix);
        let mut args =
            vec!["run", "-d", "--name", name, "--network", net, "--label", &project, "--label", &service];
        if let Some(publish) = publish {
            args.extend(["-p", publish]);
        }
        args.extend([IMAGE, "sleep", "300"]);
        docker_cli(&args);
    }
    guards
}

/// Both are declared on B only: the plan connects `two` to B, then
/// disconnects it from A, and leaves every other container alone.
async fn move_two_to_b(docker: &bollard::Docker, api: &DockerNetworks, n: &Names) {
    let before = picture(docker).await;
    let (id_one, id_two) = (container(&before, &n.one).id.clone(), container(&before, &n.two).id.clone());
    let on_b = || [n.net_b.clone()].into();
    let desired: network::Attachments = [(id_one, on_b()), (id_two.clone(), on_b())].into();
    let ops = network::plan_attachments(&desired, &attach::actual(before.inventory()));
    let expected = [
        network::Op::Connect { container: id_two.clone(), network: n.net_b.clone() },
        network::Op::Disconnect { container: id_two, network: n.net_a.clone() },
    ];
    assert_eq!(ops, expected);
    assert_eq!(network::apply_attachments(api, &ops).await.unwrap(), 2);
    assert_eq!(inspected_networks(&n.two), [n.net_b.as_str()]);
    assert_eq!(inspected_networks(&n.one), [n.net_b.as_str()]);
}

/// Identities, PIDs, addresses in B's subnet, B's bridge, the published port.
async fn check_inventory(docker: &bollard::Docker, n: &Names, b: &NetworkInfo, subnet_b: &Cidr) {
    let inv = picture(docker).await;
    let bridge_b = inv.inventory().network(&n.net_b).and_then(|net| net.bridge.clone());
    assert_eq!(bridge_b, b.bridge_if);
    for name in [&n.one, &n.two] {
        let c = container(&inv, name);
        assert_eq!(c.service, Some(Identity::new(Some(&n.prefix), n.service(name))));
        let inspected = live::inspect(docker, &c.id).await.expect("inspect").expect("still there");
        assert!(inspected.pid.is_some_and(|p| p > 1), "{name}: {:?}", inspected.pid);
        assert_eq!(c.endpoints.len(), 1, "{c:?}");
        let at = &c.endpoints[0];
        assert_eq!(at.network, n.net_b);
        assert!(in_subnet(at.ipv4, subnet_b), "{name} address {:?} not in {subnet_b}", at.ipv4);
    }
    let published = &container(&inv, &n.one).published;
    assert!(!published.is_empty(), "no published port for {}", n.one);
    for p in published {
        assert_eq!(
            (p.host_ip, p.container_port, p.proto),
            (Some("127.0.0.1".parse().unwrap()), 8080, Proto::Tcp)
        );
        assert!(p.host_port > 0);
    }
    assert!(container(&inv, &n.two).published.is_empty());
}

/// Refused while in use and for predefined networks; done once empty.
async fn check_removal(api: &DockerNetworks, n: &Names, containers: [Guard; 2]) {
    let msg = network::remove(api, &n.net_b).await.unwrap_err().to_string();
    assert!(msg.contains(&n.one) && msg.contains(&n.two) && msg.contains("2 container(s)"), "{msg}");
    assert!(matches!(network::remove(api, "bridge").await, Err(NetworkError::Predefined(_))));
    network::remove(api, &n.net_a).await.expect("A is empty now");
    drop(containers);
    network::remove(api, &n.net_b).await.expect("B is empty once the containers are gone");
    let left = network::list(api).await.unwrap();
    assert!(!left.iter().any(|x| x.name == n.net_a || x.name == n.net_b), "A and B removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_attachments_and_inventory_on_the_real_engine() {
    docker_cli(&["info", "--format", "{{.ServerVersion}}"]);
    build_busybox_image(IMAGE);
    let n = Names::new();
    // Declared before the containers' guards, so they drop after them.
    let _networks = [Guard::network(&n.net_a), Guard::network(&n.net_b), Guard::network(&n.net_c)];
    let docker = segctl::docker::connect(Path::new(SOCKET)).await.expect("connect to dockerd");
    let api = DockerNetworks { docker: docker.clone() };
    let spec_a = NetworkSpec::new(&n.net_a, true, false, None).unwrap();

    let (b, subnet_b) = create_networks(&api, &n, &spec_a).await;
    check_ensure(&api, &n, &spec_a).await;
    let containers = run_containers(&n);
    move_two_to_b(&docker, &api, &n).await;
    check_inventory(&docker, &n, &b, &subnet_b).await;
    check_removal(&api, &n, containers).await;
}
