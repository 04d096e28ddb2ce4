//! Packet path: what seg's rules cost the packets. Two namespaces, a
//! client (synthetic container p0/s0, 10.100.0.10) and a server (p0/s1,
//! 10.100.0.20), routed through a third that holds the firewall, with
//! 1,000 services' worth of rules (or none) in it. The client may reach the
//! server on 5001/tcp and 9000-9100/tcp by policy; port 7 is refused.
//!
//! `cargo run --release -p segctl --features fakes --example packet_bench [-- [iptables|nftables|both] PROJECTS SECS ROUNDS]`
//! (defaults: both, 100 projects = 1,000 services, 3 s per figure, 3 rounds).
//! Needs root and `iperf3`. Per round and case (no seg rules, then each
//! backend), interleaved so drift hits all alike:
//! - TCP connections per second: one client connects, waits for the
//!   server's close, connects again (the server accepts and closes at once);
//! - throughput: `iperf3 -t SECS` on one connection.
//!
//! Every case has Docker's iptables hooks and a conntrack rule in FORWARD,
//! as a Docker host has, so the baseline pays conntrack too.

#[path = "support/mod.rs"]
mod support;

use segctl::firewall::{apply, compile, synth, Backend, Firewall, IptablesFirewall, NftablesFirewall};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROLE: &str = "SEG_PBENCH_ROLE";
const SERVER: &str = "10.100.0.20";
/// Docker's hooks plus the conntrack rule every Docker host's FORWARD has.
const HOST_HOOKS: &str = "*filter\n:DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n\
    -A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A DOCKER-USER -j RETURN\nCOMMIT\n";

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("serve") => return serve(),
        Ok("connect") => return connect_loop(),
        Ok("probe") => return probe(),
        _ => {}
    }
    let (backends, args) = support::args(&[Backend::Iptables, Backend::Nftables]);
    let projects = args.first().copied().unwrap_or(100);
    let secs = args.get(1).copied().unwrap_or(3) as u64;
    let rounds = args.get(2).copied().unwrap_or(3);
    let net = Net::new();
    let _server = net.spawn_self(&net.srv, "serve", &[]);
    let cases: Vec<Option<Backend>> = std::iter::once(None).chain(backends.into_iter().map(Some)).collect();
    let mut figures: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); cases.len()];
    for round in 0..rounds {
        for (case, backend) in cases.iter().enumerate() {
            net.firewall(*backend, projects, round == 0);
            figures[case].0.push(net.connect_rate(secs));
            figures[case].1.push(net.iperf(secs));
        }
    }
    print(&cases, &mut figures, projects, rounds);
}

fn name(case: Option<Backend>) -> &'static str {
    case.map_or("no seg rules", Backend::name)
}

fn print(cases: &[Option<Backend>], figures: &mut [(Vec<f64>, Vec<f64>)], projects: usize, rounds: usize) {
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (base_conn, base_bps) = (med(&mut figures[0].0), med(&mut figures[0].1));
    println!("packet path, {} services' rules, medians of {rounds} rounds:", projects * 10);
    for (case, (conns, bps)) in cases.iter().zip(figures.iter_mut()) {
        let (c, b) = (med(conns), med(bps));
        println!(
            "{:>13}: {c:.0} connections/s ({:.3}× baseline, all {:?}), {:.2} Gbit/s ({:.3}× baseline, all {:?})",
            name(*case),
            c / base_conn,
            conns.iter().map(|x| x.round()).collect::<Vec<_>>(),
            b / 1e9,
            b / base_bps,
            bps.iter().map(|x| (x / 1e7).round() / 100.0).collect::<Vec<_>>()
        );
    }
}

/// The three namespaces; deleted (with everything in them) on drop.
struct Net {
    cli: String,
    rtr: String,
    srv: String,
    exe: std::path::PathBuf,
}

impl Net {
    fn new() -> Net {
        let id = std::process::id();
        let [cli, rtr, srv] = ["c", "r", "s"].map(|n| format!("seg-pb{n}-{id}"));
        let net = Net { cli, rtr, srv, exe: std::env::current_exe().unwrap() };
        for ns in [&net.cli, &net.rtr, &net.srv] {
            support::run(&["ip", "netns", "add", ns]);
            support::run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        net.link(&net.cli, "10.100.0.10", "10.255.0.1", "r0");
        net.link(&net.srv, SERVER, "10.255.0.2", "r1");
        net.sysctl(&net.rtr, "net.ipv4.ip_forward=1");
        net.sysctl(&net.cli, "net.ipv4.ip_local_port_range=1024 65000");
        net.sysctl(&net.cli, "net.ipv4.tcp_tw_reuse=1");
        net
    }

    /// A veth from `ns` (address `addr`/32) to the router (`gw`/32 on
    /// `r_if`), routed both ways: no bridge, so the router's forward hook
    /// sees every packet.
    fn link(&self, ns: &str, addr: &str, gw: &str, r_if: &str) {
        let ip = |args: &[&str], ns: &str| support::run(&[&["ip", "-n", ns], args].concat());
        let rtr = &self.rtr;
        support::run(&[
            "ip", "link", "add", "e0", "netns", ns, "type", "veth", "peer", "name", r_if, "netns", rtr,
        ]);
        ip(&["addr", "add", &format!("{addr}/32"), "dev", "e0"], ns);
        ip(&["link", "set", "e0", "up"], ns);
        ip(&["route", "add", gw, "dev", "e0"], ns);
        ip(&["route", "add", "default", "via", gw], ns);
        ip(&["addr", "add", &format!("{gw}/32"), "dev", r_if], rtr);
        ip(&["link", "set", r_if, "up"], rtr);
        ip(&["route", "add", &format!("{addr}/32"), "dev", r_if], rtr);
    }

    fn sysctl(&self, ns: &str, setting: &str) {
        support::run(&["ip", "netns", "exec", ns, "sysctl", "-qw", setting]);
    }

    /// This binary in `ns` in `role`.
    fn spawn_self(&self, ns: &str, role: &str, args: &[&str]) -> Killed {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(&self.exe)
            .args(args)
            .env(ROLE, role)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        Killed(child)
    }

    fn output(&self, ns: &str, role: &str, args: &[&str]) -> String {
        let child = self.spawn_self(ns, role, args);
        let out = child.wait();
        String::from_utf8_lossy(&out).trim().to_string()
    }

    /// The router's ruleset: Docker's hooks, then seg's rules of `backend`.
    /// `check`: prove the rules are on the path (port 7 dropped, not refused).
    fn firewall(&self, backend: Option<Backend>, projects: usize, check: bool) {
        support::run(&["ip", "netns", "exec", &self.rtr, "nft", "flush", "ruleset"]);
        support::feed("ip", &["netns", "exec", &self.rtr, "iptables-restore", "--noflush"], HOST_HOOKS);
        // Once conntrack is on: time-wait entries go after 1 s, not 120 s,
        // so a connect loop never fills the table.
        self.sysctl(&self.rtr, "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1");
        if let Some(backend) = backend {
            let mut fw: Box<dyn Firewall> = match backend {
                Backend::Iptables => Box::new(IptablesFirewall::in_netns(&self.rtr)),
                Backend::Nftables => Box::new(NftablesFirewall::in_netns(&self.rtr)),
            };
            let (policies, inv) = synth::scenario(projects, 2);
            apply(fw.as_mut(), &compile(&policies, &inv)).unwrap();
        }
        if check {
            let want = if backend.is_some() { "timeout" } else { "refused" };
            let got = self.output(&self.cli, "probe", &[&format!("{SERVER}:7")]);
            assert_eq!(got, want, "{}: port 7 (not allowed) through the router", name(backend));
        }
    }

    fn connect_rate(&self, secs: u64) -> f64 {
        let out = self.output(&self.cli, "connect", &[&format!("{SERVER}:5001"), &secs.to_string()]);
        out.parse().unwrap_or_else(|_| panic!("connect loop said {out:?}"))
    }

    /// Bits per second received, one `iperf3` connection on 9000/tcp.
    fn iperf(&self, secs: u64) -> f64 {
        let server = Command::new("ip")
            .args(["netns", "exec", &self.srv, "iperf3", "-s", "-1", "-p", "9000"])
            .stdout(Stdio::null())
            .spawn()
            .expect("iperf3 (apt-get install iperf3)");
        let _server = Killed(server);
        std::thread::sleep(Duration::from_millis(300));
        let out = Command::new("ip")
            .args(["netns", "exec", &self.cli, "iperf3", "-J", "-c", SERVER, "-p", "9000"])
            .args(["-t", &secs.to_string()])
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3's JSON");
        json["end"]["sum_received"]["bits_per_second"].as_f64().expect("iperf3 result")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.cli, &self.rtr, &self.srv] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A child killed when dropped (servers), or waited for (`wait`).
struct Killed(Child);

impl Killed {
    fn wait(mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.0.stdout.take().unwrap().read_to_end(&mut out).unwrap();
        out
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Role `serve`: accepts on 5001 and closes at once, so the client is the
/// one to see the close (no time-wait piles up on the client's ports).
fn serve() {
    let listener = TcpListener::bind(("0.0.0.0", 5001)).unwrap();
    for conn in listener.incoming() {
        drop(conn);
    }
}

/// Role `connect ADDR SECS`: connections completed per second (each one:
/// connect, read to the server's close).
fn connect_loop() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr: SocketAddr = args[0].parse().unwrap();
    let secs: u64 = args[1].parse().unwrap();
    let (t, mut done, mut buf) = (Instant::now(), 0u64, [0u8; 16]);
    while t.elapsed() < Duration::from_secs(secs) {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).expect("allowed by policy");
        while s.read(&mut buf).unwrap_or(0) > 0 {}
        done += 1;
    }
    println!("{:.1}", done as f64 / t.elapsed().as_secs_f64());
}

/// Role `probe ADDR`: `ok`, `refused` (a RST: no firewall drop) or `timeout`.
fn probe() {
    let addr: SocketAddr = std::env::args().nth(1).unwrap().parse().unwrap();
    match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
        Ok(_) => println!("ok"),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => println!("timeout"),
        Err(_) => println!("refused"),
    }
}
