//! Test fixtures: inventories written as YAML (`ctl/tests/golden/*/inventory.yaml`)
//! and golden-file comparison with `SEG_BLESS=1` to regenerate.

use super::inventory::{Container, Inventory, NetEndpoint, Network, PublishedPort};
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
