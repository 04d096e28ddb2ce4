//! The nftables side of fw_bench: one `nft` process per rule and per set
//! element (what a tool without transactions does), against seg's one script.

use super::support::{ms, nft_script, us};
use segctl::firewall::nft_model::{render_full, NftTable, FAMILY_TABLE};
use segctl::firewall::nft_render::to_nft;
use segctl::firewall::{compile, synth, NftablesFirewall};
use std::process::Command;
use std::time::Instant;

/// seg's rules and elements in the kernel now.
pub fn live_rules() -> usize {
    NftablesFirewall::new().live().unwrap().map_or(0, |t| t.rule_count())
}

/// Each rule as its own `nft add rule …` and each element as its own
/// `nft add element …`, in the table's order (chains and sets declared first,
/// in one script: declarations are not what is compared).
fn commands(table: &NftTable) -> Vec<String> {
    let mut out = Vec::new();
    for (name, set) in &table.sets {
        for (elem, verdict) in &set.elems {
            let value = verdict.as_ref().map_or(String::new(), |v| format!(" : {v}"));
            out.push(format!("add element {FAMILY_TABLE} {name} {{ {elem}{value} }}"));
        }
    }
    for (name, chain) in &table.chains {
        for (rule, tag) in chain.rules.iter().zip(&chain.tags) {
            out.push(format!("add rule {FAMILY_TABLE} {name} {rule} comment \"{tag}\""));
        }
    }
    out
}

/// The table with no rules and no elements: what the per-rule processes fill.
fn declarations(table: &NftTable) -> NftTable {
    let mut empty = table.clone();
    for chain in empty.chains.values_mut() {
        let chain = std::sync::Arc::make_mut(chain);
        chain.rules.clear();
        chain.tags.clear();
    }
    for set in empty.sets.values_mut() {
        std::sync::Arc::make_mut(set).elems.clear();
    }
    empty
}

/// One process per rule or element: all of them, or `sample` spread evenly
/// over the table (so rules and elements of every kind are in it) and the
/// time per process extrapolated to all.
pub fn per_rule(projects: usize, replicas: usize, sample: usize) {
    super::reset();
    let (policies, inv) = synth::scenario(projects, replicas);
    let table = to_nft(&compile(&policies, &inv)).unwrap();
    nft_script(&render_full(&declarations(&table)));
    let all = commands(&table);
    let step = all.len().div_ceil(sample.min(all.len()).max(1));
    let picked: Vec<&String> = all.iter().step_by(step).collect();
    let t = Instant::now();
    for line in &picked {
        // nft joins its arguments into one command line: the line as one word.
        let ok = Command::new("nft").arg(line.as_str()).status().is_ok_and(|s| s.success());
        assert!(ok, "nft {line}");
    }
    let per = t.elapsed() / picked.len() as u32;
    let how = if picked.len() == all.len() { "measured, all" } else { "a sample, extrapolated" };
    println!(
        "one `nft add rule|element` per rule: {} per process over {} of {} → ~{} for all ({how})",
        us(per),
        picked.len(),
        all.len(),
        ms(per * all.len() as u32)
    );
}
