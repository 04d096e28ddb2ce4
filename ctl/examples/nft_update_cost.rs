//! Where an event's time goes on the nftables backend, without Docker or the
//! kernel: one more replica of a synthetic service, at N services — the
//! compile (cached), the translation to nftables terms (cached), the element delta,
//! the script text and the netlink batch encoding, each timed (median of
//! 21 runs).
//!
//! With `kernel` first, it also writes each change into a throwaway
//! network namespace's nftables (the backend's `update`: netlink batch,
//! and `nft -f` as the baseline), timing the whole update.
//!
//! `cargo run --release -p segctl --features fakes --example nft_update_cost [-- [kernel] PROJECTS…]`
//! (default: 1 10 100 1000 projects of 10 services, 2 replicas each).

use segctl::firewall::nft_model::{element_delta, render_delta};
use segctl::firewall::nft_netlink::encode;
use segctl::firewall::nft_render::to_nft_cached;
use segctl::firewall::{
    apply, compile_cached, synth, CompileCache, Firewall, HostSettings, NftCache, NftablesFirewall, Ruleset,
};
use std::time::{Duration, Instant};

#[path = "support/mod.rs"]
mod support;

const INSIDE: &str = "SEG_NFTCOST_INSIDE";

fn median(mut v: Vec<Duration>) -> String {
    v.sort();
    format!("{:.2}", v[v.len() / 2].as_secs_f64() * 1000.0)
}

fn main() {
    let mut words: Vec<String> = std::env::args().skip(1).collect();
    let kernel = words.first().is_some_and(|w| w == "kernel");
    if kernel {
        words.remove(0);
        if !support::inside(INSIDE) {
            return support::rerun_in_netns("segt-nftcost", INSIDE);
        }
    }
    let args: Vec<usize> = words.iter().map(|a| a.parse().expect("numbers")).collect();
    let sizes = if args.is_empty() { vec![1, 10, 100, 1000] } else { args };
    println!(
        "services | compile (cached) | to_nft | element delta | script | netlink encode  (ms, median of 21)"
    );
    for projects in sizes {
        let (policies, before) = synth::scenario(projects, 2);
        let mut after = before.clone();
        let mut extra = after.containers[1].clone();
        extra.id = "extra".into();
        for e in &mut extra.endpoints {
            e.ipv4 = Some(synth::address(0, 1, 9));
        }
        after.containers.push(extra);
        let host = HostSettings::default();
        let (mut cache, mut translated) = (CompileCache::new(), NftCache::new());
        let old = compile_cached(&policies, &before, &host, &mut cache);
        let mut old_nft = to_nft_cached(&old, &mut translated).unwrap();
        let mut times = [(); 5].map(|_| Vec::new());
        for _ in 0..21 {
            let t = Instant::now();
            let new = compile_cached(&policies, &after, &host, &mut cache);
            times[0].push(t.elapsed());
            let t = Instant::now();
            let new_nft = to_nft_cached(&new, &mut translated).unwrap();
            times[1].push(t.elapsed());
            let t = Instant::now();
            let delta = element_delta(&new_nft, &old_nft).expect("elements only");
            times[2].push(t.elapsed());
            let t = Instant::now();
            let script = render_delta(&delta);
            times[3].push(t.elapsed());
            let t = Instant::now();
            let batch = encode(&delta, 1).unwrap();
            times[4].push(t.elapsed());
            assert!(!script.is_empty() && !batch.bytes.is_empty());
            let back = compile_cached(&policies, &before, &host, &mut cache);
            old_nft = to_nft_cached(&back, &mut translated).unwrap();
        }
        assert!(cache.patched() > 0, "the compile patches the last output");
        let [a, b, c, d, e] = times.map(median);
        println!("{} | {a} | {b} | {c} | {d} | {e}", projects * synth::SERVICES_PER_PROJECT);
        if kernel {
            let new = compile_cached(&policies, &after, &host, &mut cache);
            let netlink = kernel_updates(NftablesFirewall::new(), &old, &new, 25);
            // One nft process takes seconds at 10,000 services: fewer rounds there.
            let rounds = if projects >= 1000 { 2 } else { 25 };
            let script = kernel_updates(NftablesFirewall::new().nft_only(), &old, &new, rounds);
            println!(
                "  whole update (translate, diff, write), p50 / p99 ms: netlink {netlink} | nft -f {script}"
            );
        }
    }
}

/// `update` back and forth between `a` and `b` (one replica more, one
/// less), 2 × `rounds` times, in this namespace's real nftables.
fn kernel_updates(mut fw: NftablesFirewall, a: &Ruleset, b: &Ruleset, rounds: usize) -> String {
    apply(&mut fw, a).unwrap();
    let mut times = Vec::new();
    for _ in 0..rounds {
        for (from, to) in [(a, b), (b, a)] {
            let t = Instant::now();
            fw.update(from, to).unwrap();
            times.push(t.elapsed());
        }
    }
    segctl::firewall::remove_all(&mut fw).unwrap();
    times.sort();
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    format!("{} / {}", ms(support::pct(&times, 0.5)), ms(support::pct(&times, 0.99)))
}
