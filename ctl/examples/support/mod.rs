//! What the firewall benchmarks share: running inside a throwaway network
//! namespace, the backend argument, the two backends' bare tools, and the
//! statistics they print. Each example uses part of it.
#![allow(dead_code)] // every example includes this module and uses a different part

use segctl::firewall::{Backend, Firewall, IptablesFirewall, NftablesFirewall};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Docker's hooks as an iptables host has them: `FORWARD` → `DOCKER-USER`.
pub const DOCKER_HOOKS: &str =
    "*filter\n:DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j RETURN\nCOMMIT\n";

/// Splits the command line into backends (a leading `iptables`,
/// `nftables` or `both`; `default` when absent) and numbers.
pub fn args(default: &[Backend]) -> (Vec<Backend>, Vec<usize>) {
    let mut words: Vec<String> = std::env::args().skip(1).collect();
    let backends = match words.first().map(String::as_str) {
        Some("iptables") => vec![Backend::Iptables],
        Some("nftables") => vec![Backend::Nftables],
        Some("both") => vec![Backend::Iptables, Backend::Nftables],
        _ => default.to_vec(),
    };
    if words.first().is_some_and(|w| w.parse::<usize>().is_err()) {
        words.remove(0);
    }
    (backends, words.iter().map(|a| a.parse().expect("numbers after the backend")).collect())
}

/// The firewall of the current network namespace for `backend`. With
/// `SEG_BENCH_NFT_SCRIPT=1` the nftables backend writes every change with
/// `nft -f` (no netlink batches): the baseline of the netlink path.
pub fn firewall(backend: Backend) -> Box<dyn Firewall + Send> {
    match backend {
        Backend::Iptables => Box::new(IptablesFirewall::new()),
        Backend::Nftables if std::env::var_os("SEG_BENCH_NFT_SCRIPT").is_some() => {
            Box::new(NftablesFirewall::new().nft_only())
        }
        Backend::Nftables => Box::new(NftablesFirewall::new()),
    }
}

/// Whether this process already runs inside the namespace `rerun_in_netns` made.
pub fn inside(flag: &str) -> bool {
    std::env::var_os(flag).is_some()
}

/// Re-runs this binary with the same arguments inside a fresh network
/// namespace (its own iptables and nftables rulesets, empty), so every tool
/// it starts works there directly and the host's rules are never touched.
pub fn rerun_in_netns(name: &str, flag: &str) {
    let ns = format!("{name}-{}", std::process::id());
    run(&["ip", "netns", "add", &ns]);
    let status = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(std::env::current_exe().unwrap())
        .args(std::env::args().skip(1))
        .env(flag, "1")
        .status();
    run(&["ip", "netns", "del", &ns]);
    assert!(status.expect("run inside the namespace").success(), "benchmark failed");
}

pub fn run(args: &[&str]) {
    let ok = Command::new(args[0]).args(&args[1..]).status().is_ok_and(|s| s.success());
    assert!(ok, "{args:?} failed");
}

/// Runs `program args` with `text` on stdin; how long it took.
pub fn feed(program: &str, args: &[&str], text: &str) -> Duration {
    let t = Instant::now();
    let mut child = Command::new(program).args(args).stdin(Stdio::piped()).spawn().expect(program);
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "{program} {args:?} failed");
    t.elapsed()
}

/// One `iptables-restore --noflush` (the iptables backend's transaction).
pub fn iptables_restore(text: &str) -> Duration {
    feed("iptables-restore", &["--noflush"], text)
}

/// One `nft -f -` (the nftables backend's transaction).
pub fn nft_script(text: &str) -> Duration {
    feed("nft", &["-f", "-"], text)
}

pub fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The `p` quantile of sorted samples.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

pub fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}
