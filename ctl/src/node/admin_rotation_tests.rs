//! Rotation, hooks and consumer status on the admin API, with fakes.
use super::*;
use crate::node::agent::AgentConn;
use crate::node::fakes::{body_of, req, Rig};
use crate::node::server::Peer;
use http_body_util::BodyExt;
use seg_common::api::{ApiError, Hooks, RotateResult, SecretStatus, WatchEvent};
use std::time::{Duration, Instant};

const ROOT: Peer = Peer { pid: Some(1), uid: 0 };

async fn call(rig: &Rig, method: &str, path: &str, body: &[u8]) -> (StatusCode, Vec<u8>) {
    let resp = rig.admin.handle(ROOT, req(method, path, body)).await;
    (resp.status(), body_of(resp).await)
}

fn err(body: &[u8]) -> ApiError {
    serde_json::from_slice(body).unwrap()
}

async fn set_hook(rig: &Rig, which: &str, command: &str, timeout_ms: u64) {
    let body = serde_json::json!({ which: {"command": command, "timeout_ms": timeout_ms} });
    let (s, b) = call(rig, "PUT", "/v1/secrets/db/hooks", body.to_string().as_bytes()).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
}

async fn current(rig: &Rig) -> (u64, Vec<u8>) {
    let resp = rig.admin.handle(ROOT, req("GET", "/v1/secrets/db", b"")).await;
    let version = resp.headers()["seg-secret-version"].to_str().unwrap().parse().unwrap();
    (version, body_of(resp).await)
}

#[tokio::test]
async fn rotate_needs_an_existing_secret_and_reports_the_new_version() {
    let rig = Rig::new();
    let (s, b) = call(&rig, "POST", "/v1/secrets/db/rotate", b"v").await;
    assert_eq!((s, err(&b).code.as_str()), (StatusCode::NOT_FOUND, "not_found"));
    assert!(err(&b).error.contains("segctl secret put"), "{}", err(&b).error);
    call(&rig, "PUT", "/v1/secrets/db", b"one").await;
    let (s, b) = call(&rig, "POST", "/v1/secrets/db/rotate?ttl_ms=2000", b"two").await;
    assert_eq!(s, StatusCode::OK);
    let r: RotateResult = serde_json::from_slice(&b).unwrap();
    assert_eq!((r.version, r.previous, r.consumers, r.pre_rotate), (2, Some(1), 0, None));
    assert_eq!(current(&rig).await, (2, b"two".to_vec()));
    let (s, b) = call(&rig, "POST", "/v1/secrets/db/rotate?grace_ms=99999999999", b"x").await;
    assert_eq!((s, err(&b).code.as_str()), (StatusCode::BAD_REQUEST, "bad_grace"));
    let (s, _) = call(&rig, "POST", "/v1/secrets/db/rotate?ttl_ms=5", b"x").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(current(&rig).await.0, 2, "refused rotations change nothing");
    let actions: Vec<String> = rig.log_lines().iter().map(|l| l["action"].as_str().unwrap().into()).collect();
    assert!(actions.iter().filter(|a| *a == "rotate").count() >= 2, "{actions:?}");
}

#[tokio::test]
async fn the_pre_rotate_hook_gets_the_new_value_on_stdin_before_anything_changes() {
    let rig = Rig::new();
    call(&rig, "PUT", "/v1/secrets/db", b"old-value-1").await;
    let seen = rig.dir.path().join("seen");
    let cmd = format!("cat > {}; echo \"$SEG_SECRET_NAME $SEG_SECRET_VERSION\" >> {0}", seen.display());
    set_hook(&rig, "pre_rotate", &cmd, 5000).await;
    let (s, b) = call(&rig, "POST", "/v1/secrets/db/rotate", b"new-value-2").await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let r: RotateResult = serde_json::from_slice(&b).unwrap();
    assert_eq!(r.pre_rotate.unwrap().status, "exit 0");
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), "new-value-2db 2\n");
    let hook = rig.log_lines().into_iter().find(|l| l["action"] == "hook").unwrap();
    assert_eq!(
        (hook["hook"]["kind"].as_str(), hook["hook"]["status"].as_str()),
        (Some("pre-rotate"), Some("exit 0"))
    );
    // The version does not exist while the hook runs: `attempted_version`.
    assert_eq!((hook["secret"].as_str(), hook["attempted_version"].as_u64()), (Some("db"), Some(2)));
    assert!(hook["version"].is_null());
    assert!(!rig.log_text().contains("new-value"), "a value reached the access log");
}

#[tokio::test]
async fn a_failing_or_hanging_pre_rotate_hook_aborts_and_distributes_nothing() {
    let rig = Rig::new();
    call(&rig, "PUT", "/v1/secrets/db", b"old-value-1").await;
    call(&rig, "POST", "/v1/secrets/db/grants", br#"{"project":"any","service":"app"}"#).await;
    let resp = rig
        .agent
        .handle(&AgentConn::new(Peer { pid: Some(100), uid: 1 }), req("GET", "/v1/watch", b""))
        .await;
    let mut stream = resp.into_body();
    let _hello = stream.frame().await;
    set_hook(&rig, "pre_rotate", "cat; echo 'ALTER USER failed' >&2; exit 3", 5000).await;
    let (s, b) = call(&rig, "POST", "/v1/secrets/db/rotate", b"new-value-2").await;
    let e = err(&b);
    assert_eq!((s, e.code.as_str()), (StatusCode::CONFLICT, "hook_failed"));
    assert!(e.error.contains("exit 3") && e.error.contains("version 1 stays current"), "{}", e.error);
    assert!(e.error.contains("ALTER USER failed") && !e.error.contains("new-value"), "{}", e.error);
    let (s, _) = call(&rig, "PUT", "/v1/secrets/db", b"new-value-3").await;
    assert_eq!(s, StatusCode::CONFLICT, "a plain put cannot bypass the hook");
    assert_eq!(current(&rig).await, (1, b"old-value-1".to_vec()));
    let pushed = tokio::time::timeout(Duration::from_millis(200), stream.frame()).await;
    assert!(pushed.is_err(), "an aborted rotation was pushed: {pushed:?}");

    set_hook(&rig, "pre_rotate", "sleep 30", 300).await;
    let started = Instant::now();
    let (s, b) = call(&rig, "POST", "/v1/secrets/db/rotate", b"new-value-4").await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(err(&b).error.contains("timed out after 300ms"), "{}", err(&b).error);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(current(&rig).await.0, 1);
    let statuses: Vec<String> = rig
        .log_lines()
        .iter()
        .filter(|l| l["action"] == "hook")
        .map(|l| l["hook"]["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["exit 3", "exit 3", "timed out after 300ms"]);
}

#[tokio::test]
async fn hooks_are_set_shown_cleared_and_checked() {
    let rig = Rig::new();
    let (s, _) = call(&rig, "GET", "/v1/secrets/db/hooks", b"").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    call(&rig, "PUT", "/v1/secrets/db", b"v").await;
    set_hook(&rig, "pre_rotate", "true", 1000).await;
    set_hook(&rig, "post_rotate", "logger rotated", 2000).await;
    let (_, b) = call(&rig, "GET", "/v1/secrets/db/hooks", b"").await;
    let hooks: Hooks = serde_json::from_slice(&b).unwrap();
    assert_eq!(hooks.pre_rotate.unwrap().command, "true");
    assert_eq!(hooks.post_rotate.unwrap().timeout_ms, 2000);
    let (_, b) = call(&rig, "PUT", "/v1/secrets/db/hooks", br#"{"clear_pre_rotate":true}"#).await;
    let hooks: Hooks = serde_json::from_slice(&b).unwrap();
    assert!(hooks.pre_rotate.is_none() && hooks.post_rotate.is_some());
    let bad = br#"{"pre_rotate":{"command":"true","timeout_ms":5}}"#;
    let (s, b) = call(&rig, "PUT", "/v1/secrets/db/hooks", bad).await;
    assert_eq!((s, err(&b).code.as_str()), (StatusCode::BAD_REQUEST, "bad_hook"));
}

#[tokio::test]
async fn status_waits_for_every_consumer_or_gives_up_at_the_deadline() {
    let rig = Rig::new();
    call(&rig, "PUT", "/v1/secrets/db", b"one").await;
    call(&rig, "POST", "/v1/secrets/db/grants", br#"{"project":"any","service":"app"}"#).await;
    let conn = AgentConn::new(Peer { pid: Some(100), uid: 1 });
    let resp = rig.agent.handle(&conn, req("GET", "/v1/watch", b"")).await;
    let mut stream = resp.into_body();
    let _hello = stream.frame().await;
    call(&rig, "POST", "/v1/secrets/db/rotate", b"two").await;
    let frame = stream.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(matches!(serde_json::from_slice(&frame).unwrap(), WatchEvent::Version { version: 2, .. }));

    let started = Instant::now();
    let (_, b) = call(&rig, "GET", "/v1/secrets/db/status?wait_ms=300", b"").await;
    let st: SecretStatus = serde_json::from_slice(&b).unwrap();
    assert!(!st.complete && started.elapsed() >= Duration::from_millis(300));
    assert_eq!((st.wanted, st.consumers.len(), st.consumers[0].watching), (2, 1, true));
    assert!(st.previous.as_ref().is_some_and(|p| p.version == 1 && p.readable));
    assert!(st.rotated_at_ms.is_some());

    let agent_side = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rig.agent.handle(&conn, req("POST", "/v1/ack", br#"{"name":"db","version":2}"#)).await
    };
    let started = Instant::now();
    let (waited, _) = tokio::join!(call(&rig, "GET", "/v1/secrets/db/status?wait_ms=10000", b""), agent_side);
    let st: SecretStatus = serde_json::from_slice(&waited.1).unwrap();
    assert!(st.complete, "{st:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "the wait did not end on the ack");
    assert!(st.previous.is_some_and(|p| !p.readable), "grace ends once everyone acknowledged");
}
