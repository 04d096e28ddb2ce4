//! The firewall (compile, then one transaction) against the real kernel, with real packets over
//! IPv4 and IPv6, inside throwaway network namespaces (never the host's own rules). Every
//! scenario runs on both backends: `matrix!` makes `<scenario>::iptables` and
//! `<scenario>::nftables` of one function taking the backend.
//!
//! Policy: api accepts web on 9000/tcp; db accepts api on 5432/tcp, no egress.
//! Topology: `firewall_netns_support`. Needs root and nft; fails (never skips) without them.

mod firewall_netns_support;

use firewall_netns_support::{Kind, Topology};
use seg_common::api::Identity;
use segctl::firewall::nft_render::to_nft;
use segctl::firewall::{apply, compile, remove_all, Firewall, Ruleset};
use segctl::policy::{self, Family, Policy};

macro_rules! matrix {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[test]
            fn iptables() {
                super::$scenario(super::Kind::Iptables)
            }
            #[test]
            fn nftables() {
                super::$scenario(super::Kind::Nftables)
            }
        }
    )*};
}

matrix!(
    real_packets_follow_the_policy,
    reapply_is_a_no_op_and_rules_are_byte_identical,
    removing_a_policy_removes_exactly_its_rules,
    tampering_is_detected_and_restored,
    a_malformed_policy_changes_nothing,
    a_started_container_is_covered_by_elements_only,
    published_ports_are_filtered_on_the_original_destination,
);

/// Not a test: the listener/connector the tests run inside namespaces.
#[test]
#[ignore]
fn probe_helper() {
    firewall_netns_support::probe_helper();
}

fn shop() -> Policy {
    let text = "version: 1\nproject: shop\nservices:\n  web: { ingress: any }\n  api: { ingress: [{ from: [web], ports: [9000/tcp] }] }\n  db: { ingress: [{ from: [api], ports: [5432/tcp] }], egress: none }\n";
    policy::parse_policy(text, "shop.yaml").unwrap()
}

/// The backend holds exactly `desired` (iptables: the chains read back;
/// nftables: chains, rule tags, sets and elements read back).
fn assert_live_is(topo: &Topology, fw: &mut dyn Firewall, kind: Kind, desired: &Ruleset) {
    match kind {
        Kind::Iptables => {
            assert_eq!(
                fw.current(Family::V4).unwrap().chains,
                desired.v4.chains,
                "iptables-save reads back v4"
            );
            assert_eq!(
                fw.current(Family::V6).unwrap().chains,
                desired.v6.chains,
                "ip6tables-save reads back v6"
            );
        }
        Kind::Nftables => {
            let live = topo.nft().live().unwrap().expect("seg's table exists");
            let want = to_nft(desired).unwrap();
            assert_eq!(live.sets, want.sets, "nft -j reads back every set element");
            let tags = |t: &segctl::firewall::nft_model::NftTable| {
                t.chains.iter().map(|(n, c)| (n.clone(), c.hook.clone(), c.tags.clone())).collect::<Vec<_>>()
            };
            assert_eq!(tags(&live), tags(&want), "nft -j reads back every chain and rule");
        }
    }
}

fn real_packets_follow_the_policy(kind: Kind) {
    let topo = Topology::new(&format!("pk{}", kind as u8));
    let inv = topo.inventory();
    assert!(topo.connects("web", "db", 5432), "before any policy everything flows");
    let desired = compile(&[shop()], &inv);
    let report = apply(topo.fw(kind).as_mut(), &desired).unwrap();
    assert!(report.changed());
    assert!(topo.connects("web", "api", 9000), "web → api:9000 allowed");
    assert!(topo.connects("api", "db", 5432), "api → db:5432 allowed");
    assert!(!topo.connects("web", "db", 5432), "web → db denied");
    assert!(!topo.connects("api", "db", 5433), "api → db on another port denied");
    assert!(!topo.connects("other", "api", 9000), "unlisted container denied");
    assert!(!topo.connects("db", "other", 80), "db has no egress");
    assert!(topo.connects("other", "web", 80), "web has `ingress: any`");
}

fn reapply_is_a_no_op_and_rules_are_byte_identical(kind: Kind) {
    let topo = Topology::new(&format!("re{}", kind as u8));
    let desired = compile(&[shop()], &topo.inventory());
    let mut fw = topo.fw(kind);
    apply(fw.as_mut(), &desired).unwrap();
    let before = topo.ruleset();
    let again = apply(fw.as_mut(), &desired).unwrap();
    assert!(!again.changed(), "second apply sent: {again:?}");
    assert_eq!(topo.ruleset(), before);
    assert_live_is(&topo, fw.as_mut(), kind, &desired);
}

fn removing_a_policy_removes_exactly_its_rules(kind: Kind) {
    let topo = Topology::new(&format!("rm{}", kind as u8));
    let mut inv = topo.inventory();
    // A second project's policy on the same host ("other" becomes ops/tools).
    inv.containers[3].service = Some(Identity::new(Some("ops"), "tools"));
    let ops =
        policy::parse_policy("version: 1\nproject: ops\nservices:\n  tools: { ingress: none }\n", "ops.yaml")
            .unwrap();
    let mut fw = topo.fw(kind);
    apply(fw.as_mut(), &compile(&[shop(), ops.clone()], &inv)).unwrap();
    assert!(!topo.connects("web", "other", 22));
    let shop_only = compile(&[shop()], &inv);
    let report = apply(fw.as_mut(), &shop_only).unwrap();
    match kind {
        Kind::Iptables => {
            assert!(report.v4.contains("-X SEG-IN-ops-tools"), "{}", report.v4);
            assert!(!report.v4.contains(":SEG-IN-shop"), "shop's chains are not rewritten:\n{}", report.v4);
        }
        // A chain less: the table is replaced whole, in the one transaction.
        Kind::Nftables => assert!(report.v4.starts_with("add table inet seg\ndelete table inet seg\n")),
    }
    assert_live_is(&topo, fw.as_mut(), kind, &shop_only);
    assert!(!topo.ruleset().contains("SEG-IN-ops-tools"));
    assert!(topo.connects("web", "other", 22));
    assert!(!topo.connects("web", "db", 5432));
    apply(fw.as_mut(), &compile(&[], &inv)).unwrap();
    let left = topo.ruleset();
    assert!(!left.contains("SEG-") && !left.contains("inet seg"), "no policy, no seg rules:\n{left}");
    assert!(topo.connects("web", "db", 5432));
}

fn tampering_is_detected_and_restored(kind: Kind) {
    let topo = Topology::new(&format!("tm{}", kind as u8));
    let desired = compile(&[shop()], &topo.inventory());
    let mut fw = topo.fw(kind);
    apply(fw.as_mut(), &desired).unwrap();
    let good = topo.ruleset();
    let chain = desired.v4.chains.keys().find(|c| c.starts_with("SEG-IN-shop-db")).unwrap();
    match kind {
        Kind::Iptables => {
            for tool in ["iptables", "ip6tables"] {
                topo.in_host(&[tool, "-F", chain]);
                topo.in_host(&[tool, "-D", "DOCKER-USER", "-j", "SEG-FORWARD"]);
            }
        }
        Kind::Nftables => {
            // The db chain emptied, and the hook gone.
            topo.in_host(&["nft", "flush", "chain", "inet", "seg", chain]);
            topo.in_host(&["nft", "flush", "chain", "inet", "seg", "SEG-FORWARD"]);
            topo.in_host(&["nft", "delete", "chain", "inet", "seg", "SEG-FORWARD"]);
        }
    }
    assert!(topo.connects("web", "db", 5432), "tampered: open");
    let report = apply(fw.as_mut(), &desired).unwrap();
    match kind {
        Kind::Iptables => assert!(
            report.v4.contains(&format!(":{chain} "))
                && report.v4.contains("-I DOCKER-USER 1 -j SEG-FORWARD")
        ),
        Kind::Nftables => assert!(report.v4.contains("add chain inet seg SEG-FORWARD {"), "{}", report.v4),
    }
    assert_eq!(topo.ruleset(), good);
    assert!(!topo.connects("web", "db", 5432), "restored: closed");
    if kind == Kind::Nftables {
        // `nft flush table`: every rule and element gone at once.
        topo.in_host(&["nft", "flush", "table", "inet", "seg"]);
        assert!(topo.connects("web", "db", 5432), "flushed: open");
        apply(fw.as_mut(), &desired).unwrap();
        assert_eq!(topo.ruleset(), good);
        assert!(!topo.connects("web", "db", 5432), "restored: closed");
    }
}

fn a_malformed_policy_changes_nothing(kind: Kind) {
    let topo = Topology::new(&format!("bad{}", kind as u8));
    let mut fw = topo.fw(kind);
    apply(fw.as_mut(), &compile(&[shop()], &topo.inventory())).unwrap();
    let before = topo.ruleset();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop.yaml");
    std::fs::write(&file, "version: 1\nproject: shop\nservices:\n  db: { ingress: [{ from: [apx] }] }\n")
        .unwrap();
    let err = policy::lint(&file).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("shop.yaml:4:28: unknown service `apx` in services.db.ingress[0].from[0] (known: db)"),
        "{err}"
    );
    // The reconcile step: only a policy set that reads cleanly is compiled.
    let policies: Result<Vec<Policy>, _> = [file].iter().map(|f| policy::load(f)).collect();
    if let Ok(policies) = policies {
        apply(fw.as_mut(), &compile(&policies, &topo.inventory())).unwrap();
    }
    assert_eq!(topo.ruleset(), before);
    // A transaction the kernel refuses leaves everything as it was too,
    // also the part of it that came before the refused line.
    let broken = match kind {
        Kind::Iptables => "*filter\n:SEG-FORWARD - [0:0]\n-A SEG-FORWARD -j SEG-NOWHERE\nCOMMIT\n",
        Kind::Nftables => {
            "flush chain inet seg SEG-FORWARD\nadd rule inet seg SEG-FORWARD jump SEG-NOWHERE\n"
        }
    };
    let err = fw.restore(Family::V4, broken).unwrap_err().to_string();
    assert!(err.contains("nothing was changed"), "{err}");
    if kind == Kind::Nftables {
        assert!(err.contains(":2:") && err.contains("jump SEG-NOWHERE"), "nft names the line: {err}");
    }
    assert_eq!(topo.ruleset(), before);
}

/// `other` starts as a second web replica: until the inventory knows it,
/// its address is dropped (fail closed); then it is covered — on nftables by
/// map elements alone, no chain rewritten.
fn a_started_container_is_covered_by_elements_only(kind: Kind) {
    let topo = Topology::new(&format!("st{}", kind as u8));
    let mut inv = topo.inventory();
    inv.containers[3].service = Some(Identity::new(Some("shop"), "web"));
    let started = inv.clone();
    inv.containers.pop();
    let mut fw = topo.fw(kind);
    let first = compile(&[shop()], &inv);
    apply(fw.as_mut(), &first).unwrap();
    assert!(!topo.connects("other", "api", 9000), "an address seg does not know is dropped");
    let second = compile(&[shop()], &started);
    let report = fw.update(&first, &second).unwrap();
    if kind == Kind::Nftables {
        let text = &report.v4;
        assert!(text.lines().all(|l| !l.contains("chain") && !l.contains("rule")), "elements only:\n{text}");
        assert!(text.contains("add element inet seg SEG-INGRESS"), "{text}");
    }
    assert!(topo.connects("other", "api", 9000), "the new replica is web");
    assert!(!topo.connects("other", "db", 5432));
    assert!(!apply(fw.as_mut(), &second).unwrap().changed(), "the kernel holds what was presumed");
    assert_live_is(&topo, fw.as_mut(), kind, &second);
}

/// web is reached from the world only through its published port 8080
/// (DNAT to 80), and over IPv4 also through 8082 bound to the host's
/// address; 8081 (DNAT to 81) is not published, and no container may reach
/// web at all (the world is not a container).
fn published_ports_are_filtered_on_the_original_destination(kind: Kind) {
    use segctl::firewall::PublishedPort;
    let mut topo = Topology::new(&format!("pub{}", kind as u8));
    topo.add_world();
    let mut inv = topo.inventory();
    let tcp = segctl::policy::Proto::Tcp;
    let host_ip = Some("10.203.78.1".parse().unwrap());
    inv.containers[0].published = vec![
        PublishedPort { proto: tcp, container_port: 80, host_ip: None, host_port: 8080 },
        PublishedPort { proto: tcp, container_port: 81, host_ip: None, host_port: 8081 },
    ];
    let text =
        "version: 1\nproject: shop\nservices:\n  web: { ingress: [{ from: world, ports: [80/tcp] }] }\n";
    let policies = [policy::parse_policy(text, "shop.yaml").unwrap()];
    assert_eq!(topo.world_reaches(8081, 81), (true, true), "before any policy everything flows");
    let desired = compile(&policies, &inv);
    apply(topo.fw(kind).as_mut(), &desired).unwrap();
    assert!(!apply(topo.fw(kind).as_mut(), &desired).unwrap().changed(), "the published-port sets read back");
    assert_eq!(topo.world_reaches(8080, 80), (true, true), "published and allowed");
    assert_eq!(topo.world_reaches(8081, 81), (false, false), "port 81 is not allowed");
    assert!(!topo.connects("api", "web", 80), "containers are not the world");
    // Bound to the host's IPv4 address: the original destination counts too.
    inv.containers[0].published[0].host_ip = host_ip;
    let bound = compile(&policies, &inv);
    let report = apply(topo.fw(kind).as_mut(), &bound).unwrap();
    if kind == Kind::Nftables {
        assert!(report.v4.lines().all(|l| !l.contains("rule")), "elements only:\n{}", report.v4);
    }
    assert!(!apply(topo.fw(kind).as_mut(), &bound).unwrap().changed());
    assert_eq!(topo.world_reaches(8080, 80), (true, false), "IPv4 only: published on 10.203.78.1");
}

/// Switching backends leaves nothing of the other behind, both ways.
#[test]
fn switching_backends_leaves_no_stale_rules() {
    let topo = Topology::new("sw");
    let desired = compile(&[shop()], &topo.inventory());
    let pristine = topo.ruleset();
    let (mut ipt, mut nft) = (topo.fw(Kind::Iptables), topo.fw(Kind::Nftables));
    apply(ipt.as_mut(), &desired).unwrap();
    let with_iptables = topo.ruleset();
    for _ in 0..2 {
        remove_all(ipt.as_mut()).unwrap();
        apply(nft.as_mut(), &desired).unwrap();
        let text = topo.ruleset();
        // iptables-nft's tables (`ip filter`, `ip6 filter`) hold nothing of seg's.
        let others =
            text.split("\ntable ").filter(|t| !t.trim_start_matches("table ").starts_with("inet seg"));
        let iptables_left = others.into_iter().any(|t| t.contains("SEG-"));
        assert!(text.contains("table inet seg") && !iptables_left, "{text}");
        assert!(!topo.connects("web", "db", 5432));
        remove_all(nft.as_mut()).unwrap();
        assert_eq!(topo.ruleset(), pristine, "nothing of nftables' left");
        apply(ipt.as_mut(), &desired).unwrap();
        assert_eq!(topo.ruleset(), with_iptables);
        assert!(!topo.connects("web", "db", 5432));
    }
}

/// The controller's way: the writer of the chosen backend removes the other
/// backend's seg rules once its own full update is in place.
#[test]
fn the_writer_retires_the_other_backend_after_its_own_rules_are_in() {
    use segctl::segregation::kernel::RuleWriter;
    let topo = Topology::new("rt");
    let desired = compile(&[shop()], &topo.inventory());
    apply(topo.fw(Kind::Iptables).as_mut(), &desired).unwrap();
    let mut writer = RuleWriter::new(Box::new(topo.nft()));
    writer.retire(Box::new(segctl::firewall::IptablesFirewall::in_netns(&topo.host)));
    assert!(writer.full(&desired).unwrap().changed());
    let text = topo.ruleset();
    assert!(text.contains("table inet seg") && !text.contains("jump SEG-FORWARD"), "{text}");
    assert!(!topo.connects("web", "db", 5432), "enforced by nftables alone");
    assert!(topo.connects("api", "db", 5432));
    let fast = writer.fast(&desired).unwrap();
    assert!(!fast.changed() && !fast.full, "nothing left to do: {fast:?}");
}

/// The `auto` probe: the kernel takes seg's kind of table, and the probe
/// leaves nothing behind.
#[test]
fn the_nftables_probe_leaves_nothing() {
    let topo = Topology::new("pr");
    let before = topo.ruleset();
    topo.nft().probe().unwrap();
    assert_eq!(topo.ruleset(), before);
}
