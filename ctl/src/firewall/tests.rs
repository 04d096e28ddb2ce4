use super::fixture::{assert_golden, golden_dir, inventory};
use super::sim::{Packet, Verdict, Walker};
use super::*;
use crate::policy::{self, parse_policy, Policy, Proto};
use seg_common::api::Identity;
use std::net::IpAddr;
use std::path::Path;

fn load_case(dir: &Path, inv_file: &str) -> (Vec<Policy>, Inventory) {
    let policy = policy::load(&dir.join("policy.yaml")).expect("fixture policy is valid");
    let inv = inventory(&std::fs::read_to_string(dir.join(inv_file)).expect("inventory"));
    (vec![policy], inv)
}

#[test]
fn golden_renderings() {
    for case in ["shop", "icc-v6", "cidrs"] {
        let dir = golden_dir().join(case);
        let (policies, inv) = load_case(&dir, "inventory.yaml");
        let rs = compile(&policies, &inv);
        assert_golden(&dir.join("expected.v4.rules"), &rs.render_iptables_restore(None));
        assert_golden(&dir.join("expected.v6.rules"), &rs.render_ip6tables_restore(None));
    }
}

#[test]
fn golden_incremental_change_rewrites_only_touched_chains() {
    let dir = golden_dir().join("shop");
    let (policies, inv) = load_case(&dir, "inventory.yaml");
    let (_, next_inv) = load_case(&dir, "next-inventory.yaml");
    let mut fw = FakeFirewall::new();
    apply(&mut fw, &compile(&policies, &inv)).unwrap();
    let live = Ruleset { v4: fw.current(crate::policy::Family::V4).unwrap(), v6: Table::default() };
    let text = compile(&policies, &next_inv).render_iptables_restore(Some(&live));
    assert_golden(&dir.join("expected.next.v4.rules"), &text);
    assert!(!text.contains(":SEG-P-"), "port chains did not change:\n{text}");
    assert!(!text.contains(":SEG-IN-shop-db"), "db's chain did not change:\n{text}");
}

#[test]
fn malformed_policies_are_refused_with_location() {
    let dir = golden_dir().join("bad-policies");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    assert!(files.len() >= 20);
    for file in files {
        let rel = Path::new("bad-policies").join(file.file_name().unwrap());
        let text = std::fs::read_to_string(&file).unwrap();
        let err = policy::parse_policy(&text, &rel.display().to_string())
            .expect_err(&format!("{} must be refused", file.display()));
        let shown = format!("{err}\n");
        assert_golden(&file.with_extension("err"), &shown);
        let located = matches!(err, policy::PolicyError::Invalid { .. });
        assert!(located || file.ends_with("empty.yaml"), "{shown} has no line/column");
    }
}

#[test]
fn second_apply_is_a_no_op_and_live_rules_equal_the_compiled_ones() {
    let (policies, inv) = load_case(&golden_dir().join("icc-v6"), "inventory.yaml");
    let desired = compile(&policies, &inv);
    let mut fw = FakeFirewall::new();
    let first = apply(&mut fw, &desired).unwrap();
    assert!(!first.v4.is_empty() && !first.v6.is_empty());
    assert_eq!(apply(&mut fw, &desired).unwrap(), ApplyReport::default());
    for family in [crate::policy::Family::V4, crate::policy::Family::V6] {
        let live = fw.current(family).unwrap();
        assert_eq!(live.chains, desired.table(family).chains);
        assert_eq!(live.hooks.unwrap().docker_user.unwrap()[0], "-j SEG-FORWARD");
    }
}

#[test]
fn tampering_is_repaired_by_the_next_apply() {
    use crate::policy::Family::V4;
    let (policies, inv) = load_case(&golden_dir().join("shop"), "inventory.yaml");
    let desired = compile(&policies, &inv);
    let mut fw = FakeFirewall::new();
    apply(&mut fw, &desired).unwrap();
    let chain = desired.v4.chains.keys().find(|c| c.starts_with("SEG-IN-shop-db")).unwrap().clone();
    fw.chains_mut(V4).get_mut(&chain).unwrap().clear();
    let r = apply(&mut fw, &desired).unwrap();
    assert!(r.v4.contains(&format!(":{chain} - [0:0]")) && r.v4.lines().count() < 8, "{}", r.v4);
    // The jump deleted, then moved below another rule, then duplicated.
    fw.chains_mut(V4).get_mut("DOCKER-USER").unwrap().retain(|r| r != "-j SEG-FORWARD");
    assert!(apply(&mut fw, &desired).unwrap().v4.contains("-I DOCKER-USER 1 -j SEG-FORWARD"));
    fw.chains_mut(V4).get_mut("DOCKER-USER").unwrap().insert(0, "-s 1.2.3.4/32 -j DROP".into());
    apply(&mut fw, &desired).unwrap();
    fw.chains_mut(V4).get_mut("DOCKER-USER").unwrap().push("-j SEG-FORWARD".into());
    apply(&mut fw, &desired).unwrap();
    let user = &fw.chains(V4)["DOCKER-USER"];
    assert_eq!(user, &["-j SEG-FORWARD", "-s 1.2.3.4/32 -j DROP", "-j RETURN"]);
    // Docker's own FORWARD → DOCKER-USER jump lost (libnetwork #2631).
    fw.chains_mut(V4).get_mut("FORWARD").unwrap().remove(0);
    assert!(apply(&mut fw, &desired).unwrap().v4.contains("-I FORWARD 1 -j DOCKER-USER"));
    assert_eq!(fw.current(V4).unwrap().chains, desired.v4.chains);
}

#[test]
fn removing_a_policy_removes_exactly_its_chains() {
    use crate::policy::Family::V4;
    let (mut policies, inv) = load_case(&golden_dir().join("shop"), "inventory.yaml");
    let (ops, ops_inv) = load_case(&golden_dir().join("cidrs"), "inventory.yaml");
    policies.extend(ops);
    let mut both = inv.clone();
    both.containers.extend(ops_inv.containers);
    both.networks.extend(ops_inv.networks);
    let mut fw = FakeFirewall::new();
    apply(&mut fw, &compile(&policies, &both)).unwrap();
    let ops_chains: Vec<String> = fw.chains(V4).keys().filter(|c| c.contains("-ops-")).cloned().collect();
    assert_eq!(ops_chains.len(), 4, "IN and OUT for admin and tools: {ops_chains:?}");
    let only_shop = compile(&policies[..1], &both);
    let report = apply(&mut fw, &only_shop).unwrap();
    for chain in &ops_chains {
        assert!(report.v4.contains(&format!("-X {chain}")), "{chain} deleted:\n{}", report.v4);
    }
    assert!(
        !report.v4.lines().any(|l| l.contains("-A SEG-IN-shop")),
        "shop chains untouched:\n{}",
        report.v4
    );
    assert_eq!(fw.current(V4).unwrap().chains, only_shop.v4.chains);
    // No policy left: every seg chain and the jump go.
    apply(&mut fw, &compile(&[], &both)).unwrap();
    assert!(fw.chains(V4).keys().all(|c| !c.starts_with("SEG-")));
    assert_eq!(fw.chains(V4)["DOCKER-USER"], ["-j RETURN"]);
}

fn packet(src: IpAddr, dst: IpAddr, proto: Proto, port: u16) -> Packet {
    let bridge = "br-5b0f00000001".to_string();
    Packet {
        src,
        dst,
        proto: Some(proto),
        dport: port,
        in_if: bridge.clone(),
        out_if: bridge,
        established: false,
        dnat: None,
    }
}

#[test]
fn compiled_rules_agree_with_check_for_every_service_pair() {
    let (policies, inv) = load_case(&golden_dir().join("shop"), "inventory.yaml");
    let walker = Walker::new(&compile(&policies, &inv).v4).unwrap();
    let ids: Vec<Identity> = ["web", "api", "db"].iter().map(|s| Identity::new(Some("shop"), s)).collect();
    for from in &ids {
        for to in &ids {
            for port in [8080, 9000, 5432, 22] {
                let want = check(
                    &policies,
                    &FlowEnd::Service(from.clone()),
                    &FlowEnd::Service(to.clone()),
                    Proto::Tcp,
                    port,
                );
                for src in inv.members(from).flat_map(|c| c.endpoints.iter().filter_map(|e| e.ipv4)) {
                    for dst in inv.members(to).flat_map(|c| c.endpoints.iter().filter_map(|e| e.ipv4)) {
                        let (verdict, _) = walker.walk(&packet(src.into(), dst.into(), Proto::Tcp, port));
                        assert_eq!(
                            verdict == Verdict::Pass,
                            want.allowed,
                            "{from} {src} → {to} {dst}:{port}: {want}"
                        );
                    }
                }
            }
        }
    }
    let d = check(
        &policies,
        &FlowEnd::Service(ids[1].clone()),
        &FlowEnd::Service(ids[2].clone()),
        Proto::Tcp,
        5432,
    );
    assert_eq!(
        d.to_string(),
        "allow (shop/policy.yaml: services.db.ingress[0])"
            .replace("shop/", &format!("{}/shop/", golden_dir().display()))
    );
    let d = check(&policies, &FlowEnd::Service(ids[2].clone()), &FlowEnd::World, Proto::Tcp, 443);
    assert!(!d.allowed && d.rule.ends_with("services.db.egress (not listed)"), "{d}");
}

#[test]
fn world_unknown_and_established_traffic() {
    let (policies, inv) = load_case(&golden_dir().join("shop"), "inventory.yaml");
    let walker = Walker::new(&compile(&policies, &inv).v4).unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let mut p = packet(ip("192.0.2.7"), ip("172.20.0.2"), Proto::Tcp, 8080);
    p.in_if = "eth0".into();
    assert_eq!(walker.walk(&p).0, Verdict::Drop, "routed without DNAT");
    p.dnat = Some((ip("198.51.100.1"), 8080));
    assert_eq!(walker.walk(&p).0, Verdict::Pass, "through the published port");
    p.dst = ip("172.20.0.3");
    assert_eq!(walker.walk(&p).0, Verdict::Drop, "web2 publishes 8081 on 127.0.0.1 only");
    p.dnat = Some((ip("127.0.0.1"), 8081));
    assert_eq!(walker.walk(&p).0, Verdict::Pass);
    p.dport = 9999;
    p.dnat = Some((ip("198.51.100.1"), 9999));
    assert_eq!(walker.walk(&p).0, Verdict::Drop, "published but not allowed");
    // A container the inventory does not know yet, on a guarded network.
    let stray = packet(ip("172.20.0.99"), ip("172.17.0.2"), Proto::Tcp, 80);
    assert_eq!(walker.walk(&stray).0, Verdict::Drop);
    let mut reply = packet(ip("172.21.0.3"), ip("172.20.0.4"), Proto::Tcp, 40000);
    reply.established = true;
    assert_eq!(walker.walk(&reply), (Verdict::Pass, 1), "replies return at the first rule");
    let unrelated = packet(ip("172.17.0.2"), ip("8.8.8.8"), Proto::Udp, 53);
    assert_eq!(walker.walk(&unrelated).0, Verdict::Pass);
}

#[test]
fn worst_case_path_grows_logarithmically() {
    let mut worst = Vec::new();
    for projects in [1, 10, 100] {
        let (policies, inv) = synth::scenario(projects, 1);
        let table = compile(&policies, &inv).v4;
        assert!(table.max_depth() <= 10, "nesting {} at {projects} projects", table.max_depth());
        worst.push(synth_worst_case(&Walker::new(&table).unwrap(), projects));
    }
    // ×10 services adds a level or so of the trees, never ×10 rules.
    let msg = format!("rules traversed at 10/100/1000 services: {worst:?}");
    assert!(worst[2] - worst[1] <= worst[1] - worst[0] && worst[2] <= 60, "{msg}");
}

/// The most rules any packet between synthetic containers (or from the
/// world) traverses: every source × every destination × every allowed port.
pub fn synth_worst_case(walker: &Walker, projects: usize) -> usize {
    let addrs: Vec<IpAddr> = (0..projects)
        .flat_map(|k| (0..synth::SERVICES_PER_PROJECT).map(move |s| synth::address(k, s, 0).into()))
        .collect();
    let step = (addrs.len() / 40).max(1);
    let mut worst = 0;
    for src in addrs.iter().step_by(step).chain(std::iter::once(&"192.0.2.1".parse().unwrap())) {
        for dst in &addrs {
            for (proto, port) in [(Proto::Tcp, 5009), (Proto::Tcp, 9100), (Proto::Udp, 53), (Proto::Tcp, 1)] {
                worst = worst.max(walker.walk(&packet(*src, *dst, proto, port)).1);
            }
        }
    }
    worst
}

// The host's own settings in the compiled rules: ICC off on docker0 (the
// controller's `segctl icc disable`) without any policy, and with one.

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn docker0_inventory() -> Inventory {
    let labelled = |id: &str, addr: &str, svc: Option<&str>| Container {
        id: id.into(),
        service: svc.map(|s| Identity::new(None, s)),
        endpoints: vec![NetEndpoint {
            network: "bridge".into(),
            ipv4: Some(addr.parse().unwrap()),
            ipv6: None,
        }],
        published: vec![],
    };
    Inventory {
        containers: vec![
            labelled("a", "172.17.0.2", None),
            labelled("b", "172.17.0.3", None),
            labelled("vault", "172.17.0.4", Some("vault")),
            labelled("app", "172.17.0.5", Some("app")),
        ],
        networks: vec![Network {
            name: "bridge".into(),
            bridge: Some("docker0".into()),
            subnets: vec!["172.17.0.0/16".parse().unwrap()],
            compose_project: None,
            compose_network: None,
        }],
    }
}

fn on_docker0(src: &str, dst: &str, port: u16) -> Packet {
    Packet {
        src: ip(src),
        dst: ip(dst),
        proto: Some(Proto::Tcp),
        dport: port,
        in_if: "docker0".into(),
        out_if: "docker0".into(),
        established: false,
        dnat: None,
    }
}

fn icc_off() -> HostSettings {
    HostSettings { icc_off: ["bridge".to_string()].into() }
}

#[test]
fn host_icc_off_drops_docker0_traffic_even_to_unknown_containers() {
    let inv = docker0_inventory();
    assert!(compile(&[], &inv).v4.is_empty(), "nothing to do without policies or ICC");
    let table = compile_with(&[], &inv, &icc_off()).v4;
    let walker = Walker::new(&table).unwrap();
    assert_eq!(walker.walk(&on_docker0("172.17.0.2", "172.17.0.3", 80)).0, Verdict::Drop);
    // Started since the last reconcile: still checked (the subnet's entry).
    assert_eq!(walker.walk(&on_docker0("172.17.0.2", "172.17.0.99", 80)).0, Verdict::Drop);
    // docker0 is not guarded: unknown addresses keep their other traffic.
    let mut out = on_docker0("172.17.0.99", "8.8.8.8", 53);
    out.out_if = "eth0".into();
    assert_eq!(walker.walk(&out).0, Verdict::Pass);
    // The world through a published port is not container-to-container.
    let mut world = on_docker0("192.0.2.1", "172.17.0.3", 80);
    world.in_if = "eth0".into();
    assert_eq!(walker.walk(&world).0, Verdict::Pass);
}

#[test]
fn a_policy_allow_on_docker0_wins_over_host_icc_off() {
    let text = "version: 1\nservices:\n  vault: { ingress: [{ from: [app], ports: [8200/tcp] }] }\n  app: { ingress: any }\n";
    let policies = vec![parse_policy(text, "vault.yaml").unwrap()];
    let inv = docker0_inventory();
    let walker = Walker::new(&compile_with(&policies, &inv, &icc_off()).v4).unwrap();
    assert_eq!(walker.walk(&on_docker0("172.17.0.5", "172.17.0.4", 8200)).0, Verdict::Pass);
    assert_eq!(walker.walk(&on_docker0("172.17.0.2", "172.17.0.4", 8200)).0, Verdict::Drop);
    assert_eq!(walker.walk(&on_docker0("172.17.0.5", "172.17.0.2", 80)).0, Verdict::Drop, "ICC");
}
