//! Clobbering repaired at once, on the real host firewall: a controller
//! whose periodic resync is an hour away puts back, within a fraction of a
//! second — only the kernel's nftables change notifications (which
//! iptables-nft's changes raise too) can have brought the repair:
//! - iptables backend: a flushed `SEG-` chain, a deleted `DOCKER-USER` jump,
//!   a flushed `DOCKER-USER`;
//! - nftables backend: `nft flush table inet seg`, the hook's base chain
//!   deleted, the whole table deleted.
//!
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

/// Runs `tamper`, then polls until `state()` is `healthy` again; how long that took.
fn time_repair(ctl: &Controller, healthy: &str, state: fn() -> String, tamper: &mut Command) -> Duration {
    ok(tamper);
    let started = Instant::now();
    loop {
        if state() == healthy {
            return started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(5) {
            let now = state();
            let missing: Vec<&str> = healthy.lines().filter(|l| !now.lines().any(|n| n == *l)).collect();
            let extra: Vec<&str> = now.lines().filter(|l| !healthy.lines().any(|h| h == *l)).collect();
            panic!(
                "{tamper:?} was not repaired in 5 s: missing {missing:#?}, extra {extra:#?}; controller log:\n{}",
                ctl.log_text().lines().filter(|l| !l.contains("access:")).collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn iptables(args: &[&str]) -> Command {
    let mut c = Command::new("iptables");
    c.args(args);
    c
}

/// One `nft -f` transaction.
fn nft(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", &format!("printf '%s\\n' '{script}' | nft -f -")]);
    c
}

fn report(backend: &str, mut took: Vec<Duration>) {
    took.sort();
    let (p50, p99) = (took[took.len() / 2], took[took.len() * 99 / 100]);
    eprintln!(
        "{backend}: clobber → repaired over {} tamperings: p50 {p50:?}, p99 {p99:?}, max {:?}",
        took.len(),
        took[took.len() - 1]
    );
    assert!(p99 < Duration::from_secs(1), "repairs took up to {p99:?}: not the notifications");
}

/// A controller (resync: 1 h) enforcing a one-service policy on a running container.
fn enforcing(dir: &std::path::Path, firewall: &str, project: &str) -> (Controller, Cleanup) {
    build_image();
    let ctl = Controller::start_with(dir, None, None, &["--resync-interval", "1h", "--firewall", firewall]);
    let db = format!("{project}-db");
    let mut rm = docker(None);
    rm.args(["rm", "-f", &db]);
    let labels =
        [format!("com.docker.compose.project={project}"), "com.docker.compose.service=db".to_owned()];
    ok(docker(None).args([
        "run", "-d", "--name", &db, "--label", &labels[0], "--label", &labels[1], IMAGE, "sleep", "600",
    ]));
    let file = dir.join("seg-policy.yaml");
    std::fs::write(&file, POLICY.replace("PROJECT", project)).unwrap();
    ctl.ok(&["policy", "apply", "-f", file.to_str().unwrap()]);
    (ctl, Cleanup(vec![rm]))
}

fn assert_repaired_by_notifications(ctl: &Controller) {
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
    let dir = tempfile::tempdir().unwrap();
    let (ctl, _cleanup) = enforcing(dir.path(), "iptables", &format!("segt-clobber-{}", tag()));
    eventually("db's ingress chain", Duration::from_secs(5), || seg_rules(None).contains(":SEG-IN-"));
    let healthy = seg_only();
    let chain = healthy
        .lines()
        .find_map(|l| l.strip_prefix(":SEG-IN-"))
        .map(|c| format!("SEG-IN-{}", c.split_whitespace().next().unwrap()))
        .unwrap_or_else(|| panic!("a service's ingress chain in:\n{healthy}"));
    let mut took = Vec::new();
    for _ in 0..10 {
        took.push(time_repair(&ctl, &healthy, seg_only, &mut iptables(&["-F", &chain])));
        took.push(time_repair(
            &ctl,
            &healthy,
            seg_only,
            &mut iptables(&["-D", "DOCKER-USER", "-j", "SEG-FORWARD"]),
        ));
        took.push(time_repair(&ctl, &healthy, seg_only, &mut iptables(&["-F", "DOCKER-USER"])));
    }
    report("iptables", took);
    assert_repaired_by_notifications(&ctl);
}

#[test]
fn the_nftables_table_flushed_unhooked_or_deleted_is_back_at_once() {
    let _lock = HostLock::take();
    let _reset = FirewallReset;
    let dir = tempfile::tempdir().unwrap();
    let (ctl, _cleanup) = enforcing(dir.path(), "nftables", &format!("segt-clobber-{}", tag()));
    eventually("seg's nftables table", Duration::from_secs(5), || seg_table().contains("SEG-FORWARD"));
    let healthy = seg_table();
    let mut took = Vec::new();
    for _ in 0..10 {
        took.push(time_repair(&ctl, &healthy, seg_table, &mut nft("flush table inet seg")));
        let unhook = "flush chain inet seg SEG-FORWARD\ndelete chain inet seg SEG-FORWARD";
        took.push(time_repair(&ctl, &healthy, seg_table, &mut nft(unhook)));
        took.push(time_repair(&ctl, &healthy, seg_table, &mut nft("delete table inet seg")));
    }
    report("nftables", took);
    assert_repaired_by_notifications(&ctl);
    ctl.stop();
    // Stopping leaves the rules (fail closed): remove them, as FirewallReset does for iptables.
    let _ = Command::new("nft").args(["delete", "table", "inet", "seg"]).status();
}
