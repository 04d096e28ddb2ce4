//! `segctl secret rotate|status|hook` end to end: the real controller binary
//! on temporary directories, driven by the real commands. No Docker needed
//! (the controller points at a socket that does not exist); consumers and
//! post-rotate actions against the real engine are in `tests/e2e/rotation.rs`.
//! Needs root, like the controller.

mod support;

use std::time::{Duration, Instant};
use support::node::{text, Node};

/// The access log's hook entries.
fn hook_lines(node: &Node) -> Vec<serde_json::Value> {
    node.access_log()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["action"] == "hook")
        .collect()
}

fn current(node: &Node) -> Vec<u8> {
    node.cli(&["secret", "get", "db", "--force"]).stdout
}

#[test]
fn hooks_survive_a_restart_and_guard_every_new_version() {
    let mut node = Node::start();
    node.cli_stdin(&["secret", "put", "db", "--from-stdin"], b"old-password-1");
    let seen = node.path("seen");
    let accepting =
        format!("cat > {}; echo \"$SEG_HOOK $SEG_SECRET_NAME $SEG_SECRET_VERSION\" >> {0}", seen.display());
    let shown = node.ok(&["secret", "hook", "db", "--pre-rotate", &accepting, "--timeout", "5s"]);
    assert!(shown.contains("pre-rotate   cat >") && shown.contains("(timeout 5s)"), "{shown}");
    node.restart();
    let shown = node.ok(&["secret", "hook", "db", "-o", "json"]);
    let hooks: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(hooks["pre_rotate"]["timeout_ms"], 5000, "{shown}");

    let out = node.cli_stdin(&["secret", "rotate", "db", "--from-stdin"], b"new-password-2");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.starts_with("rotated secret db to version 2 (pre-rotate hook: exit 0 in"), "{said}");
    assert!(said.trim_end().ends_with("pushed to 0 consumer(s)"), "{said}");
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), "new-password-2pre-rotate db 2\n");

    let failing = "cat >/dev/null; echo 'ERROR: role \"app\" does not exist' >&2; exit 4";
    node.ok(&["secret", "hook", "db", "--pre-rotate", failing]);
    for cmd in [&["secret", "rotate", "db", "--from-stdin"][..], &["secret", "put", "db", "--from-stdin"]] {
        let out = node.cli_stdin(cmd, b"new-password-3");
        assert_eq!(out.status.code(), Some(1), "{cmd:?} must fail");
        let err = text(&out.stderr);
        assert!(err.contains("pre-rotate hook of db failed (exit 4)"), "{err}");
        assert!(
            err.contains("version 2 stays current") && err.contains("role \"app\" does not exist"),
            "{err}"
        );
        assert!(!err.contains("new-password-3"), "{err}");
    }
    assert_eq!(current(&node), b"new-password-2");
    let statuses: Vec<String> =
        hook_lines(&node).iter().map(|l| l["hook"]["status"].as_str().unwrap().to_owned()).collect();
    assert_eq!(statuses, ["exit 0", "exit 4", "exit 4"]);
    assert!(!node.access_log().contains("password-"));

    node.ok(&["secret", "hook", "db", "--no-pre-rotate"]);
    let out = node.cli_stdin(&["secret", "rotate", "db", "--from-stdin"], b"new-password-4");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(current(&node), b"new-password-4");
}

#[test]
fn rotate_status_and_their_errors_without_consumers() {
    let node = Node::start();
    let out = node.cli(&["secret", "rotate", "db", "--generate", "16"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("does not exist; create it with `segctl secret put`"),
        "{}",
        text(&out.stderr)
    );
    let usage = node.cli(&["secret", "rotate", "db", "--generate", "16", "--timeout", "5s"]);
    assert_eq!(usage.status.code(), Some(2), "--timeout needs --wait");

    node.ok(&["secret", "put", "db", "--generate", "16"]);
    let started = Instant::now();
    let said = node.ok(&[
        "secret",
        "rotate",
        "db",
        "--generate",
        "16",
        "--wait",
        "--timeout",
        "10s",
        "--grace",
        "1m",
    ]);
    assert!(said.contains("all 0 consumer(s) have version 2"), "{said}");
    assert!(started.elapsed() < Duration::from_secs(5), "nothing to wait for: {:?}", started.elapsed());
    let table = node.ok(&["secret", "status", "db"]);
    assert!(table.starts_with("secret db: version 2, rotated "), "{table}");
    // Nobody consumes it, so nobody is waited for: its grace period is over.
    assert!(
        table.contains("previous version 1: no longer readable") && table.contains("no consumers"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&node.ok(&["secret", "status", "db", "-o", "json"])).unwrap();
    assert_eq!((json["version"].as_u64(), json["complete"].as_bool()), (Some(2), Some(true)));
    assert_eq!(json["previous"]["readable"], false);
    let (until, rotated) = (json["previous"]["until_ms"].as_u64(), json["rotated_at_ms"].as_u64());
    assert_eq!(until.unwrap() - rotated.unwrap(), 60_000, "--grace 1m sets the longest grace");
    let missing = node.cli(&["secret", "status", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("secret nope does not exist"), "{}", text(&missing.stderr));
    let status = node.ok(&["status", "--exit-zero"]);
    assert!(status.contains("(0 watch stream(s) open)"), "{status}");
}
