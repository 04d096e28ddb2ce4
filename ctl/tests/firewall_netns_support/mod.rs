//! The throwaway namespaces of `firewall_netns`, and the two backends.
//!
//! Topology (addresses exist only inside these namespaces):
//!   `seg-t-<pid>-<tag>-h`: bridge `segbr0` 10.203.77.1/24 and fd00:203:77::1/64,
//!   FORWARD → DOCKER-USER in iptables and ip6tables (as Docker leaves it),
//!   and the rules seg writes.
//!   `seg-t-<pid>-<tag>-{web,api,db,other}`: one veth each into the bridge,
//!   10.203.77.{10,11,12,13} and fd00:203:77::{10,11,12,13}.

use seg_common::api::Identity;
use segctl::firewall::{
    Container, Firewall, Inventory, IptablesFirewall, NetEndpoint, Network, NftablesFirewall,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BRIDGE: &str = "segbr0";
pub const NET: &str = "shop_default";
pub const MEMBERS: [&str; 4] = ["web", "api", "db", "other"];

/// The backend a scenario runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Iptables,
    Nftables,
}

pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("spawn");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The namespaces; deleted on drop, also when a test panics.
pub struct Topology {
    pub host: String,
    members: Vec<(String, Ipv4Addr, Ipv6Addr)>,
}

impl Topology {
    pub fn new(tag: &str) -> Topology {
        assert!(sh(&["id", "-u"]).trim() == "0", "firewall_netns needs root (it creates network namespaces)");
        assert!(
            Command::new("nft").arg("--version").output().is_ok_and(|o| o.status.success()),
            "firewall_netns needs nft (apt-get install -y nftables)"
        );
        let base = format!("seg-t-{}-{tag}", std::process::id());
        let host = format!("{base}-h");
        let mut topo = Topology { host: host.clone(), members: Vec::new() };
        sh(&["ip", "netns", "add", &host]);
        let inh = |cmd: &[&str]| sh(&[&["ip", "netns", "exec", &host], cmd].concat());
        // No duplicate address detection anywhere: tentative (link-local)
        // addresses hold IPv6 back for the first second or two.
        for conf in ["default", "all"] {
            inh(&["sysctl", "-qw", &format!("net.ipv6.conf.{conf}.accept_dad=0")]);
        }
        inh(&["ip", "link", "add", BRIDGE, "type", "bridge"]);
        inh(&["ip", "addr", "add", "10.203.77.1/24", "dev", BRIDGE]);
        inh(&["ip", "addr", "add", "fd00:203:77::1/64", "dev", BRIDGE, "nodad"]);
        inh(&["ip", "link", "set", BRIDGE, "up"]);
        inh(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        inh(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        let docker_like =
            "*filter\n:DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j RETURN\nCOMMIT\n";
        restore(&host, "iptables-restore", docker_like);
        restore(&host, "ip6tables-restore", docker_like);
        for (i, name) in MEMBERS.iter().enumerate() {
            let ns = format!("{base}-{name}");
            let v4 = Ipv4Addr::new(10, 203, 77, 10 + i as u8);
            let v6: Ipv6Addr = format!("fd00:203:77::{}", 10 + i).parse().unwrap();
            sh(&["ip", "netns", "add", &ns]);
            topo.members.push((ns.clone(), v4, v6));
            let (outer, inner) = (format!("segv{i}h"), format!("segv{i}c"));
            inh(&["ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", &ns]);
            inh(&["ip", "link", "set", &outer, "master", BRIDGE, "up"]);
            let inc = |cmd: &[&str]| sh(&[&["ip", "netns", "exec", &ns], cmd].concat());
            inc(&["ip", "addr", "add", &format!("{v4}/24"), "dev", &inner]);
            inc(&["ip", "addr", "add", &format!("{v6}/64"), "dev", &inner, "nodad"]);
            inc(&["ip", "link", "set", &inner, "up"]);
            inc(&["ip", "link", "set", "lo", "up"]);
            inc(&["ip", "route", "add", "default", "via", "10.203.77.1"]);
            inc(&["ip", "-6", "route", "add", "default", "via", "fd00:203:77::1"]);
        }
        topo
    }

    /// A "world" namespace routed (not bridged) to the host, 10.203.78.2 and
    /// fd00:203:78::2, and Docker-like DNAT on the host's 10.203.78.1 /
    /// fd00:203:78::1: port 8080 and 8081 to web's 80 and 81.
    pub fn add_world(&mut self) {
        let world = format!("{}-w", self.host.trim_end_matches("-h"));
        sh(&["ip", "netns", "add", &world]);
        self.members.push((world.clone(), Ipv4Addr::new(10, 203, 78, 2), "fd00:203:78::2".parse().unwrap()));
        self.in_host(&[
            "ip", "link", "add", "segwh", "type", "veth", "peer", "name", "segwc", "netns", &world,
        ]);
        self.in_host(&["ip", "addr", "add", "10.203.78.1/24", "dev", "segwh"]);
        self.in_host(&["ip", "addr", "add", "fd00:203:78::1/64", "dev", "segwh", "nodad"]);
        self.in_host(&["ip", "link", "set", "segwh", "up"]);
        let inw = |cmd: &[&str]| sh(&[&["ip", "netns", "exec", &world], cmd].concat());
        inw(&["ip", "addr", "add", "10.203.78.2/24", "dev", "segwc"]);
        inw(&["ip", "addr", "add", "fd00:203:78::2/64", "dev", "segwc", "nodad"]);
        inw(&["ip", "link", "set", "segwc", "up"]);
        inw(&["ip", "link", "set", "lo", "up"]);
        let (web4, web6) = (self.member("web").1, self.member("web").2);
        for (tool, host, web) in [
            ("iptables", "10.203.78.1", web4.to_string()),
            ("ip6tables", "fd00:203:78::1", format!("[{web6}]")),
        ] {
            for (from, to) in [("8080", "80"), ("8081", "81")] {
                let dest = format!("{web}:{to}");
                let rule =
                    ["-d", host, "-p", "tcp", "--dport", from, "-j", "DNAT", "--to-destination", &dest];
                self.in_host(&[&[tool, "-t", "nat", "-A", "PREROUTING"][..], &rule].concat());
            }
        }
    }

    /// Can the world reach the host's `port` (DNAT-ed to web)? `(IPv4, IPv6)`.
    pub fn world_reaches(&self, port: u16, to_port: u16) -> (bool, bool) {
        let listener = Listener::start(&self.member("web").0, to_port);
        let world = &self.members.last().expect("add_world first").0;
        let v4 = probe(world, &["SEG_PROBE_CONNECT", &format!("10.203.78.1:{port}")]);
        let v6 = probe(world, &["SEG_PROBE_CONNECT", &format!("[fd00:203:78::1]:{port}")]);
        drop(listener);
        (v4, v6)
    }

    fn member(&self, name: &str) -> &(String, Ipv4Addr, Ipv6Addr) {
        &self.members[MEMBERS.iter().position(|n| *n == name).unwrap()]
    }

    /// The backend, aimed at the host namespace.
    pub fn fw(&self, kind: Kind) -> Box<dyn Firewall> {
        match kind {
            Kind::Iptables => Box::new(IptablesFirewall::in_netns(&self.host)),
            Kind::Nftables => Box::new(NftablesFirewall::in_netns(&self.host)),
        }
    }

    pub fn nft(&self) -> NftablesFirewall {
        NftablesFirewall::in_netns(&self.host)
    }

    /// Runs a command in the host namespace.
    pub fn in_host(&self, cmd: &[&str]) -> String {
        sh(&[&["ip", "netns", "exec", &self.host], cmd].concat())
    }

    /// Every container of the shop (`other` has no service).
    pub fn inventory(&self) -> Inventory {
        let net = Network {
            name: NET.into(),
            bridge: Some(BRIDGE.into()),
            subnets: vec!["10.203.77.0/24".parse().unwrap(), "fd00:203:77::/64".parse().unwrap()],
            compose_project: Some("shop".into()),
            compose_network: Some("default".into()),
        };
        let containers = MEMBERS
            .iter()
            .map(|name| {
                let (_, v4, v6) = self.member(name);
                Container {
                    id: name.to_string(),
                    service: (*name != "other").then(|| Identity::new(Some("shop"), name)),
                    endpoints: vec![NetEndpoint { network: NET.into(), ipv4: Some(*v4), ipv6: Some(*v6) }],
                    published: vec![],
                }
            })
            .collect();
        Inventory { containers, networks: vec![net] }
    }

    /// Can `from` open a TCP connection to `to`:`port`, over IPv4 and over
    /// IPv6? (Real SYNs through the bridge.) Panics when the two differ: the
    /// policy is the same for both families.
    pub fn connects(&self, from: &str, to: &str, port: u16) -> bool {
        let (to_ns, v4, v6) = self.member(to).clone();
        let listener = Listener::start(&to_ns, port);
        let (from_ns, _, _) = self.member(from);
        let reach =
            |ip: IpAddr| probe(from_ns, &["SEG_PROBE_CONNECT", &SocketAddr::new(ip, port).to_string()]);
        let (a, b) = (reach(v4.into()), reach(v6.into()));
        drop(listener);
        assert_eq!(a, b, "{from} → {to}:{port}: IPv4 says {a}, IPv6 says {b}");
        a
    }

    /// The namespace's whole ruleset as nft prints it (iptables-nft's tables
    /// included), counters left out: equal text, equal rules.
    pub fn ruleset(&self) -> String {
        let text = self.in_host(&["nft", "list", "ruleset"]);
        let words: Vec<&str> = text.split(' ').collect();
        let mut out = Vec::new();
        let mut skip = 0;
        for (i, w) in words.iter().enumerate() {
            if skip > 0 {
                skip -= 1;
            } else if *w == "packets" && words.get(i + 2) == Some(&"bytes") {
                skip = 3;
            } else {
                out.push(*w);
            }
        }
        out.join(" ")
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.members.iter().map(|m| &m.0).chain(std::iter::once(&self.host)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn probe(ns: &str, env: &[&str; 2]) -> bool {
    let exe = std::env::current_exe().unwrap();
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args(["--exact", "probe_helper", "--nocapture", "--include-ignored"])
        .env(env[0], env[1])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// A TCP listener (both families) inside a namespace: this test binary, re-entered.
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

/// The body of the `probe_helper` pseudo-test: listen (`[::]`, which takes
/// IPv4 too) or connect, as the environment says.
pub fn probe_helper() {
    if let Ok(port) = std::env::var("SEG_PROBE_LISTEN") {
        let l = TcpListener::bind(("::", port.parse::<u16>().unwrap())).unwrap();
        println!("READY");
        for s in l.incoming() {
            drop(s);
        }
    } else if let Ok(target) = std::env::var("SEG_PROBE_CONNECT") {
        let addr = target.parse().unwrap();
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(700)).expect("connect");
    }
}

pub fn restore(ns: &str, tool: &str, text: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, tool, "--noflush"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}
