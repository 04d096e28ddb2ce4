//! seg's nftables table beside Docker Engine 29's own nftables tables.
//!
//! Engine 29's nftables backend has no `DOCKER-USER` chain: it keeps its
//! rules in `table ip docker-bridges` / `table ip6 docker-bridges`, with a
//! base chain on the forward hook at priority `filter`. That engine is not
//! packaged here, so a throwaway namespace gets tables of the same shape:
//! Docker accepts bridge traffic except one port it drops itself (as it does
//! for an unpublished port or ICC off). seg's base chain runs first
//! (`filter - 10`): its drop is final, its "allowed" only lets the packet go
//! on to Docker's chain — seg only restricts. Real packets, IPv4 and IPv6.
//!
//! Needs root, `ip` and `nft`; touches no host rule.

// This test uses part of the shared support.
#[allow(dead_code)]
#[path = "firewall_netns_support/mod.rs"]
mod firewall_netns_support;

use firewall_netns_support::Topology;
use segctl::firewall::{apply, compile, remove_all};
use segctl::policy;

/// Docker 29's shape: one table per family, a forward base chain at
/// priority `filter`, Docker's own verdicts for its bridges.
fn docker29_tables() -> String {
    let mut script = String::new();
    for family in ["ip", "ip6"] {
        script.push_str(&format!(
            "add table {family} docker-bridges\n\
             add chain {family} docker-bridges filter-FORWARD {{ type filter hook forward priority filter; policy accept; }}\n\
             add rule {family} docker-bridges filter-FORWARD ct state established,related accept\n\
             add rule {family} docker-bridges filter-FORWARD oifname \"segbr0\" tcp dport 6000 drop\n\
             add rule {family} docker-bridges filter-FORWARD oifname \"segbr0\" accept\n"
        ));
    }
    script
}

#[test]
fn seg_restricts_beside_docker29_tables_and_never_overrides_their_drops() {
    let topo = Topology::new("d29");
    let script = docker29_tables();
    topo.in_host(&["sh", "-c", &format!("printf '%s' '{script}' | nft -f -")]);
    assert!(topo.connects("web", "db", 5432), "Docker alone lets the bridge talk");
    assert!(!topo.connects("api", "db", 6000), "Docker alone drops port 6000");
    let text = "version: 1\nproject: shop\nservices:\n  web: { ingress: any }\n  api: { ingress: [{ from: [web], ports: [9000/tcp] }] }\n  db: { ingress: [{ from: [api], ports: [5432/tcp, 6000/tcp] }], egress: none }\n";
    let desired = compile(&[policy::parse_policy(text, "shop.yaml").unwrap()], &topo.inventory());
    let mut fw = topo.nft();
    apply(&mut fw, &desired).unwrap();
    let tables = topo.in_host(&["nft", "list", "tables"]);
    for t in ["table inet seg", "table ip docker-bridges", "table ip6 docker-bridges"] {
        assert!(tables.lines().any(|l| l.trim() == t), "{t} is there:\n{tables}");
    }
    assert!(topo.connects("api", "db", 5432), "allowed by seg and by Docker");
    assert!(!topo.connects("web", "db", 5432), "seg's drop is final whatever Docker's chain says");
    assert!(
        !topo.connects("api", "db", 6000),
        "seg allows 6000, Docker drops it: seg never accepts for Docker"
    );
    assert!(topo.connects("web", "api", 9000));
    let docker_before = topo.in_host(&["nft", "list", "table", "ip", "docker-bridges"]);
    remove_all(&mut fw).unwrap();
    assert_eq!(
        topo.in_host(&["nft", "list", "table", "ip", "docker-bridges"]),
        docker_before,
        "Docker's tables untouched"
    );
    assert!(topo.connects("web", "db", 5432), "seg gone, Docker's verdicts alone again");
}

/// Not a test: the listener/connector the tests run inside namespaces.
#[test]
#[ignore]
fn probe_helper() {
    firewall_netns_support::probe_helper();
}
