//! The push side of the agent API, driven through the handlers with fakes.
use super::*;
use crate::node::fakes::{body_of, req, Rig};
use crate::node::server::Peer;
use crate::node::watch::WatchLimits;
use crate::store::SecretStore;
use http_body_util::BodyExt;
use seg_common::api::{ApiError, GrantTarget, NotifyResult, SecretStatus, WatchEvent};
use seg_common::name::SecretName;
use seg_common::secret::SecretBytes;
use std::time::Duration;

const ROOT: Peer = Peer { pid: Some(1), uid: 0 };

fn conn(pid: i32) -> AgentConn {
    AgentConn::new(Peer { pid: Some(pid), uid: 1000 })
}

fn seed(rig: &Rig, name: &str, value: &[u8], grant: &str) {
    let n = SecretName::parse(name).unwrap();
    rig.store.put(&n, &SecretBytes::from_slice(value), Some(60_000)).unwrap();
    rig.store.grant(&n, &GrantTarget::parse(grant).unwrap()).unwrap();
}

async fn code(resp: Resp) -> (StatusCode, String) {
    let status = resp.status();
    (status, serde_json::from_slice::<ApiError>(&body_of(resp).await).map(|e| e.code).unwrap_or_default())
}

struct Stream(super::http::RespBody);

impl Stream {
    async fn open(rig: &Rig, pid: i32, path: &str) -> Stream {
        let resp = rig.agent.handle(&conn(pid), req("GET", path, b"")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
        Stream(resp.into_body())
    }

    async fn next(&mut self) -> WatchEvent {
        let frame = tokio::time::timeout(Duration::from_secs(2), self.0.frame()).await.expect("no event");
        serde_json::from_slice(&frame.unwrap().unwrap().into_data().unwrap()).unwrap()
    }
}

async fn admin(rig: &Rig, method: &str, path: &str, body: &[u8]) -> (StatusCode, Vec<u8>) {
    let resp = rig.admin.handle(ROOT, req(method, path, body)).await;
    (resp.status(), body_of(resp).await)
}

#[tokio::test]
async fn a_stream_says_hello_then_pushes_rotations_revocations_and_removals() {
    let rig = Rig::new();
    seed(&rig, "db", b"one", "shop/app");
    seed(&rig, "api", b"k", "shop/app");
    let mut s = Stream::open(&rig, 100, "/v1/watch?secrets=db").await;
    match s.next().await {
        WatchEvent::Hello { secrets, ping_ms } => {
            assert_eq!(secrets.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["db"]);
            assert_eq!(ping_ms, 15_000);
        }
        other => panic!("{other:?}"),
    }
    let (st, _) = admin(&rig, "POST", "/v1/secrets/db/rotate", b"two").await;
    assert_eq!(st, StatusCode::OK);
    admin(&rig, "POST", "/v1/secrets/api/rotate", b"k2").await; // not watched
    assert!(matches!(s.next().await, WatchEvent::Version { version: 2, .. }));
    let target = br#"{"project":{"exact":"shop"},"service":"app"}"#;
    admin(&rig, "DELETE", "/v1/secrets/db/grants", target).await;
    assert!(matches!(s.next().await, WatchEvent::Revoked { .. }));
    admin(&rig, "POST", "/v1/secrets/db/grants", target).await;
    assert!(matches!(s.next().await, WatchEvent::Version { version: 2, .. }), "a new grant is pushed");
    admin(&rig, "DELETE", "/v1/secrets/db", b"").await;
    assert!(matches!(s.next().await, WatchEvent::Removed { .. }));
    let log = rig.log_lines();
    assert!(log.iter().any(|l| l["action"] == "watch" && l["outcome"] == "allowed"), "{log:?}");
    assert!(!rig.log_text().contains("two"));
}

#[tokio::test]
async fn watches_are_limited_per_container() {
    let rig = Rig::with_limits(WatchLimits { per_container: 2, total: 100, queue: 8 });
    let _a = Stream::open(&rig, 100, "/v1/watch").await;
    let _b = Stream::open(&rig, 100, "/v1/watch").await;
    let third = rig.agent.handle(&conn(100), req("GET", "/v1/watch", b"")).await;
    assert_eq!(code(third).await, (StatusCode::TOO_MANY_REQUESTS, "too_many_watches".into()));
    let _other = Stream::open(&rig, 200, "/v1/watch").await;
    let host = rig.agent.handle(&conn(4242), req("GET", "/v1/watch", b"")).await;
    assert_eq!(code(host).await, (StatusCode::FORBIDDEN, "not_a_container".into()));
    let bad = rig.agent.handle(&conn(100), req("GET", "/v1/watch?secrets=../x", b"")).await;
    assert_eq!(code(bad).await.1, "bad_name");
}

#[tokio::test]
async fn acks_feed_the_status_and_only_granted_callers_may_ack() {
    let rig = Rig::new();
    seed(&rig, "db", b"one", "shop/app");
    let _s = Stream::open(&rig, 100, "/v1/watch").await;
    let _t = Stream::open(&rig, 101, "/v1/watch").await;
    let ack = |v: u64| format!(r#"{{"name":"db","version":{v}}}"#).into_bytes();
    let resp = rig.agent.handle(&conn(100), req("POST", "/v1/ack", &ack(1))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (_, b) = admin(&rig, "GET", "/v1/secrets/db/status", b"").await;
    let st: SecretStatus = serde_json::from_slice(&b).unwrap();
    assert_eq!(st.consumers.len(), 2);
    assert!(!st.complete, "container 101 has not acknowledged");
    assert_eq!(st.consumers.iter().filter(|c| c.version == Some(1)).count(), 1);
    rig.agent.handle(&conn(101), req("POST", "/v1/ack", &ack(1))).await;
    let (_, b) = admin(&rig, "GET", "/v1/secrets/db/status", b"").await;
    assert!(serde_json::from_slice::<SecretStatus>(&b).unwrap().complete);
    let denied = rig.agent.handle(&conn(200), req("POST", "/v1/ack", &ack(1))).await;
    assert_eq!(code(denied).await, (StatusCode::FORBIDDEN, "not_granted".into()));
    let future = rig.agent.handle(&conn(100), req("POST", "/v1/ack", &ack(9))).await;
    assert_eq!(code(future).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_previous_version_is_readable_until_every_consumer_acknowledged() {
    let rig = Rig::new();
    seed(&rig, "db", b"one", "shop/app");
    let _s = Stream::open(&rig, 100, "/v1/watch").await;
    admin(&rig, "POST", "/v1/secrets/db/rotate", b"two").await;
    let old = rig.agent.handle(&conn(100), req("GET", "/v1/secrets/db?version=1", b"")).await;
    assert_eq!(old.status(), StatusCode::OK);
    assert_eq!(body_of(old).await, b"one");
    let cur = rig.agent.handle(&conn(100), req("GET", "/v1/secrets/db?version=2", b"")).await;
    assert_eq!(body_of(cur).await, b"two");
    rig.agent.handle(&conn(100), req("POST", "/v1/ack", br#"{"name":"db","version":2}"#)).await;
    let gone = rig.agent.handle(&conn(100), req("GET", "/v1/secrets/db?version=1", b"")).await;
    assert_eq!(code(gone).await, (StatusCode::GONE, "version_gone".into()));
    // --grace 0: gone at once, acknowledged or not.
    admin(&rig, "POST", "/v1/secrets/db/rotate?grace_ms=0", b"three").await;
    let gone = rig.agent.handle(&conn(100), req("GET", "/v1/secrets/db?version=2", b"")).await;
    assert_eq!(code(gone).await.0, StatusCode::GONE);
    admin(&rig, "POST", "/v1/secrets/db/rotate?grace_ms=60000", b"four").await;
    let kept = rig.agent.handle(&conn(100), req("GET", "/v1/secrets/db?version=3", b"")).await;
    assert_eq!(body_of(kept).await, b"three");
    let other = rig.agent.handle(&conn(200), req("GET", "/v1/secrets/db?version=3", b"")).await;
    assert_eq!(code(other).await.1, "not_granted", "grace does not widen who may read");
}

#[tokio::test]
async fn signals_reach_the_app_containers_of_the_callers_service_only() {
    let rig = Rig::new();
    seed(&rig, "db", b"one", "shop/app");
    rig.containers.add("shop", "app", "app1", None);
    // The worker consents to notifications from app (seg.notify-from: app).
    rig.containers.add_notified_by("shop", "worker", "w1", None, &["app"]);
    rig.containers.add("shop", "batch", "b1", None);
    let body = br#"{"action":"signal:HUP","secrets":[{"name":"db","version":1}]}"#;
    let resp = rig.agent.handle(&conn(100), req("POST", "/v1/notify", body)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let done: NotifyResult = serde_json::from_slice(&body_of(resp).await).unwrap();
    assert_eq!(done.targets.len(), 1);
    let to_worker = br#"{"action":"signal:USR1","target":"worker","secrets":[{"name":"db","version":1}]}"#;
    rig.agent.handle(&conn(100), req("POST", "/v1/notify", to_worker)).await;
    let to_batch = br#"{"action":"signal:USR1","target":"batch","secrets":[{"name":"db","version":1}]}"#;
    let refused = rig.agent.handle(&conn(100), req("POST", "/v1/notify", to_batch)).await;
    assert_eq!(code(refused).await, (StatusCode::FORBIDDEN, "target_not_declared".into()));
    let sent = rig.containers.signals.lock().unwrap().clone();
    assert_eq!(sent, [("app1".to_owned(), "SIGHUP".to_owned()), ("w1".into(), "SIGUSR1".into())]);
    let hook = rig.log_lines().into_iter().find(|l| l["action"] == "hook").expect("hook in the access log");
    assert_eq!(hook["hook"]["kind"], "post-rotate");
    assert_eq!(hook["hook"]["action"], "signal:HUP");
    assert_eq!(hook["hook"]["status"], "ok");
    assert_eq!((hook["secret"].as_str(), hook["identity"].as_str()), (Some("db"), Some("shop/app")));

    let kill = br#"{"action":"signal:KILL","secrets":[{"name":"db","version":1}]}"#;
    let resp = rig.agent.handle(&conn(100), req("POST", "/v1/notify", kill)).await;
    assert_eq!(code(resp).await, (StatusCode::BAD_REQUEST, "bad_action".into()));
    let resp = rig.agent.handle(&conn(200), req("POST", "/v1/notify", body)).await;
    assert_eq!(code(resp).await, (StatusCode::FORBIDDEN, "not_granted".into()));
    let mut limited = 0;
    for _ in 0..6 {
        let resp = rig.agent.handle(&conn(101), req("POST", "/v1/notify", body)).await;
        limited += usize::from(resp.status() == StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(limited, 1, "a burst of 5, then one per second");
}

#[tokio::test]
async fn the_command_action_runs_only_the_registered_command_without_the_value() {
    let rig = Rig::new();
    seed(&rig, "db", b"s3cret-value", "shop/app");
    let seen = rig.dir.path().join("seen");
    let hooks = serde_json::json!({"post_rotate": {"command": format!("cat > {}", seen.display()), "timeout_ms": 5000}});
    let (st, _) = admin(&rig, "PUT", "/v1/secrets/db/hooks", hooks.to_string().as_bytes()).await;
    assert_eq!(st, StatusCode::OK);
    let body = br#"{"action":"command","secrets":[{"name":"db","version":1}]}"#;
    let resp = rig.agent.handle(&conn(100), req("POST", "/v1/notify", body)).await;
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", String::from_utf8_lossy(&body_of(resp).await));
    let event: serde_json::Value = serde_json::from_slice(&std::fs::read(&seen).unwrap()).unwrap();
    assert_eq!((event["secret"].as_str(), event["version"].as_u64()), (Some("db"), Some(1)));
    assert_eq!(event["container_id"], "aaaaaaaaaaaaaaaaaaaa");
    assert!(!std::fs::read_to_string(&seen).unwrap().contains("s3cret"));
    let (_, b) = admin(&rig, "GET", "/v1/secrets/db/status", b"").await;
    let st: SecretStatus = serde_json::from_slice(&b).unwrap();
    assert_eq!(st.consumers.len(), 0, "a notification alone does not make a consumer");
}
