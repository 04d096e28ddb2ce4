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
    // The only container of a service stops, and starts again (a restart):
    // its chains stay, and so do the world chain's lookups of web's replicas.
    for gone in ["db1", "web1", "web2", "api1"] {
        let mut without = inv.clone();
        without.containers.retain(|c| c.id != gone);
        let stopped = to_nft(&compile(&policies, &without)).unwrap();
        for text in [render(&stopped, Some(&before)), render(&before, Some(&stopped))] {
            assert!(!text.is_empty() && !text.contains("chain") && !text.contains("rule"), "{gone}:\n{text}");
        }
    }
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
    assert_eq!(ingress.values().filter(|v| v.as_deref().is_some_and(|v| v.starts_with("goto"))).count(), 200);
    assert!(nft.chains.keys().all(|c| !c.starts_with("SEG-I-") && !c.starts_with("SEG-E-")));
    let a = nft.chains.keys().find(|c| c.starts_with("SEG-IN-p-a")).unwrap();
    assert_eq!(nft.sets[a].elems.len(), 100, "b's 100 addresses, one element each");
}

/// A rule the translation does not know is an error naming it, never a
/// rule silently left out.
#[test]
fn an_unknown_rule_is_refused_by_name() {
    let mut rs = Ruleset::default();
    let rules = |r: &[&str]| std::sync::Arc::new(r.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    rs.v4.chains.insert(TOP.into(), rules(&["-j SEG-X"]));
    rs.v4.chains.insert("SEG-X".into(), rules(&["-m recent --set -j DROP"]));
    let err = to_nft(&rs).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot express `-m recent --set -j DROP` of chain SEG-X in nftables: unknown word `-m recent`"
    );
}

/// What `nft -j list table inet seg` prints reads back as the table that
/// was written (prefixes, ranges, concatenations, verdicts, tags, hooks).
#[test]
fn nft_json_reads_back() {
    let json = serde_json::json!({"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"table": {"family": "inet", "name": "seg"}},
        {"chain": {"name": "SEG-FORWARD", "type": "filter", "hook": "forward", "prio": -10, "policy": "accept"}},
        {"chain": {"name": "SEG-P-1"}},
        {"map": {"name": "SEG-INGRESS", "type": "ipv4_addr", "map": "verdict", "flags": ["interval"], "elem": [
            [{"range": ["10.0.0.0", "10.0.0.4"]}, {"drop": null}],
            ["10.0.0.5", {"jump": {"target": "SEG-IN-a"}}],
            [{"prefix": {"addr": "10.1.0.0", "len": 16}}, {"drop": null}]]}},
        {"set": {"name": "SEG-W-a-tcp", "type": ["ipv4_addr", "inet_service", "inet_service"],
            "elem": [{"concat": ["10.0.0.5", 80, 8080]}]}},
        {"rule": {"chain": "SEG-FORWARD", "comment": "seg:1", "expr": []}},
        {"rule": {"chain": "SEG-P-1", "expr": []}}
    ]});
    let t = super::super::nftables::from_json(&json);
    assert_eq!(t.chains["SEG-FORWARD"].hook.as_deref(), Some(HOOK));
    assert_eq!(t.chains["SEG-FORWARD"].tags, ["seg:1"]);
    assert_eq!(t.chains["SEG-P-1"].tags, ["(untagged)"], "a rule seg did not write never matches");
    let ingress: Vec<String> =
        t.sets["SEG-INGRESS"].elems.iter().map(|(e, v)| format!("{e} : {}", v.as_deref().unwrap())).collect();
    assert_eq!(
        ingress,
        ["10.0.0.0-10.0.0.4 : drop", "10.0.0.5 : jump SEG-IN-a", "10.1.0.0-10.1.255.255 : drop"]
    );
    let w: Vec<String> = t.sets["SEG-W-a-tcp"].elems.keys().map(ToString::to_string).collect();
    assert_eq!(w, ["10.0.0.5 . 80 . 8080"]);
}
