//! Benchmark: `segctl audit -o json` over N running containers (default 100).
//!
//! ```text
//! cargo build --release -p segctl
//! cargo run --release -p segctl --example audit_bench -- target/release/segctl [N] [RUNS]
//! ```
//!
//! Builds `segt-audit-busybox:1` FROM scratch if missing, starts N `sleep`
//! containers named `segt-bench-<i>-<pid>`, times RUNS audits (plus one
//! warm-up), prints min/median/max wall time, and removes the containers
//! (also when interrupted by a panic). Needs root and dockerd.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const IMAGE: &str = "segt-audit-busybox:1";

struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for chunk in self.0.chunks(50) {
            let _ = Command::new("docker").args(["rm", "-f"]).args(chunk).stdout(Stdio::null()).status();
        }
    }
}

fn ensure_image() {
    let have = Command::new("docker").args(["image", "inspect", IMAGE]).stdout(Stdio::null()).status();
    if have.is_ok_and(|s| s.success()) {
        return;
    }
    let ctx = std::env::temp_dir().join(format!("segt-bench-ctx-{}", std::process::id()));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::copy("/bin/busybox", ctx.join("busybox")).expect("/bin/busybox");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    )
    .unwrap();
    let ok = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", IMAGE])
        .arg(&ctx)
        .status();
    let _ = std::fs::remove_dir_all(&ctx);
    assert!(ok.is_ok_and(|s| s.success()), "cannot build {IMAGE}");
}

/// Starts the containers on 4 threads (dockerd serializes much of it anyway).
fn start(names: &[String]) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(name) = names.get(i) else { break };
                let ok = Command::new("docker")
                    .args([
                        "run",
                        "-d",
                        "--name",
                        name,
                        "--label",
                        "segt-bench=1",
                        IMAGE,
                        "/bin/sleep",
                        "3600",
                    ])
                    .stdout(Stdio::null())
                    .status();
                assert!(ok.is_ok_and(|s| s.success()), "cannot start {name}");
            });
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let segctl = args.get(1).cloned().unwrap_or_else(|| "target/release/segctl".into());
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
    let runs: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(7);
    ensure_image();
    let names: Vec<String> = (0..n).map(|i| format!("segt-bench-{i}-{}", std::process::id())).collect();
    let _cleanup = Cleanup(names.clone());
    let t = Instant::now();
    start(&names);
    println!("started {n} containers in {:.1} s", t.elapsed().as_secs_f64());
    let running = Command::new("docker").args(["ps", "-q"]).output().unwrap().stdout;
    let total = running.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
    let mut times: Vec<Duration> = Vec::new();
    for run in 0..=runs {
        let t = Instant::now();
        let out = Command::new(&segctl)
            .args(["audit", "-o", "json", "--fail-on", "never"])
            .stderr(Stdio::inherit())
            .output()
            .expect("segctl runs");
        let elapsed = t.elapsed();
        assert!(out.status.success(), "segctl audit failed");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
        if run == 0 {
            println!(
                "warm-up: {} containers audited, {} findings, reported duration {} ms",
                report["host"]["containers"],
                report["findings"].as_array().map_or(0, |f| f.len()),
                report["duration_ms"]
            );
            continue;
        }
        times.push(elapsed);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "segctl audit -o json, {total} running containers, {runs} runs: min {:.0} ms, median {:.0} ms, max {:.0} ms",
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
}
