//! Lines, the file, and the rate limit and rotation working together.

use super::limiter::Limits;
use super::sink::Rotation;
use super::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn formats_utc_timestamps() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59Z");
}

#[test]
fn line_has_the_documented_fields() {
    let mut e = Entry::new(Socket::Agent, "read");
    e.identity = Some("shop/app".into());
    e.container_id = Some("0123456789ab".into());
    e.pid = Some(42);
    e.secret = Some("db".into());
    e.version = Some(3);
    e.outcome = RequestOutcome::Denied;
    e.reason = "not granted".into();
    let line = render(&e, 1_795_891_211_197);
    assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["ts"], "2026-11-28T18:40:11.197Z");
    assert!(v.get("attempted_version").is_none());
    assert_eq!(v["socket"], "agent");
    assert_eq!(v["action"], "read");
    assert_eq!(v["identity"], "shop/app");
    assert_eq!(v["container_id"], "0123456789ab");
    assert_eq!(v["pid"], 42);
    assert_eq!(v["secret"], "db");
    assert_eq!(v["version"], 3);
    assert_eq!(v["outcome"], "denied");
    assert_eq!(v["reason"], "not granted");
}

#[test]
fn hook_runs_carry_a_hook_object() {
    let mut e = Entry::new(Socket::Admin, "hook");
    e.secret = Some("db".into());
    e.hook = Some(HookLog {
        kind: "pre-rotate",
        action: "command".into(),
        target: "shop/db".into(),
        container: Some("shop-db-1 (0123456789ab)".into()),
        status: "exit 3".into(),
        duration_ms: 12,
    });
    e.attempted_version = Some(4);
    let v: serde_json::Value = serde_json::from_str(&render(&e, 0)).unwrap();
    assert_eq!(
        (&v["ts"], &v["attempted_version"], &v["version"]),
        (&"1970-01-01T00:00:00.000Z".into(), &4.into(), &serde_json::Value::Null)
    );
    assert_eq!(v["hook"]["container"], "shop-db-1 (0123456789ab)");
    assert_eq!(v["hook"]["kind"], "pre-rotate");
    assert_eq!(v["hook"]["status"], "exit 3");
    assert_eq!(v["hook"]["duration_ms"], 12);
    let plain: serde_json::Value =
        serde_json::from_str(&render(&Entry::new(Socket::Admin, "list"), 0)).unwrap();
    assert!(plain.get("hook").is_none());
}

#[test]
fn unidentified_callers_show_a_dash() {
    let v: serde_json::Value = serde_json::from_str(&render(&Entry::new(Socket::Admin, "list"), 0)).unwrap();
    assert_eq!(v["identity"], "-");
    assert_eq!(v["container_id"], "-");
    assert_eq!(v["outcome"], "allowed");
}

#[test]
fn file_is_private_and_appended() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let log = AccessLog::open(&path).unwrap();
    log.record(&Entry::new(Socket::Admin, "status"));
    drop(log);
    AccessLog::open(&path).unwrap().record(&Entry::new(Socket::Admin, "list"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 2);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

fn refusal(container: &str) -> Entry {
    let mut e = Entry::new(Socket::Agent, "read");
    e.container_id = Some(container.into());
    e.uid = Some(0);
    e.secret = Some("db".into());
    e.outcome = RequestOutcome::Denied;
    e.reason = "no_identity: the container has no identity labels".into();
    e
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

const T0: u64 = 1_700_000_000_000;

#[test]
fn a_flood_of_refusals_is_cut_to_the_budget_and_summed_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let log = AccessLog::open_with(&path, Options::default()).unwrap();
    let mut ok = Entry::new(Socket::Agent, "read");
    ok.identity = Some("shop/app".into());
    // 1,000 refusals a second for 5 s, and one allowed read among them.
    for ms in 0..5_000 {
        log.record_at(&refusal("0123456789ab"), T0 + ms);
        if ms == 2_500 {
            log.record_at(&ok, T0 + ms);
        }
    }
    log.flush_at(T0 + 5_000);
    let all = lines(&path);
    let denied = all.iter().filter(|v| v["outcome"] == "denied" && v["action"] == "read").count();
    // Burst of 10, then 1/s: 10 + 4 (the refill of seconds 1..4; second 5 is the boundary).
    assert!((14..=15).contains(&denied), "{denied} refusal lines");
    assert_eq!(all.iter().filter(|v| v["outcome"] == "allowed").count(), 1);
    // Nothing due yet: the flood has not been quiet for 2 s nor lasted 10 s.
    assert!(all.iter().all(|v| v["action"] != "suppressed"));
    log.flush_at(T0 + 7_000);
    let all = lines(&path);
    let s: Vec<_> = all.iter().filter(|v| v["action"] == "suppressed").collect();
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0]["suppressed"]["count"], 5_000 - denied as u64);
    assert_eq!(s[0]["suppressed"]["code"], "no_identity");
    assert_eq!(s[0]["suppressed"]["ongoing"], false);
    assert_eq!(s[0]["suppressed"]["first"], "2023-11-14T22:13:20.010Z");
    assert_eq!(s[0]["container_id"], "0123456789ab");
    assert_eq!(s[0]["outcome"], "denied");
    assert!(s[0]["reason"].as_str().unwrap().starts_with("no_identity: "));
}

#[test]
fn rotation_keeps_lines_whole_and_files_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let opts = Options { rotation: Rotation { max_size: 1_000, keep: 2 }, ..Default::default() };
    let log = AccessLog::open_with(&path, opts).unwrap();
    let line_len = render(&Entry::new(Socket::Admin, "status"), T0).len() as u64;
    for i in 0..40 {
        log.record_at(&Entry::new(Socket::Admin, "status"), T0 + i);
    }
    let files = [path.clone(), sink::numbered(&path, 1), sink::numbered(&path, 2)];
    let counts: Vec<usize> = files
        .iter()
        .map(|f| {
            let len = std::fs::metadata(f).unwrap().len();
            assert!(len <= 1_000 && len % line_len == 0, "{}: {len} bytes", f.display());
            assert_eq!(std::fs::metadata(f).unwrap().permissions().mode() & 0o777, 0o600);
            lines(f).len()
        })
        .collect();
    assert!(!sink::numbered(&path, 3).exists());
    // Full files behind, the newest lines in the current one; none split.
    let per_file = (1_000 / line_len) as usize;
    assert_eq!(counts, vec![(40 - 1) % per_file + 1, per_file, per_file]);
}

#[test]
fn reopen_follows_a_moved_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let log = AccessLog::open(&path).unwrap();
    log.record(&Entry::new(Socket::Admin, "status"));
    let moved = dir.path().join("access.log.moved");
    std::fs::rename(&path, &moved).unwrap();
    log.record(&Entry::new(Socket::Admin, "list"));
    log.reopen().unwrap();
    log.record(&Entry::new(Socket::Admin, "status"));
    assert_eq!(lines(&moved).len(), 2);
    let now = lines(&path);
    assert_eq!(now.len(), 1);
    assert_eq!(now[0]["action"], "status");
}

#[test]
fn pending_counts_are_written_when_the_log_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let limits = Limits { burst: 1, ..Default::default() };
    let log = AccessLog::open_with(&path, Options { limits, ..Default::default() }).unwrap();
    for ms in 0..3 {
        log.record_at(&refusal("0123456789ab"), T0 + ms);
    }
    drop(log);
    let all = lines(&path);
    assert_eq!(all.len(), 2);
    assert_eq!(all[1]["suppressed"]["count"], 2);
    assert_eq!(all[1]["suppressed"]["ongoing"], false);
}
