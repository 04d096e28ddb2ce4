//! Firewall compile-and-apply micro-benchmark, both backends, inside a
//! throwaway network namespace.
//!
//! `cargo run --release -p segctl --features fakes --example fw_bench [-- [iptables|nftables|both] PROJECTS REPLICAS SAMPLE]`
//! (defaults: iptables, 100 projects × 10 services = 1,000 services, 2
//! replicas, every rule as its own process; SAMPLE limits that to N rules
//! spread over the table and extrapolates). Needs root. Prints, per backend:
//! - engine full apply (compile + read live + render + one transaction) vs a
//!   bare `iptables-restore --noflush` / `nft -f` of the same text, and the ratio;
//! - one `iptables -A` / `nft add rule|element` process per rule;
//! - one container added: time and what was rewritten, read-back (`apply`)
//!   and from memory (`update`, the controller's event path);
//! - iptables only: rules a packet traverses in the worst case at 10 / 100 / 1,000 services.

mod nft;
#[path = "../support/mod.rs"]
mod support;

use segctl::firewall::sim::{Packet, Walker};
use segctl::firewall::{apply, compile, synth, Backend, Firewall, Ruleset};
use segctl::policy::Proto;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{median, ms, us};

const INSIDE: &str = "SEG_BENCH_INSIDE";

fn main() {
    let (backends, args) = support::args(&[Backend::Iptables]);
    if !support::inside(INSIDE) {
        return support::rerun_in_netns("seg-bench", INSIDE);
    }
    let projects = args.first().copied().unwrap_or(100);
    let replicas = args.get(1).copied().unwrap_or(2);
    let sample = args.get(2).copied().unwrap_or(usize::MAX);
    for backend in backends {
        println!("== {} backend ==", backend.name());
        full_apply(backend, projects, replicas);
        match backend {
            Backend::Iptables => per_rule(projects, replicas, sample),
            Backend::Nftables => nft::per_rule(projects, replicas, sample),
        }
        one_more_container(backend, projects, replicas);
        if backend == Backend::Iptables {
            traversal();
        }
    }
}

/// Empties the namespace's whole ruleset and recreates Docker's iptables
/// hooks (`ip filter` in nftables terms), as on a Docker host.
pub fn reset() {
    support::run(&["nft", "flush", "ruleset"]);
    support::iptables_restore(support::DOCKER_HOOKS);
}

/// One bare transaction of `text` with the backend's own tool.
fn bare(backend: Backend, text: &str) -> Duration {
    match backend {
        Backend::Iptables => support::iptables_restore(text),
        Backend::Nftables => support::nft_script(text),
    }
}

fn full_apply(backend: Backend, projects: usize, replicas: usize) {
    let (policies, inv) = synth::scenario(projects, replicas);
    let (mut engine, mut bare_runs, mut compile_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut desired = Ruleset::default();
    let mut sent = 0;
    for _ in 0..5 {
        reset();
        let t = Instant::now();
        desired = compile(&policies, &inv);
        compile_ms.push(t.elapsed());
        let report = apply(support::firewall(backend).as_mut(), &desired).unwrap();
        engine.push(t.elapsed());
        sent = report.v4.len() + report.v6.len();
        // The very text the engine sent, alone, into the same empty table.
        reset();
        bare_runs.push(bare(backend, &report.v4));
    }
    let (e, b, c) = (median(&mut engine), median(&mut bare_runs), median(&mut compile_ms));
    println!(
        "services: {}, containers: {}, rules: {} in {} chains (iptables terms); {} in the kernel, script {} KiB",
        projects * 10,
        inv.containers.len(),
        desired.rule_count(),
        desired.v4.chains.len(),
        kernel_rules(backend),
        sent / 1024
    );
    let tool = if backend == Backend::Iptables { "iptables-restore --noflush" } else { "nft -f" };
    println!(
        "engine full apply: {} (compile {}), bare {tool}: {}, ratio {:.2}",
        ms(e),
        ms(c),
        ms(b),
        e.as_secs_f64() / b.as_secs_f64()
    );
}

/// Rules (and, for nftables, set and map elements) live now.
fn kernel_rules(backend: Backend) -> usize {
    match backend {
        Backend::Iptables => {
            let out = Command::new("iptables-save").args(["-t", "filter"]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("-A SEG-")).count()
        }
        Backend::Nftables => nft::live_rules(),
    }
}

fn per_rule(projects: usize, replicas: usize, sample: usize) {
    reset();
    let (policies, inv) = synth::scenario(projects, replicas);
    let desired = compile(&policies, &inv);
    let text = desired.render_iptables_restore(None);
    let declarations: String =
        text.lines().filter(|l| l.starts_with(':')).map(|l| format!("{l}\n")).collect();
    support::iptables_restore(&format!("*filter\n{declarations}COMMIT\n"));
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

fn one_more_container(backend: Backend, projects: usize, replicas: usize) {
    reset();
    let (policies, mut inv) = synth::scenario(projects, replicas);
    let mut fw = support::firewall(backend);
    let before = compile(&policies, &inv);
    apply(fw.as_mut(), &before).unwrap();
    let mut extra = inv.containers[1].clone();
    extra.id = "extra".into();
    extra.endpoints[0].ipv4 = Some(synth::address(0, 9, 9));
    inv.containers.push(extra);
    let t = Instant::now();
    let after = compile(&policies, &inv);
    let report = apply(fw.as_mut(), &after).unwrap();
    let read_back = t.elapsed();
    let (chains, lines) = written(&report.v4);
    println!(
        "one container added: {} with read-back ({chains} chains / {lines} rules or elements written)",
        ms(read_back)
    );
    event_path(backend, fw.as_mut(), &before, &after);
    let t = Instant::now();
    assert!(!apply(fw.as_mut(), &compile(&policies, &inv)).unwrap().changed());
    println!("reconcile with nothing to change: {}", ms(t.elapsed()));
}

/// The controller's event path: the difference to what it applied last,
/// without reading the kernel, one container removed and added 20 times;
/// then the very same texts through the bare tool, and (nftables) what
/// translating the whole ruleset costs, which every update does.
fn event_path(backend: Backend, fw: &mut dyn Firewall, before: &Ruleset, after: &Ruleset) {
    let (mut adds, mut removals, mut texts) = (Vec::new(), Vec::new(), (String::new(), String::new()));
    for _ in 0..20 {
        let t = Instant::now();
        texts.1 = fw.update(after, before).unwrap().v4;
        removals.push(t.elapsed());
        let t = Instant::now();
        texts.0 = fw.update(before, after).unwrap().v4;
        adds.push(t.elapsed());
    }
    fw.update(after, before).unwrap();
    let (mut bare_adds, mut bare_removals) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        bare_adds.push(bare(backend, &texts.0));
        bare_removals.push(bare(backend, &texts.1));
    }
    // Leave the kernel as `after`, as the caller expects.
    bare(backend, &texts.0);
    let mut translate: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            let _ = segctl::firewall::nft_render::to_nft(after).unwrap();
            t.elapsed()
        })
        .collect();
    let translated = if backend == Backend::Nftables {
        format!("; translating the ruleset to nft (every update): {}", ms(median(&mut translate)))
    } else {
        String::new()
    };
    println!(
        "  from memory (controller's event path), medians of 20: added {}, removed {}; \
         the same texts through the bare tool: {} / {}{translated}",
        ms(median(&mut adds)),
        ms(median(&mut removals)),
        ms(median(&mut bare_adds)),
        ms(median(&mut bare_removals)),
    );
}

/// Chains and rules a transaction writes (iptables-restore or nft script;
/// in nft an element, one per `\t` line, is a rule).
fn written(text: &str) -> (usize, usize) {
    let chains = text.lines().filter(|l| l.starts_with(':') || l.starts_with("add chain ")).count();
    let rules = text
        .lines()
        .filter(|l| l.starts_with("-A ") || l.starts_with("add rule ") || l.starts_with('\t'))
        .count();
    (chains, rules)
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
