//! The nftables backend's netlink path against the real kernel, in
//! throwaway network namespaces: a container event's element changes go as
//! one netlink batch (no `nft` process), the kernel then holds exactly what
//! `nft -f` would have written, and a batch the kernel refuses changes
//! nothing at all.
//!
//! Needs root, `ip` and `nft`; touches no host rule.

// This test uses part of the shared support.
#[allow(dead_code)]
#[path = "firewall_netns_support/mod.rs"]
mod firewall_netns_support;

use firewall_netns_support::Topology;
use seg_common::api::Identity;
use segctl::firewall::nft_link::NftLink;
use segctl::firewall::nft_model::{element_delta, render_full, Chain, Elem, NftTable, Part, Set};
use segctl::firewall::nft_render::to_nft;
use segctl::firewall::{apply, compile, Firewall, Inventory, NftablesFirewall, Ruleset};
use segctl::policy::{self, Policy};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;

fn shop() -> Policy {
    let text = "version: 1\nproject: shop\nservices:\n  web: { ingress: any }\n  api: { ingress: [{ from: [web], ports: [9000/tcp] }] }\n  db: { ingress: [{ from: [api], ports: [5432/tcp] }], egress: none }\n";
    policy::parse_policy(text, "shop.yaml").unwrap()
}

/// The shop with `other` as a replica of `service`, or without `other`.
fn shop_with_other(topo: &Topology, service: Option<&str>) -> Inventory {
    let mut inv = topo.inventory();
    match service {
        Some(s) => inv.containers[3].service = Some(Identity::new(Some("shop"), s)),
        None => drop(inv.containers.pop()),
    }
    inv
}

/// The kernel holds every set element and every chain's rules of `desired`.
fn assert_live_is(topo: &Topology, desired: &Ruleset) {
    let live = topo.nft().live().unwrap().expect("seg's table exists");
    let want = to_nft(desired).unwrap();
    assert_eq!(live.sets, want.sets, "nft -j reads back every set element");
    let tags = |t: &segctl::firewall::nft_model::NftTable| {
        t.chains.iter().map(|(n, c)| (n.clone(), c.hook.clone(), c.tags.clone())).collect::<Vec<_>>()
    };
    assert_eq!(tags(&live), tags(&want));
}

/// A container that starts, changes service (same address, other verdicts)
/// and stops: three events, three batches, each read back exactly, with
/// real packets following (IPv4 and IPv6 elements alike).
#[test]
fn element_changes_go_as_one_netlink_batch_and_read_back_exactly() {
    let topo = Topology::new("nl");
    let mut fw = topo.nft();
    let steps = [None, Some("web"), Some("api"), None];
    let rulesets: Vec<Ruleset> =
        steps.iter().map(|s| compile(&[shop()], &shop_with_other(&topo, *s))).collect();
    apply(&mut fw, &rulesets[0]).unwrap();
    let first_batch = fw.netlink_batches();
    assert!(!topo.connects("other", "api", 9000), "unknown addresses are dropped");
    for (i, pair) in rulesets.windows(2).enumerate() {
        let report = fw.update(&pair[0], &pair[1]).unwrap();
        assert!(report.v4.contains("element"), "step {i} changes elements:\n{}", report.v4);
        assert_eq!(fw.netlink_batches(), first_batch + 1 + i as u64, "step {i} went as a netlink batch");
        assert_live_is(&topo, &pair[1]);
        assert!(!apply(&mut fw, &pair[1]).unwrap().changed(), "step {i}: nothing left to write");
        let as_web = steps[i + 1] == Some("web");
        assert_eq!(topo.connects("other", "api", 9000), as_web, "step {i}: other reaches api only as web");
        assert_eq!(topo.connects("other", "db", 5432), steps[i + 1] == Some("api"), "step {i}");
    }
}

/// A set from which going `from` → `to` deletes `other`'s address
/// (10.203.77.13), and that element as nft spells it.
fn an_element_of_other_deleted(from: &Ruleset, to: &Ruleset) -> (String, String) {
    let other: IpAddr = "10.203.77.13".parse().unwrap();
    let (from, to) = (to_nft(from).unwrap(), to_nft(to).unwrap());
    let delta = element_delta(&to, &from).expect("elements only");
    let d = delta
        .iter()
        .find(|d| d.gone.iter().any(|e| e.0 == [Part::Addrs(other, other)]))
        .expect("the change deletes an element of other's");
    (d.name.to_string(), other.to_string())
}

/// Someone removed one of seg's elements behind its back: the next batch
/// deletes that element among others, the kernel refuses it, and none of
/// the batch's other changes happened. The error says so; a full sync
/// repairs it.
#[test]
fn a_refused_batch_changes_nothing_and_says_why() {
    let topo = Topology::new("nr");
    let mut fw = topo.nft();
    let (as_web, as_api) = (
        compile(&[shop()], &shop_with_other(&topo, Some("web"))),
        compile(&[shop()], &shop_with_other(&topo, Some("api"))),
    );
    apply(&mut fw, &as_web).unwrap();
    let (set, elem) = an_element_of_other_deleted(&as_web, &as_api);
    topo.in_host(&["nft", "delete", "element", "inet", "seg", &set, &format!("{{ {elem} }}")]);
    let tampered = topo.ruleset();
    let err = fw.update(&as_web, &as_api).unwrap_err().to_string();
    assert!(err.contains("nothing was changed") && err.contains("No such file or directory"), "{err}");
    assert!(err.contains(&format!("delete from set {set}")), "names the message: {err}");
    assert_eq!(topo.ruleset(), tampered, "no message of the refused batch was applied");
    apply(&mut fw, &as_api).unwrap();
    assert_live_is(&topo, &as_api);
    assert!(topo.connects("other", "db", 5432));
}

/// Without netlink (the benchmark's baseline) the same change goes through
/// `nft -f` and ends the same.
#[test]
fn the_nft_only_path_ends_the_same() {
    let topo = Topology::new("no");
    let mut fw: NftablesFirewall = topo.nft().nft_only();
    let (before, after) = (
        compile(&[shop()], &shop_with_other(&topo, None)),
        compile(&[shop()], &shop_with_other(&topo, Some("web"))),
    );
    apply(&mut fw, &before).unwrap();
    fw.update(&before, &after).unwrap();
    assert_eq!(fw.netlink_batches(), 0);
    assert_live_is(&topo, &after);
}

/// Not a test: the listener/connector the tests run inside namespaces.
#[test]
#[ignore]
fn probe_helper() {
    firewall_netns_support::probe_helper();
}

/// A namespace of its own, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("segt-{}-{tag}", std::process::id());
        firewall_netns_support::sh(&["ip", "netns", "add", &name]);
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// An interval verdict map of each family with these ranges.
fn interval_table(v4: &[(&str, &str, &str)], v6: &[(&str, &str, &str)]) -> NftTable {
    let map = |key: &str, ranges: &[(&str, &str, &str)]| {
        let elems: BTreeMap<Elem, Option<String>> = ranges
            .iter()
            .map(|(a, b, v)| {
                (Elem(vec![Part::Addrs(a.parse().unwrap(), b.parse().unwrap())]), Some(v.to_string()))
            })
            .collect();
        Arc::new(Set { key: vec![key.to_string()], verdicts: true, interval: true, elems })
    };
    NftTable {
        chains: BTreeMap::from([("C".to_string(), Arc::new(Chain::new(None, vec![])))]),
        sets: BTreeMap::from([
            ("nets4".to_string(), map("ipv4_addr", v4)),
            ("nets6".to_string(), map("ipv6_addr", v6)),
        ]),
    }
}

/// Ranges of interval maps, changed by netlink batches: split into
/// adjacent ranges, merged back, verdicts changed, a range that ends at the
/// family's last address (no end element) — each read back from the kernel
/// exactly as wanted.
#[test]
fn interval_map_ranges_go_as_netlink_batches_and_read_back_exactly() {
    let ns = Netns::new("nlint");
    let steps = [
        interval_table(
            &[("10.1.0.0", "10.1.255.255", "drop"), ("10.3.0.0", "10.3.255.255", "jump C")],
            &[("fd00::", "fd00::ffff", "drop")],
        ),
        interval_table(
            &[
                ("10.1.0.0", "10.1.127.255", "drop"),
                ("10.1.128.0", "10.1.255.255", "return"),
                ("10.3.0.0", "10.3.255.255", "drop"),
                ("128.0.0.0", "255.255.255.255", "drop"),
            ],
            &[
                ("fd00::", "fd00::ffff", "jump C"),
                ("ff00::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "drop"),
            ],
        ),
        interval_table(&[("0.0.0.0", "10.0.255.255", "drop")], &[]),
    ];
    let script = render_full(&steps[0]);
    let ok = Command::new("sh")
        .args(["-c", &format!("printf '%s' '{script}' | ip netns exec {} nft -f -", ns.0)])
        .status()
        .unwrap();
    assert!(ok.success(), "{script}");
    let mut link = NftLink::open(Some(format!("/run/netns/{}", ns.0).as_ref())).unwrap();
    let read = || NftablesFirewall::in_netns(&ns.0).live().unwrap().expect("the table");
    assert_eq!(read().sets, steps[0].sets);
    for pair in [(0, 1), (1, 2), (2, 0), (0, 2), (2, 1)] {
        let (from, to) = (&steps[pair.0], &steps[pair.1]);
        let delta = element_delta(to, from).expect("elements only");
        link.commit(&delta).unwrap_or_else(|e| panic!("{pair:?}: {e}"));
        assert_eq!(read().sets, to.sets, "{pair:?}: the kernel holds the wanted ranges");
    }
}
