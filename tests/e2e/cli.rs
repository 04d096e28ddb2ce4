//! segctl's admin commands fail clearly (message, non-zero exit, no panic,
//! nothing stored) on bad input and when no controller is running.

use seg_e2e::*;
use std::time::Duration;

fn assert_clear_failure(out: &Out, what: &str, hint: &[&str]) {
    assert!(!out.success(), "{what}: succeeded: {}", out.text());
    assert_ne!(out.code(), 101, "{what}: panicked: {}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{what}: panicked: {}", out.stderr);
    let msg = out.stderr.to_lowercase();
    assert!(!msg.trim().is_empty(), "{what}: no message on stderr");
    assert!(
        hint.iter().any(|h| msg.contains(h)),
        "{what}: message mentions none of {hint:?}: {}",
        out.stderr
    );
}

#[test]
fn every_command_fails_clearly_without_a_controller() {
    let _serial = begin();
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().to_str().unwrap();
    let cases: [&[&str]; 10] = [
        &["status"],
        &["secret", "ls"],
        &["secret", "ls", "-o", "json"],
        &["secret", "put", "db", "--generate", "8"],
        &["secret", "put", "db", "--from-stdin"],
        &["secret", "get", "db"],
        &["secret", "rm", "db"],
        &["secret", "grant", "db", "--to", "p/app"],
        &["secret", "revoke", "db", "--from", "p/app"],
        &["secret", "ttl", "db", "30s"],
    ];
    for args in cases {
        let mut cmd = std::process::Command::new(segctl_bin());
        cmd.env("SEG_RUN_DIR", run_dir).args(args);
        let out = run_with_stdin(&mut cmd, Some(b"value"), Duration::from_secs(20));
        assert_clear_failure(&out, &args.join(" "), &["admin.sock", "running", "controller", "connect"]);
    }
}

#[test]
fn bad_input_fails_clearly_and_stores_nothing() {
    let _serial = begin();
    let ctl = Controller::start();
    let base = ctl.base_dir().to_owned();
    let big = base.join("big");
    write_private(&big, &vec![b'x'; 600 * 1024]);
    let big = big.to_str().unwrap();
    let missing = base.join("does-not-exist");
    let missing = missing.to_str().unwrap();

    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (vec!["secret", "put", "db", "--from-file", missing], &["does-not-exist", "no such file"]),
        (vec!["secret", "put", "db", "--from-file", big], &["limit", "large", "524288", "512"]),
        (vec!["secret", "put", "Bad Name", "--generate", "8"], &["name"]),
        (vec!["secret", "put", "db", "--generate", "8", "--ttl", "0s"], &["ttl", "lease"]),
        (vec!["secret", "put", "db", "--generate", "8", "--ttl", "forever"], &["ttl", "duration", "invalid"]),
        (vec!["secret", "put", "db"], &["generate", "from-file", "from-stdin"]),
        (vec!["secret", "grant", "db", "--to", "a/b/c"], &["service", "invalid"]),
        (vec!["secret", "grant", "nope", "--to", "p/app"], &["nope", "not exist", "not found"]),
        (vec!["secret", "grant", "../x", "--to", "p/app"], &["name"]),
        (vec!["secret", "get", "nope"], &["nope", "not exist", "not found"]),
        (vec!["secret", "get", "a/b"], &["name"]),
        (vec!["secret", "rm", "nope"], &["nope", "not exist", "not found"]),
        (vec!["secret", "revoke", "nope", "--from", "p/app"], &["nope", "not exist", "not found"]),
        (vec!["secret", "ttl", "nope", "30s"], &["nope", "not exist", "not found"]),
        (vec!["secret", "ttl", "db", "25h"], &["ttl", "24h", "range"]),
        (vec!["secret", "ls", "-o", "xml"], &["xml", "invalid", "possible"]),
    ];
    for (args, hint) in &cases {
        let out = ctl.segctl(args);
        assert_clear_failure(&out, &args.join(" "), hint);
    }
    let out = ctl.segctl_stdin(&["secret", "put", "db", "--from-stdin"], Some(&vec![b'y'; 600 * 1024]));
    assert_clear_failure(&out, "put --from-stdin 600 KiB", &["limit", "large", "524288", "512"]);

    assert!(ctl.list().is_empty(), "something was stored: {:?}", ctl.list());
    // The controller is still fine after all that.
    ctl.put("db", b"fine", &[]);
    assert_eq!(ctl.admin_get("db"), (200, b"fine".to_vec()));
}
