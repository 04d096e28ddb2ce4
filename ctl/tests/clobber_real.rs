//! Clobbering repaired at once, on the real host firewall: a controller
//! whose periodic resync is an hour away puts back a flushed `SEG-` chain,
//! a deleted `DOCKER-USER` jump and a flushed `DOCKER-USER` within a
//! fraction of a second — only the kernel's nftables change notifications
//! (which iptables-nft's changes raise) can have brought the repair.
//! Prints clobber → repaired figures (`docs/benchmarks.md`).
//!
//! Takes `/run/seg-host-firewall.lock` and removes seg's chains when done.
//! Needs root, iptables-nft, dockerd on /var/run/docker.sock; fails, never
//! skips, without them. Run: `cargo test -p segctl --test clobber_real -- --nocapture`.

mod segregation_support;

use segregation_support::*;
use std::process::Command;
use std::time::{Duration, Instant};

const POLICY: &str = "version: 1\nproject: PROJECT\nservices:\n  db: { ingress: [{ from: [api], ports: [5432/tcp] }] }\n  api: { ingress: any }\n";

/// seg's own lines only (a flushed `DOCKER-USER` also loses Docker's
/// `-j RETURN`, which is Docker's to put back, at its next start).
fn seg_only() -> String {
    seg_rules(None).lines().filter(|l| l.contains("SEG-")).collect::<Vec<_>>().join("\n")
}

/// Runs `tamper`, then polls until seg's rules are `healthy` again; how long that took.
fn time_repair(healthy: &str, tamper: &[&str]) -> Duration {
    ok(Command::new("iptables").args(tamper));
    let started = Instant::now();
    loop {
        if seg_only() == healthy {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "`iptables {}` was not repaired in 5 s",
            tamper.join(" ")
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Docker's own `-A DOCKER-USER -j RETURN` (written at dockerd's start) is
/// put back when the test ends, as other tests expect it.
struct DockerReturn(bool);

impl Drop for DockerReturn {
    fn drop(&mut self) {
        if self.0 && !seg_rules(None).contains("-A DOCKER-USER -j RETURN") {
            let _ = Command::new("iptables").args(["-A", "DOCKER-USER", "-j", "RETURN"]).status();
        }
    }
}

#[test]
fn rules_another_tool_removes_are_back_at_once_without_waiting_for_the_resync() {
    let _lock = HostLock::take();
    let _reset = FirewallReset;
    let _docker_return = DockerReturn(seg_rules(None).contains("-A DOCKER-USER -j RETURN"));
    let version = ok(Command::new("iptables").arg("--version"));
    assert!(
        version.contains("nf_tables"),
        "this test needs iptables-nft (the kernel notifies its changes): {version}"
    );
    build_image();
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start_resyncing(dir.path(), None, None, "1h");
    let project = format!("segt-clobber-{}", tag());
    let db = format!("{project}-db");
    let mut rm = docker(None);
    rm.args(["rm", "-f", &db]);
    let _cleanup = Cleanup(vec![rm]);
    let labels =
        [format!("com.docker.compose.project={project}"), "com.docker.compose.service=db".to_owned()];
    ok(docker(None).args([
        "run", "-d", "--name", &db, "--label", &labels[0], "--label", &labels[1], IMAGE, "sleep", "600",
    ]));
    let file = dir.path().join("seg-policy.yaml");
    std::fs::write(&file, POLICY.replace("PROJECT", &project)).unwrap();
    ctl.ok(&["policy", "apply", "-f", file.to_str().unwrap()]);
    eventually("db's ingress chain", Duration::from_secs(5), || seg_rules(None).contains(":SEG-IN-"));
    let healthy = seg_only();
    let chain = healthy
        .lines()
        .find_map(|l| l.strip_prefix(":SEG-IN-"))
        .map(|c| format!("SEG-IN-{}", c.split_whitespace().next().unwrap()))
        .unwrap_or_else(|| panic!("a service's ingress chain in:\n{healthy}"));

    let mut took = Vec::new();
    for _ in 0..10 {
        took.push(time_repair(&healthy, &["-F", &chain]));
        took.push(time_repair(&healthy, &["-D", "DOCKER-USER", "-j", "SEG-FORWARD"]));
        took.push(time_repair(&healthy, &["-F", "DOCKER-USER"]));
    }
    took.sort();
    let (p50, p99) = (took[took.len() / 2], took[took.len() * 99 / 100]);
    eprintln!(
        "clobber → repaired over {} tamperings: p50 {p50:?}, p99 {p99:?}, max {:?}",
        took.len(),
        took[took.len() - 1]
    );
    assert!(p99 < Duration::from_secs(1), "repairs took up to {p99:?}: not the notifications");
    let log = ctl.log_text();
    assert!(log.contains("changed by another tool and are repaired"), "no repair logged:\n{log}");
    assert!(!log.contains("periodic resync rewrote"), "the hourly resync cannot have run:\n{log}");
    // The repairs' own notifications were recognised (by the committing
    // process the kernel names) and not read back.
    assert!(
        log.contains("nftables change by our own write: not checked"),
        "own writes not recognised:\n{log}"
    );
}
