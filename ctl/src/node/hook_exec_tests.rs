//! Exec hooks: resolution (consumers' projects + labels → targets) and
//! failure mapping as pure functions, then whole rotations through the
//! admin API with fake containers.
use super::*;
use crate::node::fakes::{body_of, req, Rig};
use crate::node::server::Peer;
use hyper::StatusCode;
use seg_common::api::{ApiError, GrantTarget, Hooks, RotateResult};

const ROOT: Peer = Peer { pid: Some(1), uid: 0 };

fn app(id: &str, name: &str) -> AppContainer {
    AppContainer { id: id.into(), name: name.into(), addresses: vec![], notify_from: vec![] }
}

fn meta(grants: &[&str]) -> SecretMeta {
    SecretMeta {
        name: SecretName::parse("db").unwrap(),
        version: 1,
        ttl_ms: 60_000,
        grants: grants.iter().map(|g| GrantTarget::parse(g).unwrap()).collect(),
        hooks: Hooks::default(),
        created_at: 0,
        updated_at: 0,
    }
}

#[test]
fn consumer_projects_come_from_grants_and_live_consumers() {
    let live = [Identity::new(Some("shop2"), "app"), Identity::new(None, "tool")];
    let got = consumer_projects(&meta(&["shop/app", "*/worker", "cron"]), &live);
    let want: BTreeSet<Option<String>> = [Some("shop".into()), Some("shop2".into()), None].into();
    assert_eq!(got, want);
}

#[test]
fn targets_are_every_replica_in_name_order_across_projects() {
    let t = ServiceTarget::parse("db").unwrap();
    let found = vec![
        (Identity::new(Some("b"), "db"), vec![app("c3", "b-db-1")]),
        (Identity::new(Some("a"), "db"), vec![app("c2", "a_db_2"), app("c1", "a_db_1")]),
        (Identity::new(Some("c"), "db"), vec![]),
    ];
    let got = targets(&t, found).unwrap();
    let names: Vec<(String, String)> =
        got.iter().map(|t| (t.identity.to_string(), t.container.name.clone())).collect();
    let want = [("a/db", "a_db_1"), ("a/db", "a_db_2"), ("b/db", "b-db-1")];
    assert_eq!(names, want.map(|(a, b)| (a.to_owned(), b.to_owned())));
    assert_eq!(got[0].shown(), "a_db_1 (c1)");
}

#[test]
fn no_target_is_an_error_that_says_where_it_looked() {
    let t = ServiceTarget::parse("shop/db").unwrap();
    let err = targets(&t, vec![(Identity::new(Some("shop"), "db"), vec![])]).unwrap_err();
    assert_eq!(err, "no running container of service shop/db (compose labels)");
    let bare = ServiceTarget::parse("db").unwrap();
    assert!(targets(&bare, vec![]).unwrap_err().contains("name it as PROJECT/SERVICE"));
}

#[test]
fn exec_outcomes_map_to_hook_results() {
    let at = Instant::now();
    let out = |code: Option<i64>, stdout: &[u8], stderr: &[u8]| {
        Ok(ExecOutput { exit_code: code, stdout: stdout.to_vec(), stderr: stderr.to_vec() })
    };
    let ok = outcome(out(Some(0), b"ALTER ROLE", b""), at);
    assert!(ok.ok && ok.output.is_empty());
    assert_eq!(ok.run.status, "exit 0");
    let failed = outcome(out(Some(3), b"noise", b"ERROR: role does not exist\n"), at);
    assert_eq!((failed.ok, failed.run.status.as_str()), (false, "exit 3"));
    assert_eq!(failed.output, "ERROR: role does not exist");
    assert_eq!(outcome(out(Some(1), b"only stdout", b""), at).output, "only stdout");
    assert_eq!(outcome(out(None, b"", b""), at).run.status, "ended without an exit code");
    let timed_out =
        ExecError::TimedOut { after: "1s".into(), killed: "its process (host PID 7) was killed".into() };
    let t = outcome(Err(ContainersError::Exec(timed_out)), at);
    assert_eq!(
        (t.ok, t.run.status.as_str()),
        (false, "timed out after 1s; its process (host PID 7) was killed")
    );
    let gone = outcome(Err(ContainersError::Exec(ExecError::NotRunning("is not running".into()))), at);
    assert!(!gone.ok && gone.run.status.contains("not running"), "{}", gone.run.status);
}

async fn call(rig: &Rig, method: &str, path: &str, body: &[u8]) -> (StatusCode, Vec<u8>) {
    let resp = rig.admin.handle(ROOT, req(method, path, body)).await;
    (resp.status(), body_of(resp).await)
}

/// A secret `db` at version 1, granted to shop/app, with an exec hook.
async fn rig_with_exec_hook(which: &str, service: &str) -> Rig {
    let rig = Rig::new();
    call(&rig, "PUT", "/v1/secrets/db", b"old-value-1").await;
    call(&rig, "POST", "/v1/secrets/db/grants", br#"{"project":{"exact":"shop"},"service":"app"}"#).await;
    let exec = serde_json::json!({"service": service, "argv": ["psql", "-f", "-"]});
    let body = serde_json::json!({ which: {"command": "exec", "timeout_ms": 5000, "exec": exec} });
    let (s, b) = call(&rig, "PUT", "/v1/secrets/db/hooks", body.to_string().as_bytes()).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    rig
}

#[tokio::test]
async fn a_pre_rotate_exec_hook_reaches_each_replica_with_the_value_on_stdin() {
    let rig = rig_with_exec_hook("pre_rotate", "db").await;
    rig.containers.add("shop", "db", "db-two", None);
    rig.containers.add("shop", "db", "db-one", None);
    rig.containers.add("other", "db", "not-a-consumer-project", None);
    let (s, b) = call(&rig, "POST", "/v1/secrets/db/rotate", b"new-value-2").await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let r: RotateResult = serde_json::from_slice(&b).unwrap();
    assert!(r.pre_rotate.unwrap().status.starts_with("exit 0 in 2 container(s)"));
    let execs = rig.containers.execs.lock().unwrap().clone();
    let argv = vec!["psql".to_owned(), "-f".into(), "-".into()];
    let want = [("db-one", &argv, b"new-value-2".to_vec()), ("db-two", &argv, b"new-value-2".to_vec())];
    assert_eq!(execs, want.map(|(c, a, v)| (c.to_owned(), a.clone(), v)));
    let hooks: Vec<_> = rig.log_lines().into_iter().filter(|l| l["action"] == "hook").collect();
    assert_eq!(hooks.len(), 2);
    for (h, id) in hooks.iter().zip(["db-one", "db-two"]) {
        assert_eq!(
            (h["hook"]["action"].as_str(), h["hook"]["target"].as_str()),
            (Some("exec"), Some("shop/db"))
        );
        assert_eq!(h["hook"]["container"], format!("shop-db-1 ({id})"));
        assert_eq!((h["attempted_version"].as_u64(), h["version"].as_u64()), (Some(2), None));
    }
    assert!(!rig.log_text().contains("new-value"), "a value reached the access log");
}

#[tokio::test]
async fn a_failing_replica_aborts_the_rotation_with_its_stderr() {
    let rig = rig_with_exec_hook("pre_rotate", "shop/db").await;
    rig.containers.add("shop", "db", "db-a", None);
    rig.containers.add("shop", "db", "db-b", None);
    let failed =
        ExecOutput { exit_code: Some(3), stdout: vec![], stderr: b"ERROR: permission denied".to_vec() };
    rig.containers.exec_results.lock().unwrap().insert("db-b".into(), Ok(failed));
    let (s, b) = call(&rig, "POST", "/v1/secrets/db/rotate", b"new-value-2").await;
    let e: ApiError = serde_json::from_slice(&b).unwrap();
    assert_eq!((s, e.code.as_str()), (StatusCode::CONFLICT, "hook_failed"));
    for part in [
        "exit 3 in shop-db-1 (db-b)",
        "already succeeded in shop-db-1",
        "version 1 stays current",
        "ERROR: permission denied",
    ] {
        assert!(e.error.contains(part), "{part:?} missing from {}", e.error);
    }
    let resp = rig.admin.handle(ROOT, req("GET", "/v1/secrets/db", b"")).await;
    assert_eq!(body_of(resp).await, b"old-value-1");
}

#[tokio::test]
async fn no_running_container_of_the_service_aborts_the_rotation() {
    let rig = rig_with_exec_hook("pre_rotate", "shop/db").await;
    let (s, b) = call(&rig, "POST", "/v1/secrets/db/rotate", b"new-value-2").await;
    let e: ApiError = serde_json::from_slice(&b).unwrap();
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(e.error.contains("no running container of service shop/db"), "{}", e.error);
    let hook = rig.log_lines().into_iter().find(|l| l["action"] == "hook").unwrap();
    assert_eq!((hook["outcome"].as_str(), hook["hook"]["container"].as_str()), (Some("error"), None));
}

#[tokio::test]
async fn a_post_rotate_exec_hook_runs_after_the_rotation_without_the_value() {
    let rig = rig_with_exec_hook("post_rotate", "shop/web").await;
    rig.containers.add("shop", "web", "web-1", None);
    let (s, _) = call(&rig, "POST", "/v1/secrets/db/rotate", b"new-value-2").await;
    assert_eq!(s, StatusCode::OK);
    let started = Instant::now();
    while rig.containers.execs.lock().unwrap().is_empty() {
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "the post-rotate exec never ran");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (id, _, stdin) = rig.containers.execs.lock().unwrap()[0].clone();
    let event: serde_json::Value = serde_json::from_slice(&stdin).unwrap();
    assert_eq!(
        (id.as_str(), &event),
        ("web-1", &serde_json::json!({"secret": "db", "version": 2, "previous": 1}))
    );
}
