//! Test fixtures: inventories written as YAML (`ctl/tests/golden/*/inventory.yaml`)
//! and golden-file comparison with `SEG_BLESS=1` to regenerate.

use super::inventory::{Container, Inventory, NetEndpoint, Network, PublishedPort};
use super::synth;
use crate::policy::Proto;
use seg_common::api::Identity;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvFile {
    #[serde(default)]
    networks: Vec<NetFile>,
    #[serde(default)]
    containers: Vec<ContainerFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetFile {
    name: String,
    bridge: Option<String>,
    #[serde(default)]
    subnets: Vec<String>,
    project: Option<String>,
    network: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContainerFile {
    id: String,
    /// `shop/web`, or `web` for a standalone container.
    service: Option<String>,
    /// network → address (v4 and/or v6, comma separated).
    ips: BTreeMap<String, String>,
    /// `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]`, as in compose.
    #[serde(default)]
    publish: Vec<String>,
}

pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

pub fn inventory(text: &str) -> Inventory {
    let f: InvFile = serde_norway::from_str(text).expect("fixture inventory parses");
    let networks = f
        .networks
        .into_iter()
        .map(|n| Network {
            name: n.name,
            bridge: n.bridge,
            subnets: n.subnets.iter().map(|s| s.parse().expect("subnet")).collect(),
            compose_project: n.project,
            compose_network: n.network,
        })
        .collect();
    let containers = f.containers.into_iter().map(container).collect();
    Inventory { containers, networks }
}

fn container(c: ContainerFile) -> Container {
    let service = c.service.map(|s| match s.split_once('/') {
        Some((p, s)) => Identity::new(Some(p), s),
        None => Identity::new(None, &s),
    });
    let endpoints = c
        .ips
        .into_iter()
        .map(|(network, ips)| {
            let mut ep = NetEndpoint { network, ipv4: None, ipv6: None };
            for ip in ips.split(',').map(|s| s.trim().parse::<IpAddr>().expect("address")) {
                match ip {
                    IpAddr::V4(a) => ep.ipv4 = Some(a),
                    IpAddr::V6(a) => ep.ipv6 = Some(a),
                }
            }
            ep
        })
        .collect();
    Container { id: c.id, service, endpoints, published: c.publish.iter().map(|p| publish(p)).collect() }
}

fn publish(spec: &str) -> PublishedPort {
    let (spec, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let proto: Proto = proto.parse().expect("proto");
    let (host, container_port) = spec.rsplit_once(':').expect("HOST:CONTAINER");
    let (host_ip, host_port) = match host.rsplit_once(':') {
        Some((ip, port)) => (Some(ip.trim_matches(['[', ']']).parse().expect("host ip")), port),
        None => (None, host),
    };
    PublishedPort {
        proto,
        container_port: container_port.parse().expect("port"),
        host_ip,
        host_port: host_port.parse().expect("port"),
    }
}

/// Compares `actual` with the golden file, or writes it when `SEG_BLESS=1`.
pub fn assert_golden(path: &Path, actual: &str) {
    if std::env::var("SEG_BLESS").as_deref() == Ok("1") {
        std::fs::write(path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with SEG_BLESS=1 to create it)", path.display()));
    if expected != actual {
        let first = expected.lines().zip(actual.lines()).position(|(a, b)| a != b);
        panic!(
            "{} differs (first different line: {:?}); run with SEG_BLESS=1 to accept.\n--- actual ---\n{actual}",
            path.display(),
            first.map(|i| i + 1)
        );
    }
}

/// One random change of the kind Docker events bring, to the synthetic
/// scenario of 6 projects ([`super::synth`]): a start, a stop, a removal, a
/// move, a published port, an IPv6 address.
pub fn random_change(inv: &mut Inventory, rng: &mut fastrand::Rng, step: u16) {
    let v6 =
        |rng: &mut fastrand::Rng| Some(std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, rng.u16(1..40)));
    // A network of its own, guarded while its one container runs.
    if inv.network("lone").is_none() {
        let subnet = crate::policy::Cidr::new(std::net::Ipv4Addr::new(10, 200, 0, 0).into(), 24);
        inv.networks.push(Network {
            name: "lone".into(),
            bridge: Some("br-lone".into()),
            subnets: subnet.into_iter().collect(),
            compose_project: None,
            compose_network: None,
        });
    }
    let n = inv.containers.len();
    match rng.u8(..8) {
        7 => match inv.containers.iter().position(|c| c.id == "lone") {
            Some(at) => drop(inv.containers.remove(at)),
            None => inv.containers.push(Container {
                id: "lone".into(),
                service: Some(Identity::new(Some("p0"), "s1")),
                endpoints: vec![NetEndpoint {
                    network: "lone".into(),
                    ipv4: Some(std::net::Ipv4Addr::new(10, 200, 0, 5)),
                    ipv6: v6(rng),
                }],
                published: vec![],
            }),
        },
        0 if n > 0 => drop(inv.containers.remove(rng.usize(..n))),
        1 | 2 => {
            let (k, s) = (rng.usize(..6), rng.usize(..10));
            inv.containers.push(Container {
                id: format!("x{step}-{}", rng.u32(..)),
                service: (rng.u8(..8) > 0).then(|| Identity::new(Some(&format!("p{k}")), &format!("s{s}"))),
                endpoints: vec![NetEndpoint {
                    network: format!("p{k}_default"),
                    ipv4: Some(synth::address(k, s, 5 + rng.usize(..4))),
                    ipv6: (rng.u8(..3) == 0).then(|| v6(rng)).flatten(),
                }],
                published: vec![],
            });
        }
        3 if n > 0 => {
            let port = PublishedPort {
                proto: Proto::Tcp,
                container_port: 80,
                host_ip: None,
                host_port: 30000 + step,
            };
            inv.containers[rng.usize(..n)].published = vec![port];
        }
        // A stop: the container keeps its networks, loses its addresses.
        4 if n > 0 => {
            let c = &mut inv.containers[rng.usize(..n)];
            c.endpoints.iter_mut().for_each(|e| (e.ipv4, e.ipv6) = (None, None));
            c.published.clear();
        }
        5 if n > 0 => inv.containers[rng.usize(..n)].endpoints[0].ipv6 = v6(rng),
        _ if n > 0 => {
            let at = synth::address(rng.usize(..6), rng.usize(..10), 9);
            inv.containers[rng.usize(..n)].endpoints[0].ipv4 = Some(at);
        }
        _ => {}
    }
}
