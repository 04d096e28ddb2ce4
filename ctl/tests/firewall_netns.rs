//! The firewall (compile, then `iptables-restore`) against the real kernel, with real packets, inside
//! throwaway network namespaces (never the host's own rules).
//!
//! Topology (addresses exist only inside these namespaces):
//!   `seg-t-<pid>-host`: bridge `segbr0` 10.203.77.1/24, FORWARD → DOCKER-USER
//!   (as Docker leaves it), and the rules seg writes.
//!   `seg-t-<pid>-{web,api,db,other}`: one veth each into the bridge,
//!   10.203.77.{10,11,12,13}.
//! Policy: api accepts web on 9000/tcp; db accepts api on 5432/tcp, no egress.
//! Needs root; fails (never skips) without it.

use seg_common::api::Identity;
use segctl::firewall::{
    apply, compile, Container, Firewall, Inventory, IptablesFirewall, NetEndpoint, Network, Table,
};
use segctl::policy::{self, Family, Policy};
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BRIDGE: &str = "segbr0";
const NET: &str = "shop_default";

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("spawn");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The namespaces; deleted on drop, also when a test panics.
struct Topology {
    host: String,
    members: Vec<(String, Ipv4Addr)>,
}

impl Topology {
    fn new(tag: &str) -> Topology {
        assert!(rustix_is_root(), "firewall_netns needs root (it creates network namespaces)");
        let base = format!("seg-t-{}-{tag}", std::process::id());
        let host = format!("{base}-h");
        let mut topo = Topology { host: host.clone(), members: Vec::new() };
        sh(&["ip", "netns", "add", &host]);
        let inh = |cmd: &[&str]| sh(&[&["ip", "netns", "exec", &host], cmd].concat());
        inh(&["ip", "link", "add", BRIDGE, "type", "bridge"]);
        inh(&["ip", "addr", "add", "10.203.77.1/24", "dev", BRIDGE]);
        inh(&["ip", "link", "set", BRIDGE, "up"]);
        inh(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let docker_like =
            "*filter\n:DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j RETURN\nCOMMIT\n";
        restore(&host, docker_like);
        for (i, name) in ["web", "api", "db", "other"].iter().enumerate() {
            let ns = format!("{base}-{name}");
            let ip = Ipv4Addr::new(10, 203, 77, 10 + i as u8);
            sh(&["ip", "netns", "add", &ns]);
            topo.members.push((ns.clone(), ip));
            let (outer, inner) = (format!("segv{i}h"), format!("segv{i}c"));
            inh(&["ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", &ns]);
            inh(&["ip", "link", "set", &outer, "master", BRIDGE, "up"]);
            let inc = |cmd: &[&str]| sh(&[&["ip", "netns", "exec", &ns], cmd].concat());
            inc(&["ip", "addr", "add", &format!("{ip}/24"), "dev", &inner]);
            inc(&["ip", "link", "set", &inner, "up"]);
            inc(&["ip", "link", "set", "lo", "up"]);
        }
        topo
    }

    fn ns(&self, name: &str) -> &(String, Ipv4Addr) {
        let i = ["web", "api", "db", "other"].iter().position(|n| *n == name).unwrap();
        &self.members[i]
    }

    fn fw(&self) -> IptablesFirewall {
        IptablesFirewall::in_netns(&self.host)
    }

    fn inventory(&self) -> Inventory {
        let subnet = "10.203.77.0/24".parse().unwrap();
        let net = Network {
            name: NET.into(),
            bridge: Some(BRIDGE.into()),
            subnets: vec![subnet],
            compose_project: Some("shop".into()),
            compose_network: Some("default".into()),
        };
        let containers = ["web", "api", "db", "other"]
            .iter()
            .map(|name| Container {
                id: name.to_string(),
                service: (*name != "other").then(|| Identity::new(Some("shop"), name)),
                endpoints: vec![NetEndpoint { network: NET.into(), ipv4: Some(self.ns(name).1), ipv6: None }],
                published: vec![],
            })
            .collect();
        Inventory { containers, networks: vec![net] }
    }

    /// Can `from` open a TCP connection to `to`:`port`? (Real SYNs through the bridge.)
    fn connects(&self, from: &str, to: &str, port: u16) -> bool {
        let (to_ns, to_ip) = self.ns(to).clone();
        let listener = Listener::start(&to_ns, port);
        let (from_ns, _) = self.ns(from);
        let target = format!("{to_ip}:{port}");
        let exe = std::env::current_exe().unwrap();
        let status = Command::new("ip")
            .args(["netns", "exec", from_ns])
            .arg(exe)
            .args(["--exact", "probe_helper", "--nocapture", "--include-ignored"])
            .env("SEG_PROBE_CONNECT", &target)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        drop(listener);
        status.success()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.members.iter().map(|m| &m.0).chain(std::iter::once(&self.host)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A TCP listener inside a namespace (this test binary, re-entered).
struct Listener(Child);

impl Listener {
    fn start(ns: &str, port: u16) -> Listener {
        let exe = std::env::current_exe().unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(exe)
            .args(["--exact", "probe_helper", "--nocapture", "--include-ignored"])
            .env("SEG_PROBE_LISTEN", port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut l = Listener(child);
        // The helper prints READY once bound.
        let mut out = l.0.stdout.take().unwrap();
        let mut buf = [0u8; 256];
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !seen.contains("READY") && Instant::now() < deadline {
            let n = std::io::Read::read(&mut out, &mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(seen.contains("READY"), "listener in {ns} did not start: {seen}");
        l
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Not a test: the listener/connector the tests run inside namespaces.
#[test]
#[ignore]
fn probe_helper() {
    if let Ok(port) = std::env::var("SEG_PROBE_LISTEN") {
        let l = TcpListener::bind(("0.0.0.0", port.parse::<u16>().unwrap())).unwrap();
        println!("READY");
        for s in l.incoming() {
            drop(s);
        }
    } else if let Ok(target) = std::env::var("SEG_PROBE_CONNECT") {
        let addr = target.parse().unwrap();
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(700)).expect("connect");
    }
}

fn rustix_is_root() -> bool {
    sh(&["id", "-u"]).trim() == "0"
}

fn restore(ns: &str, text: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "iptables-restore", "--noflush"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

fn save(ns: &str) -> String {
    let text = sh(&["ip", "netns", "exec", ns, "iptables-save", "-t", "filter"]);
    text.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n")
}

fn shop() -> Policy {
    let text = "version: 1\nproject: shop\nservices:\n  web: { ingress: any }\n  api: { ingress: [{ from: [web], ports: [9000/tcp] }] }\n  db: { ingress: [{ from: [api], ports: [5432/tcp] }], egress: none }\n";
    policy::parse_policy(text, "shop.yaml").unwrap()
}

#[test]
fn real_packets_follow_the_policy() {
    let topo = Topology::new("pk");
    let inv = topo.inventory();
    assert!(topo.connects("web", "db", 5432), "before any policy everything flows");
    let desired = compile(&[shop()], &inv);
    let report = apply(&mut topo.fw(), &desired).unwrap();
    assert!(!report.v4.is_empty() && report.v6.is_empty());
    assert!(topo.connects("web", "api", 9000), "web → api:9000 allowed");
    assert!(topo.connects("api", "db", 5432), "api → db:5432 allowed");
    assert!(!topo.connects("web", "db", 5432), "web → db denied");
    assert!(!topo.connects("api", "db", 5433), "api → db on another port denied");
    assert!(!topo.connects("other", "api", 9000), "unlisted container denied");
    assert!(!topo.connects("db", "other", 80), "db has no egress");
    assert!(topo.connects("other", "web", 80), "web has `ingress: any`");
}

#[test]
fn reapply_is_a_no_op_and_rules_are_byte_identical() {
    let topo = Topology::new("re");
    let desired = compile(&[shop()], &topo.inventory());
    let mut fw = topo.fw();
    apply(&mut fw, &desired).unwrap();
    let before = save(&topo.host);
    let again = apply(&mut fw, &desired).unwrap();
    assert!(!again.changed(), "second apply sent: {again:?}");
    assert_eq!(save(&topo.host), before);
    let live: Table = fw.current(Family::V4).unwrap();
    assert_eq!(live.chains, desired.v4.chains, "iptables-save reads back exactly what was compiled");
}

#[test]
fn removing_a_policy_removes_exactly_its_rules() {
    let topo = Topology::new("rm");
    let mut inv = topo.inventory();
    // A second project's policy on the same host ("other" becomes ops/tools).
    inv.containers[3].service = Some(Identity::new(Some("ops"), "tools"));
    let ops =
        policy::parse_policy("version: 1\nproject: ops\nservices:\n  tools: { ingress: none }\n", "ops.yaml")
            .unwrap();
    let mut fw = topo.fw();
    apply(&mut fw, &compile(&[shop(), ops.clone()], &inv)).unwrap();
    assert!(!topo.connects("web", "other", 22));
    let shop_only = compile(&[shop()], &inv);
    let report = apply(&mut fw, &shop_only).unwrap();
    assert!(report.v4.contains("-X SEG-IN-ops-tools"), "{}", report.v4);
    assert!(!report.v4.contains(":SEG-IN-shop"), "shop's chains are not rewritten:\n{}", report.v4);
    assert_eq!(fw.current(Family::V4).unwrap().chains, shop_only.v4.chains);
    assert!(topo.connects("web", "other", 22));
    assert!(!topo.connects("web", "db", 5432));
    apply(&mut fw, &compile(&[], &inv)).unwrap();
    let left = save(&topo.host);
    assert!(!left.contains("SEG-"), "no policy, no seg rules:\n{left}");
    assert!(topo.connects("web", "db", 5432));
}

#[test]
fn tampering_is_detected_and_restored() {
    let topo = Topology::new("tm");
    let desired = compile(&[shop()], &topo.inventory());
    let mut fw = topo.fw();
    apply(&mut fw, &desired).unwrap();
    let good = save(&topo.host);
    let chain = desired.v4.chains.keys().find(|c| c.starts_with("SEG-IN-shop-db")).unwrap();
    sh(&["ip", "netns", "exec", &topo.host, "iptables", "-F", chain]);
    sh(&["ip", "netns", "exec", &topo.host, "iptables", "-D", "DOCKER-USER", "-j", "SEG-FORWARD"]);
    assert!(topo.connects("web", "db", 5432), "tampered: open");
    let report = apply(&mut fw, &desired).unwrap();
    assert!(
        report.v4.contains(&format!(":{chain} ")) && report.v4.contains("-I DOCKER-USER 1 -j SEG-FORWARD")
    );
    assert_eq!(save(&topo.host), good);
    assert!(!topo.connects("web", "db", 5432), "restored: closed");
}

#[test]
fn a_malformed_policy_changes_nothing() {
    let topo = Topology::new("bad");
    let mut fw = topo.fw();
    apply(&mut fw, &compile(&[shop()], &topo.inventory())).unwrap();
    let before = save(&topo.host);
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
        apply(&mut fw, &compile(&policies, &topo.inventory())).unwrap();
    }
    assert_eq!(save(&topo.host), before);
    // A transaction the kernel refuses leaves everything as it was too.
    let broken = "*filter\n:SEG-FORWARD - [0:0]\n-A SEG-FORWARD -j SEG-NOWHERE\nCOMMIT\n";
    assert!(fw.restore(Family::V4, broken).is_err());
    assert_eq!(save(&topo.host), before);
}
