//! Errors as `segctl` prints them (`{:#}`: the error, then each `source`):
//! every cause is said once. A variant either quotes its cause in its
//! message or exposes it as `source`, never both; these pin the exact text
//! of a few errors that pass through several layers.

use segctl::node::access_log::AccessLog;
use segctl::node::NodeError;
use segctl::store::EmbeddedStore;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const ENOENT: &str = "No such file or directory (os error 2)";

/// What `main` prints after `segctl: error: `.
fn rendered(err: impl Into<anyhow::Error>, context: &'static str) -> String {
    format!("{:#}", err.into().context(context))
}

/// No `: `-separated clause of `line` appears twice.
fn assert_each_clause_once(line: &str) {
    let clauses: Vec<&str> = line.split(": ").collect();
    for (i, clause) in clauses.iter().enumerate() {
        assert!(!clauses[i + 1..].contains(clause), "`{clause}` is said twice in: {line}");
    }
}

fn private_dir(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn missing_master_key_next_to_secrets_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    private_dir(&state.join("secrets"));
    std::fs::write(state.join("secrets/db.json"), b"{}").unwrap();
    let err = EmbeddedStore::open(&state).unwrap_err();
    let line = rendered(NodeError::from(err), "cannot start the seg controller");
    let key = state.join("master.key");
    assert_eq!(
        line,
        format!(
            "cannot start the seg controller: cannot open the secret store: loading master key {}: it is \
             missing but 1 sealed secret file(s) exist; restore master.key from your backup (a new key \
             could not decrypt them)",
            key.display()
        )
    );
    assert_each_clause_once(&line);
}

/// The same through the binary: what `segctl node run` prints and exits with.
#[test]
fn node_run_without_its_master_key_says_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    private_dir(&state.join("secrets"));
    std::fs::write(state.join("secrets/db.json"), b"{}").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_segctl"))
        .args(["node", "run", "--state-dir"])
        .arg(&state)
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .args(["--docker-socket", "/nonexistent/docker.sock"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!(
            "segctl: error: cannot start the seg controller: cannot open the secret store: loading master key \
             {}: it is missing but 1 sealed secret file(s) exist; restore master.key from your backup (a new \
             key could not decrypt them)",
            state.join("master.key").display()
        )
    );
}

#[test]
fn access_log_that_cannot_be_opened_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir/access.log");
    let Err(err) = AccessLog::open(&path) else { panic!("opened {}", path.display()) };
    let line = rendered(NodeError::from(err), "cannot start the seg controller");
    assert_eq!(
        line,
        format!("cannot start the seg controller: cannot open the access log {}: {ENOENT}", path.display())
    );
    assert_each_clause_once(&line);
}

#[test]
fn unreadable_policy_file_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.yaml");
    let err = segctl::policy::lint(&path).unwrap_err();
    let line = rendered(err, "cannot lint the policy");
    assert_eq!(line, format!("cannot lint the policy: {}: cannot read: {ENOENT}", path.display()));
    assert_each_clause_once(&line);
}

#[test]
fn damaged_stored_policy_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = segctl::segregation::store::Store::open(dir.path()).unwrap();
    let policies = dir.path().join("policies");
    std::fs::write(policies.join("web.json"), b"not json").unwrap();
    let err = store.load_all().unwrap_err();
    let err = NodeError::from(segctl::segregation::SegregationError::from(err));
    let line = rendered(err, "cannot start the seg controller");
    let prefix = "cannot start the seg controller: cannot load the applied network policies: ";
    assert!(line.starts_with(&format!("{prefix}{}/web.json is damaged (", policies.display())), "{line}");
    assert!(line.ends_with("); move it away and re-apply that policy"), "{line}");
    assert_each_clause_once(&line);
}

#[test]
fn unreadable_daemon_json_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be: reading it fails with EISDIR.
    let path = dir.path().join("daemon.json");
    std::fs::create_dir(&path).unwrap();
    let err = segctl::daemon_json::read_icc(&path).unwrap_err();
    let line = rendered(err, "cannot read the ICC setting");
    assert_eq!(
        line,
        format!("cannot read the ICC setting: cannot read {}: Is a directory (os error 21)", path.display())
    );
    assert_each_clause_once(&line);
}

#[test]
fn nftables_that_cannot_be_used_is_said_once() {
    use segctl::firewall::{select::Unavailable, FirewallError};
    let cause = std::io::Error::from(std::io::ErrorKind::NotFound);
    let err = Unavailable(FirewallError::Spawn { command: "nft -f -".into(), cause });
    let err = NodeError::from(segctl::segregation::SegregationError::from(err));
    let line = rendered(err, "cannot start the seg controller");
    assert_eq!(
        line,
        "cannot start the seg controller: --firewall nftables: nftables cannot be used here; install nftables \
         (nft 1.0+) or use --firewall iptables: cannot run `nft -f -`: entity not found"
    );
    assert_each_clause_once(&line);
}
