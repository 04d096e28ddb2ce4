use super::*;
use crate::node::fakes::{body_of, req, Rig};
use crate::node::server::Peer;
use seg_common::api::{ApiError, GrantTarget, HDR_LEASE_MS, HDR_VERSION};
use seg_common::name::SecretName;
use seg_common::secret::SecretBytes;

fn conn(pid: i32) -> AgentConn {
    AgentConn::new(Peer { pid: Some(pid), uid: 1000 })
}

fn seed(rig: &Rig, name: &str, value: &[u8], grant: Option<&str>) {
    let n = SecretName::parse(name).unwrap();
    rig.store.put(&n, &SecretBytes::from_slice(value), Some(2000)).unwrap();
    if let Some(g) = grant {
        rig.store.grant(&n, &GrantTarget::parse(g).unwrap()).unwrap();
    }
}

async fn error_code(resp: Resp) -> (StatusCode, String) {
    let status = resp.status();
    let err: ApiError = serde_json::from_slice(&body_of(resp).await).unwrap();
    (status, err.code)
}

#[tokio::test]
async fn granted_container_reads_the_value_with_lease_headers() {
    let rig = Rig::new();
    seed(&rig, "db", b"hunter2", Some("shop/app"));
    let resp = rig.agent.handle(&conn(100), req("GET", "/v1/secrets/db", b"")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[HDR_VERSION], "1");
    assert_eq!(resp.headers()[HDR_LEASE_MS], "2000");
    assert_eq!(body_of(resp).await, b"hunter2");
    let line = &rig.log_lines()[0];
    assert_eq!(line["action"], "read");
    assert_eq!(line["identity"], "shop/app");
    assert_eq!(line["container_id"], "aaaaaaaaaaaa");
    assert_eq!(line["outcome"], "allowed");
    assert_eq!(line["version"], 1);
    assert!(!rig.log_text().contains("hunter2"));
}

#[tokio::test]
async fn ungranted_and_missing_secrets_look_the_same() {
    let rig = Rig::new();
    seed(&rig, "db", b"hunter2", Some("shop/app"));
    let other = rig.agent.handle(&conn(200), req("GET", "/v1/secrets/db", b"")).await;
    let (s1, c1) = error_code(other).await;
    let missing = rig.agent.handle(&conn(200), req("GET", "/v1/secrets/nope", b"")).await;
    let (s2, c2) = error_code(missing).await;
    assert_eq!((s1, c1.as_str()), (StatusCode::FORBIDDEN, "not_granted"));
    assert_eq!((s2, c2.as_str()), (StatusCode::FORBIDDEN, "not_granted"));
    let lines = rig.log_lines();
    assert!(lines.iter().all(|l| l["outcome"] == "denied"), "{lines:?}");
    assert!(!rig.log_text().contains("hunter2"));
}

#[tokio::test]
async fn host_processes_are_refused_and_logged() {
    let rig = Rig::new();
    seed(&rig, "db", b"hunter2", Some("*/app"));
    let resp = rig.agent.handle(&conn(4242), req("GET", "/v1/secrets/db", b"")).await;
    assert_eq!(error_code(resp).await, (StatusCode::FORBIDDEN, "not_a_container".into()));
    let line = &rig.log_lines()[0];
    assert_eq!(line["identity"], "-");
    assert_eq!(line["pid"], 4242);
    assert_eq!(line["outcome"], "denied");
    assert!(line["reason"].as_str().unwrap().contains("not_a_container"));
}

#[tokio::test]
async fn refusals_of_unlabelled_containers_name_the_container_and_secret() {
    let rig = Rig::new();
    seed(&rig, "db", b"hunter2", Some("*/app"));
    let resp = rig.agent.handle(&conn(400), req("GET", "/v1/secrets/db", b"")).await;
    assert_eq!(error_code(resp).await, (StatusCode::FORBIDDEN, "no_identity".into()));
    let line = &rig.log_lines()[0];
    assert_eq!(line["container_id"], "dddddddddddd");
    assert_eq!(line["secret"], "db");
    assert_eq!(line["outcome"], "denied");
}

#[tokio::test]
async fn docker_down_is_a_503() {
    let rig = Rig::new();
    let resp = rig.agent.handle(&conn(300), req("GET", "/v1/whoami", b"")).await;
    assert_eq!(error_code(resp).await, (StatusCode::SERVICE_UNAVAILABLE, "docker_unavailable".into()));
    assert_eq!(rig.log_lines()[0]["outcome"], "error");
}

#[tokio::test]
async fn list_shows_only_granted_secrets() {
    let rig = Rig::new();
    seed(&rig, "a", b"1", Some("shop/app"));
    seed(&rig, "b", b"2", Some("*/app"));
    seed(&rig, "c", b"3", Some("other/web"));
    seed(&rig, "d", b"4", None);
    let resp = rig.agent.handle(&conn(100), req("GET", "/v1/secrets", b"")).await;
    let list: SecretList = serde_json::from_slice(&body_of(resp).await).unwrap();
    let names: Vec<_> = list.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
}

#[tokio::test]
async fn whoami_names_the_caller() {
    let rig = Rig::new();
    let resp = rig.agent.handle(&conn(100), req("GET", "/v1/whoami", b"")).await;
    let who: WhoAmI = serde_json::from_slice(&body_of(resp).await).unwrap();
    assert_eq!(who.identity.to_string(), "shop/app");
    assert_eq!(who.container_id, "aaaaaaaaaaaaaaaaaaaa");
}

#[tokio::test]
async fn bad_names_unknown_routes_and_methods() {
    let rig = Rig::new();
    let c = conn(100);
    let bad = rig.agent.handle(&c, req("GET", "/v1/secrets/..", b"")).await;
    assert_eq!(error_code(bad).await, (StatusCode::BAD_REQUEST, "bad_name".into()));
    let unknown = rig.agent.handle(&c, req("GET", "/v1/status", b"")).await;
    assert_eq!(error_code(unknown).await, (StatusCode::NOT_FOUND, "not_found".into()));
    let put = rig.agent.handle(&c, req("PUT", "/v1/secrets/db", b"x")).await;
    assert_eq!(error_code(put).await, (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed".into()));
    assert_eq!(rig.log_lines().len(), 3);
}

/// Counts the identifications the fake identity makes.
struct Counting(std::sync::atomic::AtomicUsize);

impl Identify for Counting {
    fn identify<'a>(&'a self, peer: &'a PinnedPeer) -> BoxFuture<'a, Result<Attested, IdentifyError>> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        crate::node::fakes::FakeIdentify.identify(peer)
    }
}

fn counting_rig() -> (Rig, Arc<Counting>) {
    let mut rig = Rig::new();
    let counter = Arc::new(Counting(Default::default()));
    rig.agent.identify = counter.clone();
    (rig, counter)
}

#[tokio::test]
async fn identity_is_attested_once_per_connection() {
    let (rig, counter) = counting_rig();
    let c = conn(100);
    for _ in 0..3 {
        let resp = rig.agent.handle(&c, req("GET", "/v1/whoami", b"")).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    assert_eq!(counter.0.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failed_identification_is_final_and_closes_the_connection() {
    let (rig, counter) = counting_rig();
    // Docker down (pid 300): refused, and the same connection never asks
    // again, so a PID that changes hands later cannot turn it into another
    // caller; every answer tells the client to close.
    let c = conn(300);
    for _ in 0..3 {
        let resp = rig.agent.handle(&c, req("GET", "/v1/whoami", b"")).await;
        assert_eq!(resp.headers()["connection"], "close");
        assert_eq!(error_code(resp).await, (StatusCode::SERVICE_UNAVAILABLE, "docker_unavailable".into()));
    }
    assert_eq!(counter.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A new connection is identified afresh.
    let resp = rig.agent.handle(&conn(100), req("GET", "/v1/whoami", b"")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!resp.headers().contains_key("connection"), "an identified connection stays open");
}

#[tokio::test]
async fn refusals_do_not_tell_the_caller_host_pids() {
    let rig = Rig::new();
    let resp = rig.agent.handle(&conn(4242), req("GET", "/v1/whoami", b"")).await;
    let body = String::from_utf8(body_of(resp).await).unwrap();
    assert!(body.contains("not_a_container") && !body.contains("4242"), "{body}");
}
