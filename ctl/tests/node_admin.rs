//! End to end: the real `segctl node run` binary on temporary state and run
//! directories, driven by the real `segctl` admin commands.
//!
//! Needs root (the controller refuses anything else). Docker is only needed
//! by `status_reports_a_live_docker`; the other tests point the controller at
//! a socket that does not exist, which also shows the admin API working
//! while Docker is down.

mod support;

use seg_common::uds_http::{self, Request};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::node::{segctl, text, Node, BIN};

fn assert_fails(out: &Output, code: i32, needle: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

#[test]
fn secrets_round_trip_through_the_cli() {
    let node = Node::start();
    let file = node.path("db.txt");
    std::fs::write(&file, b"hunter2-from-file\n").unwrap();
    let put = node.ok(&["secret", "put", "db", "--from-file", file.to_str().unwrap()]);
    assert!(put.contains("stored secret db version 1"), "{put}");
    let out = node.cli_stdin(&["secret", "put", "api-key", "--from-stdin", "--ttl", "2m"], b"s3cr3t-stdin");
    assert!(out.status.success(), "{}", text(&out.stderr));
    node.ok(&["secret", "put", "token", "--generate", "40"]);
    node.ok(&["secret", "put", "db", "--from-file", file.to_str().unwrap()]);

    let got = node.cli(&["secret", "get", "db"]);
    assert!(got.status.success(), "{}", text(&got.stderr));
    assert_eq!(got.stdout, b"hunter2-from-file\n");
    let token = node.cli(&["secret", "get", "token"]).stdout;
    assert!(token.len() == 40 && token.iter().all(u8::is_ascii_alphanumeric));

    assert!(node.ok(&["secret", "grant", "db", "--to", "shop/app"]).contains("granted to shop/app"));
    assert!(node.ok(&["secret", "grant", "db", "--to", "shop/app"]).contains("already granted"));
    node.ok(&["secret", "grant", "db", "--to", "*/worker"]);
    node.ok(&["secret", "revoke", "db", "--from", "*/worker"]);
    assert_fails(
        &node.cli(&["secret", "revoke", "db", "--from", "*/worker"]),
        1,
        "has no grant for */worker",
    );
    assert!(node.ok(&["secret", "ttl", "db", "10m"]).contains("lease TTL is now 10m"));

    let table = node.ok(&["secret", "ls"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table
        .lines()
        .any(|l| l.starts_with("db ") && l.contains(" 2 ") && l.contains("10m") && l.ends_with("shop/app")));
    let listed: serde_json::Value = serde_json::from_str(&node.ok(&["secret", "ls", "-o", "json"])).unwrap();
    let api = listed.as_array().unwrap().iter().find(|s| s["name"] == "api-key").unwrap();
    assert_eq!(api["ttl_ms"], 120_000);

    assert!(node.ok(&["secret", "rm", "token"]).contains("removed secret token"));
    assert_fails(&node.cli(&["secret", "get", "token"]), 1, "does not exist");
    assert_fails(&node.cli(&["secret", "rm", "token"]), 1, "does not exist");

    let status = node.ok(&["status", "--exit-zero"]);
    assert!(status.contains("2 secret(s)") && status.contains("unreachable"), "{status}");
    // Not ready while Docker is unreachable: a script waiting for readiness can tell.
    let out = node.cli(&["status"]);
    assert_fails(&out, 3, "not ready: the controller cannot reach Docker");
    assert!(String::from_utf8_lossy(&out.stdout).contains("unreachable"), "the report is printed too");

    let log = node.access_log();
    for value in ["hunter2", "s3cr3t", std::str::from_utf8(&token).unwrap()] {
        assert!(!log.contains(value), "access log leaks a value:\n{log}");
    }
    let actions: Vec<String> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["action"].as_str().unwrap().to_owned())
        .collect();
    for want in ["put", "read", "grant", "revoke", "ttl", "list", "remove", "status"] {
        assert!(actions.iter().any(|a| a == want), "no {want} in {actions:?}");
    }
}

#[test]
fn bad_inputs_are_explained() {
    let node = Node::start();
    let missing = node.path("missing.txt");
    let out = node.cli(&["secret", "put", "db", "--from-file", missing.to_str().unwrap()]);
    assert_fails(&out, 1, &format!("cannot read {}: No such file", missing.display()));
    assert_fails(
        &node.cli(&["secret", "put", "Bad/Name", "--generate", "8"]),
        2,
        "must start with a lowercase letter",
    );
    assert_fails(&node.cli(&["secret", "get", "db/x"]), 2, "'/'");

    let big = node.path("big.bin");
    std::fs::write(&big, vec![b'x'; 600 * 1024]).unwrap();
    let out = node.cli(&["secret", "put", "big", "--from-file", big.to_str().unwrap()]);
    assert_fails(&out, 1, "is 614400 bytes; the limit is 524288 (512 KiB)");
    let out = node.cli_stdin(&["secret", "put", "big", "--from-stdin"], &vec![b'x'; 600 * 1024]);
    assert_fails(&out, 1, "standard input holds more than 524288 bytes");
    assert_fails(&node.cli_stdin(&["secret", "put", "e", "--from-stdin"], b""), 1, "the value is empty");
    assert_fails(&node.cli(&["secret", "put", "t", "--generate", "8", "--ttl", "5"]), 2, "not a duration");
    assert_fails(&node.cli(&["secret", "ttl", "t", "25h"]), 2, "use 1s to 24h");
    assert_fails(&node.cli(&["secret", "grant", "t", "--to", "a/b/c"]), 2, "PROJECT/SERVICE");
    assert_fails(&node.cli(&["secret", "grant", "nope", "--to", "app"]), 1, "secret nope does not exist");
    assert!(node.cli(&["secret", "ls", "-o", "json"]).stdout.starts_with(b"[]"));
}

#[test]
fn a_missing_controller_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let out = segctl(dir.path(), &["status"], None);
    let sock = dir.path().join("admin.sock");
    assert_fails(&out, 1, &format!("cannot reach the seg controller at {}", sock.display()));
    assert_fails(&out, 1, "Start it with `segctl node run`");
    let out = segctl(dir.path(), &["secret", "put", "db", "--generate", "8"], None);
    assert_fails(&out, 1, "cannot reach the seg controller");
}

#[test]
fn host_processes_are_refused_on_the_agent_socket() {
    let node = Node::start();
    node.ok(&["secret", "put", "db", "--generate", "16"]);
    node.ok(&["secret", "grant", "db", "--to", "*/app"]);
    let agent = node.run_dir().join("agent/agent.sock");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let resp = rt
        .block_on(uds_http::send(&agent, &Request::get("/v1/secrets/db"), Duration::from_secs(5), 4096))
        .unwrap();
    assert_eq!(resp.status, 403);
    let err: seg_common::api::ApiError = resp.json().unwrap();
    assert_eq!(err.code, "not_a_container", "{}", err.error);

    let log = node.access_log();
    let denial = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["socket"] == "agent")
        .unwrap_or_else(|| panic!("no agent line in:\n{log}"));
    assert_eq!(denial["outcome"], "denied");
    assert_eq!(denial["action"], "read");
    assert_eq!(denial["pid"], std::process::id());
    assert_eq!(denial["identity"], "-");

    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&node.run_dir().join("admin.sock")), 0o600);
    assert_eq!(mode(&agent), 0o666);
    assert_eq!(mode(&node.run_dir().join("agent")), 0o755);
    assert_eq!(mode(&node.path("state")), 0o700);
    assert_eq!(mode(&node.path("state/access.log")), 0o600);
}

#[test]
fn restart_keeps_secrets_and_the_agent_dir() {
    let mut node = Node::start();
    node.ok(&["secret", "put", "db", "--generate", "24"]);
    node.ok(&["secret", "grant", "db", "--to", "shop/app"]);
    let before = node.cli(&["secret", "get", "db"]).stdout;
    let agent_dir = node.run_dir().join("agent");
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let dir_inode = inode(&agent_dir);
    node.stop();
    assert!(!node.run_dir().join("admin.sock").exists(), "admin.sock left behind");
    assert!(agent_dir.is_dir(), "the agent dir must survive a stop");

    node.spawn();
    assert_eq!(node.cli(&["secret", "get", "db"]).stdout, before);
    assert!(node.ok(&["secret", "ls"]).contains("shop/app"));
    assert_eq!(inode(&agent_dir), dir_inode, "the agent dir was re-created");
}

#[test]
fn a_second_controller_refuses_to_start() {
    let node = Node::start();
    let out = Command::new(BIN)
        .args(["node", "run", "--state-dir"])
        .arg(node.path("state"))
        .arg("--run-dir")
        .arg(node.run_dir())
        .arg("--docker-socket")
        .arg(node.path("no-docker.sock"))
        .output()
        .unwrap();
    assert_fails(&out, 1, "another seg controller is already running");
    assert!(node.ok(&["status", "--exit-zero"]).contains("controller"), "the first one must keep running");
}

#[test]
fn the_controller_requires_root() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN, "node", "run", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .output()
        .expect("setpriv (util-linux) runs the binary as nobody");
    assert_fails(&out, 1, "must run as root");
    assert!(!dir.path().join("state").exists(), "nothing may be created before the root check");
}

#[test]
fn status_reports_a_live_docker() {
    let node = Node::start_with_docker(Some("/var/run/docker.sock"));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = node.ok(&["status", "--exit-zero"]);
        if status.contains("ok (API") {
            break;
        }
        assert!(Instant::now() < deadline, "Docker never became ready; is dockerd running?\n{status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Ready: plain `status` exits 0 now.
    let json: serde_json::Value = serde_json::from_str(&node.ok(&["status", "-o", "json"])).unwrap();
    assert!(json["docker"].as_str().unwrap().starts_with("ok (API"), "{json}");
}
