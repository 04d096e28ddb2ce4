use super::*;
use crate::node::fakes::{body_of, req, Rig};
use seg_common::api::{ApiError, HDR_VERSION};

const ROOT: Peer = Peer { pid: Some(1), uid: 0 };

async fn call(rig: &Rig, method: &str, path: &str, body: &[u8]) -> (StatusCode, Vec<u8>) {
    let resp = rig.admin.handle(ROOT, req(method, path, body)).await;
    (resp.status(), body_of(resp).await)
}

fn code(body: &[u8]) -> String {
    serde_json::from_slice::<ApiError>(body).unwrap().code
}

#[tokio::test]
async fn put_get_list_and_remove() {
    let rig = Rig::new();
    let (s, b) = call(&rig, "PUT", "/v1/secrets/db?ttl_ms=2000", b"hunter2").await;
    assert_eq!(s, StatusCode::OK);
    let put: PutResult = serde_json::from_slice(&b).unwrap();
    assert_eq!(put.version, 1);
    let resp = rig.admin.handle(ROOT, req("GET", "/v1/secrets/db", b"")).await;
    assert_eq!(resp.headers()[HDR_VERSION], "1");
    assert_eq!(body_of(resp).await, b"hunter2");
    let (_, b) = call(&rig, "GET", "/v1/secrets", b"").await;
    let infos: Vec<SecretInfo> = serde_json::from_slice(&b).unwrap();
    assert_eq!((infos[0].name.as_str(), infos[0].ttl_ms), ("db", 2000));
    assert!(!String::from_utf8_lossy(&b).contains("hunter2"));
    let (s, b) = call(&rig, "DELETE", "/v1/secrets/db", b"").await;
    assert_eq!(s, StatusCode::OK);
    assert!(serde_json::from_slice::<ChangeResult>(&b).unwrap().changed);
    let (s, b) = call(&rig, "GET", "/v1/secrets/db", b"").await;
    assert_eq!((s, code(&b).as_str()), (StatusCode::NOT_FOUND, "not_found"));
    let log = rig.log_text();
    assert!(!log.contains("hunter2"), "{log}");
    let actions: Vec<_> = rig.log_lines().iter().map(|l| l["action"].as_str().unwrap().to_owned()).collect();
    assert_eq!(actions, ["put", "read", "list", "remove", "read"]);
}

#[tokio::test]
async fn grants_and_ttl() {
    let rig = Rig::new();
    call(&rig, "PUT", "/v1/secrets/db", b"v").await;
    let target = br#"{"project":"any","service":"app"}"#;
    let (s, b) = call(&rig, "POST", "/v1/secrets/db/grants", target).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert!(serde_json::from_slice::<ChangeResult>(&b).unwrap().changed);
    let (_, b) = call(&rig, "POST", "/v1/secrets/db/grants", target).await;
    assert!(!serde_json::from_slice::<ChangeResult>(&b).unwrap().changed);
    let (_, b) = call(&rig, "GET", "/v1/secrets", b"").await;
    let infos: Vec<SecretInfo> = serde_json::from_slice(&b).unwrap();
    assert_eq!(infos[0].grants, ["*/app"]);
    let (_, b) = call(&rig, "DELETE", "/v1/secrets/db/grants", target).await;
    assert!(serde_json::from_slice::<ChangeResult>(&b).unwrap().changed);
    let (s, _) = call(&rig, "PUT", "/v1/secrets/db/ttl", br#"{"ttl_ms":60000}"#).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = call(&rig, "PUT", "/v1/secrets/db/ttl", br#"{"ttl_ms":5}"#).await;
    assert_eq!((s, code(&b).as_str()), (StatusCode::BAD_REQUEST, "bad_ttl"));
    let junk = br#"{"project":{"exact":"../x"},"service":"app"}"#;
    let (s, b) = call(&rig, "POST", "/v1/secrets/db/grants", junk).await;
    assert_eq!((s, code(&b).as_str()), (StatusCode::BAD_REQUEST, "bad_grant"));
    let (s, b) = call(&rig, "POST", "/v1/secrets/db/grants", b"not json").await;
    assert_eq!((s, code(&b).as_str()), (StatusCode::BAD_REQUEST, "bad_request"));
}

#[tokio::test]
async fn oversized_values_get_413_with_a_clear_message() {
    let rig = Rig::new();
    let big = vec![b'x'; 600 * 1024];
    let (s, b) = call(&rig, "PUT", "/v1/secrets/big", &big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let err: ApiError = serde_json::from_slice(&b).unwrap();
    assert_eq!(err.code, "too_large");
    assert_eq!(err.error, "value is 614400 bytes; limit is 524288");
    assert_eq!(rig.log_lines()[0]["outcome"], "error");
}

#[tokio::test]
async fn bad_ttl_query_is_refused_before_the_body() {
    let rig = Rig::new();
    let (s, b) = call(&rig, "PUT", "/v1/secrets/db?ttl_ms=10", b"v").await;
    assert_eq!((s, code(&b).as_str()), (StatusCode::BAD_REQUEST, "bad_ttl"));
    assert!(rig.store.list().unwrap().is_empty());
}

#[tokio::test]
async fn status_reports_the_node() {
    let rig = Rig::new();
    call(&rig, "PUT", "/v1/secrets/db", b"v").await;
    let (s, b) = call(&rig, "GET", "/v1/status", b"").await;
    assert_eq!(s, StatusCode::OK);
    let report: StatusReport = serde_json::from_slice(&b).unwrap();
    assert_eq!((report.secrets, report.store.as_str(), report.docker.as_str()), (1, "fake", "ok (fake)"));
    assert_eq!(report.pid, std::process::id());
}

#[tokio::test]
async fn non_root_peers_are_refused() {
    let rig = Rig::new();
    let resp = rig.admin.handle(Peer { pid: Some(9), uid: 1000 }, req("GET", "/v1/secrets", b"")).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(code(&body_of(resp).await), "not_root");
    assert_eq!(rig.log_lines()[0]["outcome"], "denied");
}

#[tokio::test]
async fn unknown_routes_methods_and_names() {
    let rig = Rig::new();
    let (s, b) = call(&rig, "GET", "/v1/nope", b"").await;
    assert_eq!((s, code(&b).as_str()), (StatusCode::NOT_FOUND, "not_found"));
    let (s, b) = call(&rig, "POST", "/v1/secrets/db", b"").await;
    assert_eq!((s, code(&b).as_str()), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
    let (s, b) = call(&rig, "PUT", "/v1/secrets/Bad%2Fname", b"v").await;
    assert_eq!((s, code(&b).as_str()), (StatusCode::BAD_REQUEST, "bad_name"));
    let (s, b) = call(&rig, "PUT", "/v1/secrets/db?foo=1", b"v").await;
    assert_eq!((s, code(&b).as_str()), (StatusCode::BAD_REQUEST, "bad_request"));
    assert_eq!(rig.log_lines().len(), 4);
}

mod over_a_socket {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{UnixListener, UnixStream};

    async fn start() -> (Rig, std::path::PathBuf, tokio::task::JoinHandle<()>) {
        let mut rig = Rig::new();
        let path = rig.dir.path().join("admin.sock");
        let listener = UnixListener::bind(&path).unwrap();
        // Move the handler out of the rig; the rig keeps the temp dir alive.
        let fresh = Rig::new();
        let admin = std::mem::replace(&mut rig.admin, fresh.admin);
        let task = tokio::spawn(crate::node::serve_admin(listener, Arc::new(admin)));
        (rig, path, task)
    }

    /// Sends `raw` and reads the answer, giving up after `wait`.
    async fn exchange(path: &std::path::Path, raw: &[u8], wait: Duration) -> String {
        let mut s = UnixStream::connect(path).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut out = vec![0u8; 4096];
        let n = tokio::time::timeout(wait, s.read(&mut out)).await.expect("no answer in time").unwrap();
        String::from_utf8_lossy(&out[..n]).into_owned()
    }

    #[tokio::test]
    async fn oversized_put_is_refused_without_reading_the_body() {
        let (_rig, path, task) = start().await;
        let head = b"PUT /v1/secrets/big HTTP/1.1\r\nhost: x\r\ncontent-length: 614400\r\n\r\n";
        let out = exchange(&path, head, Duration::from_secs(2)).await;
        assert!(out.starts_with("HTTP/1.1 413"), "{out}");
        assert!(out.contains("value is 614400 bytes; limit is 524288"), "{out}");
        task.abort();
    }

    #[tokio::test]
    async fn a_body_that_never_arrives_times_out() {
        let (_rig, path, task) = start().await;
        let partial = b"PUT /v1/secrets/db HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc";
        let started = std::time::Instant::now();
        let out = exchange(&path, partial, Duration::from_secs(8)).await;
        assert!(out.starts_with("HTTP/1.1 408") && out.contains("\"timeout\""), "{out}");
        assert!(started.elapsed() >= Duration::from_secs(4), "{:?}", started.elapsed());
        task.abort();
    }

    #[tokio::test]
    async fn keep_alive_serves_several_requests() {
        let (_rig, path, task) = start().await;
        let mut s = UnixStream::connect(&path).await.unwrap();
        for _ in 0..2 {
            s.write_all(b"GET /v1/secrets HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
            let mut out = vec![0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut out)).await.unwrap().unwrap();
            let text = String::from_utf8_lossy(&out[..n]).into_owned();
            assert!(text.starts_with("HTTP/1.1 200") && text.ends_with("[]"), "{text}");
        }
        task.abort();
    }
}
