use super::super::fixture::{assert_golden, golden_dir, inventory};
use super::super::nft_model::render;
use super::*;
use crate::firewall::{compile, compile_with, HostSettings};
use crate::policy::{self, Policy};
use std::path::Path;

fn load_case(dir: &Path, inv_file: &str) -> (Vec<Policy>, crate::firewall::Inventory) {
    let policy = policy::load(&dir.join("policy.yaml")).expect("fixture policy is valid");
    let inv = inventory(&std::fs::read_to_string(dir.join(inv_file)).expect("inventory"));
    (vec![policy], inv)
}

#[test]
fn golden_nft_renderings() {
    for case in ["shop", "icc-v6", "cidrs"] {
        let dir = golden_dir().join(case);
        let (policies, inv) = load_case(&dir, "inventory.yaml");
        let table = to_nft(&compile(&policies, &inv)).unwrap();
        assert_golden(&dir.join("expected.nft"), &render(&table, None));
    }
}

/// A third replica of a published service: map and set elements only.
#[test]
fn golden_nft_container_start_changes_elements_only() {
    let dir = golden_dir().join("shop");
    let (policies, inv) = load_case(&dir, "inventory.yaml");
    let (_, next_inv) = load_case(&dir, "next-inventory.yaml");
    let before = to_nft(&compile(&policies, &inv)).unwrap();
    let after = to_nft(&compile(&policies, &next_inv)).unwrap();
    let text = render(&after, Some(&before));
    assert_golden(&dir.join("expected.next.nft"), &text);
    assert!(text.lines().all(|l| !l.contains("chain") && !l.contains("rule")), "{text}");
    // And back: the replica stops.
    let back = render(&before, Some(&after));
    assert!(back.starts_with("delete element") && !back.contains("add chain"), "{back}");
    assert_eq!(render(&after, Some(&after)), "", "nothing to do");
}

#[test]
fn a_changed_chain_replaces_the_whole_table_in_one_script() {
    let dir = golden_dir().join("shop");
    let (policies, inv) = load_case(&dir, "inventory.yaml");
    let one = to_nft(&compile(&policies, &inv)).unwrap();
    let host = HostSettings { icc_off: ["bridge".to_string()].into() };
    let mut inv2 = inv.clone();
    inv2.networks.push(crate::firewall::Network {
        name: "bridge".into(),
        bridge: Some("docker0".into()),
        subnets: vec!["172.17.0.0/16".parse().unwrap()],
        compose_project: None,
        compose_network: None,
    });
    let two = to_nft(&compile_with(&policies, &inv2, &host)).unwrap();
    let text = render(&two, Some(&one));
    assert!(text.starts_with("add table inet seg\ndelete table inet seg\nadd table inet seg\n"), "{text}");
    assert!(text.contains("add chain inet seg SEG-ICC-docker0\n"), "{text}");
    assert!(text.contains("iifname \"docker0\" oifname \"docker0\" drop"), "{text}");
    assert_eq!(render(&Default::default(), Some(&two)), "delete table inet seg\n");
    assert_eq!(render(&Default::default(), None), "");
}

/// Nested keys (a host inside an allowed or guarded prefix) become disjoint
/// ranges with the longest prefix's decision.
#[test]
fn nested_prefixes_become_disjoint_ranges() {
    let spans = vec![((0u128, 9), Outcome::Drop), ((10, 10), Outcome::Return), ((11, 20), Outcome::Drop)];
    assert_eq!(merge(spans.clone()), spans);
    let same = vec![((0u128, 9), Outcome::Drop), ((10, 20), Outcome::Drop)];
    assert_eq!(merge(same), vec![((0, 20), Outcome::Drop)]);
    let (inside, outside) = split(&[(0, 100)], (10, 20));
    assert_eq!((inside, outside), (vec![(10, 20)], vec![(0, 9), (21, 100)]));
    assert_eq!(span(&"10.0.0.0/8".parse().unwrap()), (0x0a00_0000, 0x0aff_ffff));
    assert_eq!(span(&"::/0".parse().unwrap()), (0, u128::MAX));
}

/// The nft table decides as the iptables one does, for every packet of
/// random inventories (the walker reads the iptables table; this reads the
/// maps back the way the kernel looks them up).
#[test]
fn large_trees_flatten_to_one_map() {
    let mut inv = crate::firewall::Inventory::default();
    inv.networks.push(crate::firewall::Network {
        name: "n".into(),
        bridge: Some("br-1".into()),
        subnets: vec!["10.1.0.0/16".parse().unwrap()],
        compose_project: Some("p".into()),
        compose_network: Some("default".into()),
    });
    for i in 0..200u32 {
        let ip = std::net::Ipv4Addr::from(0x0a01_0000 + 2 + i);
        inv.containers.push(crate::firewall::Container {
            id: format!("c{i}"),
            service: Some(seg_common::api::Identity::new(Some("p"), if i % 2 == 0 { "a" } else { "b" })),
            endpoints: vec![crate::firewall::NetEndpoint { network: "n".into(), ipv4: Some(ip), ipv6: None }],
            published: vec![],
        });
    }
    let text = "version: 1\nproject: p\nservices:\n  a: { ingress: [{ from: [b], ports: [80/tcp] }] }\n  b: { ingress: none }\n";
    let policies = vec![policy::parse_policy(text, "p.yaml").unwrap()];
    let rs = compile(&policies, &inv);
    assert!(rs.v4.chains.len() > 20, "the iptables side is a tree");
    let nft = to_nft(&rs).unwrap();
    let ingress = &nft.sets["SEG-INGRESS"].elems;
    // 200 containers, each its own element, and the rest of the subnet dropped.
    assert_eq!(ingress.values().filter(|v| v.as_deref().is_some_and(|v| v.starts_with("jump"))).count(), 200);
    assert!(nft.chains.keys().all(|c| !c.starts_with("SEG-I-") && !c.starts_with("SEG-E-")));
    let a = nft.chains.keys().find(|c| c.starts_with("SEG-IN-p-a")).unwrap();
    assert_eq!(nft.sets[a].elems.len(), 100, "b's 100 addresses, one element each");
}
