//! Firewall compile-and-apply micro-benchmark, inside a throwaway network namespace.
//!
//! `cargo run --release -p segctl --features fakes --example fw_bench [-- PROJECTS REPLICAS SAMPLE]`
//! (defaults 100 projects × 10 services = 1,000 services, 2 replicas, every
//! rule as its own process; SAMPLE limits that to the first N rules and
//! extrapolates). Needs root. Prints:
//! - engine full apply (compile + read live + render + one restore) vs a bare
//!   `iptables-restore --noflush` of the same text, and the ratio;
//! - one `iptables -A` process per rule (all rules, or a sample extrapolated);
//! - one container added: time and chains rewritten;
//! - rules a packet traverses in the worst case at 10 / 100 / 1,000 services.

use segctl::firewall::sim::{Packet, Walker};
use segctl::firewall::{apply, compile, synth, IptablesFirewall};
use segctl::policy::Proto;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const INSIDE: &str = "SEG_BENCH_INSIDE";
const SETUP: &str =
    "*filter\n:DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j RETURN\nCOMMIT\n";

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("numbers")).collect();
    let (projects, replicas, sample) = (
        args.first().copied().unwrap_or(100),
        args.get(1).copied().unwrap_or(2),
        args.get(2).copied().unwrap_or(usize::MAX),
    );
    if std::env::var_os(INSIDE).is_none() {
        outside(&[projects, replicas, sample]);
        return;
    }
    full_apply(projects, replicas);
    per_rule(projects, replicas, sample);
    one_more_container(projects, replicas);
    traversal();
}

/// Re-runs this binary inside fresh namespaces so every iptables process it
/// starts works there directly (no `ip netns exec` per call).
fn outside(args: &[usize]) {
    let ns = format!("seg-bench-{}", std::process::id());
    run(&["ip", "netns", "add", &ns]);
    let exe = std::env::current_exe().unwrap();
    let status = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(exe)
        .args(args.iter().map(ToString::to_string))
        .env(INSIDE, "1")
        .status();
    run(&["ip", "netns", "del", &ns]);
    assert!(status.expect("run inside").success(), "benchmark failed");
}

fn run(args: &[&str]) {
    let ok = Command::new(args[0]).args(&args[1..]).status().is_ok_and(|s| s.success());
    assert!(ok, "{args:?} failed");
}

fn restore(text: &str) -> Duration {
    let t = Instant::now();
    let mut child = Command::new("iptables-restore").arg("--noflush").stdin(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "iptables-restore failed");
    t.elapsed()
}

/// Empties the filter table and recreates Docker's hooks.
fn reset() {
    run(&["iptables", "-F"]);
    run(&["iptables", "-X"]);
    restore(SETUP);
}

fn full_apply(projects: usize, replicas: usize) {
    let (policies, inv) = synth::scenario(projects, replicas);
    let mut engine = Vec::new();
    let mut bare = Vec::new();
    let (mut rules, mut chains) = (0, 0);
    let mut compile_ms = Vec::new();
    for _ in 0..5 {
        reset();
        let t = Instant::now();
        let desired = compile(&policies, &inv);
        compile_ms.push(t.elapsed());
        apply(&mut IptablesFirewall::new(), &desired).unwrap();
        engine.push(t.elapsed());
        rules = desired.rule_count();
        chains = desired.v4.chains.len();
        let text = desired.render_iptables_restore(None);
        reset();
        bare.push(restore(&text));
    }
    let (e, b, c) = (median(&mut engine), median(&mut bare), median(&mut compile_ms));
    println!(
        "services: {}, containers: {}, rules: {rules}, chains: {chains}",
        projects * 10,
        inv.containers.len()
    );
    println!(
        "engine full apply: {} (compile {}), bare iptables-restore: {}, ratio {:.2}",
        ms(e),
        ms(c),
        ms(b),
        e.as_secs_f64() / b.as_secs_f64()
    );
}

fn per_rule(projects: usize, replicas: usize, sample: usize) {
    reset();
    let desired = compile(&synth::scenario(projects, replicas).0, &synth::scenario(projects, replicas).1);
    let text = desired.render_iptables_restore(None);
    let declarations: String =
        text.lines().filter(|l| l.starts_with(':')).map(|l| format!("{l}\n")).collect();
    restore(&format!("*filter\n{declarations}COMMIT\n"));
    let appends: Vec<&str> = text.lines().filter(|l| l.starts_with("-A ")).take(sample).collect();
    let t = Instant::now();
    for line in &appends {
        let ok = Command::new("iptables").args(line.split_whitespace()).status().is_ok_and(|s| s.success());
        assert!(ok, "iptables {line}");
    }
    let per = t.elapsed() / appends.len() as u32;
    let total = per * desired.rule_count() as u32;
    println!(
        "one `iptables -A` per rule: {} per rule over {} rules → ~{} for all {}",
        us(per),
        appends.len(),
        ms(total),
        desired.rule_count()
    );
}

fn one_more_container(projects: usize, replicas: usize) {
    reset();
    let (policies, mut inv) = synth::scenario(projects, replicas);
    let mut fw = IptablesFirewall::new();
    apply(&mut fw, &compile(&policies, &inv)).unwrap();
    let mut extra = inv.containers[1].clone();
    extra.id = "extra".into();
    extra.endpoints[0].ipv4 = Some(synth::address(0, 9, 9));
    inv.containers.push(extra);
    let t = Instant::now();
    let report = apply(&mut fw, &compile(&policies, &inv)).unwrap();
    let chains = report.v4.lines().filter(|l| l.starts_with(':')).count();
    let lines = report.v4.lines().filter(|l| l.starts_with("-A ")).count();
    println!("one container added: {} ({chains} chains / {lines} rules rewritten)", ms(t.elapsed()));
    let t = Instant::now();
    assert!(!apply(&mut fw, &compile(&policies, &inv)).unwrap().changed());
    println!("reconcile with nothing to change: {}", ms(t.elapsed()));
}

fn traversal() {
    for projects in [1, 10, 100] {
        let (policies, inv) = synth::scenario(projects, 1);
        let walker = Walker::new(&compile(&policies, &inv).v4).unwrap();
        let addrs: Vec<IpAddr> =
            inv.containers.iter().filter_map(|c| c.endpoints[0].ipv4).map(IpAddr::V4).collect();
        let world: IpAddr = "192.0.2.1".parse().unwrap();
        let mut worst = 0;
        for src in addrs.iter().step_by((addrs.len() / 50).max(1)).chain([&world]) {
            for dst in &addrs {
                for (proto, port) in
                    [(Proto::Tcp, 5009), (Proto::Tcp, 9100), (Proto::Udp, 53), (Proto::Tcp, 1)]
                {
                    let bridge = if *src == world { "eth0" } else { "br-0" };
                    let p = Packet {
                        src: *src,
                        dst: *dst,
                        proto: Some(proto),
                        dport: port,
                        in_if: bridge.into(),
                        out_if: "br-0".into(),
                        established: false,
                        dnat: None,
                    };
                    worst = worst.max(walker.walk(&p).1);
                }
            }
        }
        let depth = compile(&policies, &inv).v4.max_depth();
        println!(
            "worst-case rules traversed at {} services: {worst} (chains nested below DOCKER-USER: {depth})",
            projects * 10
        );
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}
