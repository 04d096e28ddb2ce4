//! The HTTP post-rotate action against a real local server.
use super::*;
use crate::node::fakes::{attested, FakeStore};
use crate::node::rotation_state::RotationState;
use crate::node::watch::Hub;
use seg_common::api::GrantTarget;
use seg_common::name::SecretName;
use seg_common::secret::SecretBytes;

/// Accepts one connection, returns what it read, answers `status`.
async fn one_shot_server(status: &'static str) -> (u16, tokio::task::JoinHandle<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("}]}") {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes()).await.unwrap();
        String::from_utf8_lossy(&got).into_owned()
    });
    (port, task)
}

fn rig(
) -> (tempfile::TempDir, Arc<dyn SecretStore>, Arc<RotationState>, Arc<crate::node::fakes::FakeContainers>) {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(crate::node::access_log::AccessLog::open(&dir.path().join("a.log")).unwrap());
    let containers = Arc::new(crate::node::fakes::FakeContainers::default());
    let rotation_state = RotationState::new(Hub::new(Default::default()), containers.clone(), log);
    let store = Arc::new(FakeStore::default());
    let name = SecretName::parse("db").unwrap();
    store.put(&name, &SecretBytes::from_slice(b"s3cret-value"), None).unwrap();
    store.grant(&name, &GrantTarget::parse("shop/app").unwrap()).unwrap();
    (dir, store, rotation_state, containers)
}

fn request(action: String) -> NotifyRequest {
    NotifyRequest {
        action,
        target: None,
        secrets: vec![Changed { name: SecretName::parse("db").unwrap(), version: 1 }],
    }
}

#[tokio::test]
async fn another_service_is_reached_only_if_it_consented() {
    let (_d, store, rotation_state, containers) = rig();
    containers.add("shop", "app", "app1", None);
    containers.add("shop", "db", "db1", None);
    let who = attested("shop", "app", "sidecar1");
    let mut req = request("signal:HUP".into());
    req.target = Some("db".into());
    let err = notify(&store, &rotation_state, &who, req.clone()).await.unwrap_err();
    assert_eq!(err.code, "target_not_declared", "{}", err.message);
    assert!(err.message.contains("seg.notify-from: app"), "{}", err.message);
    let err = notify(&store, &rotation_state, &who, request("http://db:80/reload".into())).await.unwrap_err();
    assert_eq!(err.code, "target_not_declared");
    assert!(containers.signals.lock().unwrap().is_empty(), "nothing was signalled");
    // The db service consents: only its consenting container is reached.
    containers.add_notified_by("shop", "db", "db2", None, &["app"]);
    let done = notify(&store, &rotation_state, &who, req).await.unwrap();
    assert_eq!(done.targets.len(), 1, "{:?}", done.targets);
    assert_eq!(containers.signals.lock().unwrap().as_slice(), [("db2".to_owned(), "SIGHUP".to_owned())]);
    // Its own service needs no consent.
    notify(&store, &rotation_state, &who, request("signal:HUP".into())).await.unwrap();
}

#[tokio::test]
async fn http_posts_names_and_versions_to_a_service_of_the_same_project() {
    let (_d, store, rotation_state, containers) = rig();
    let (port, server) = one_shot_server("204 No Content").await;
    containers.add("shop", "app", "app1", Some("127.0.0.1".parse().unwrap()));
    let who = attested("shop", "app", "sidecar1");
    let done =
        notify(&store, &rotation_state, &who, request(format!("http://app:{port}/-/reload"))).await.unwrap();
    assert_eq!(done.targets.len(), 1);
    let seen = server.await.unwrap();
    assert!(seen.starts_with("POST /-/reload HTTP/1.1\r\n"), "{seen}");
    assert!(seen.contains(r#"{"secrets":[{"name":"db","version":1}]}"#), "{seen}");
    assert!(!seen.contains("s3cret"));
}

#[tokio::test]
async fn http_errors_and_missing_targets_are_reported() {
    let (_d, store, rotation_state, containers) = rig();
    let who = attested("shop", "app", "sidecar1");
    let err = notify(&store, &rotation_state, &who, request("http://app:1/x".into())).await.unwrap_err();
    assert_eq!(err.code, "no_target");
    let (port, _server) = one_shot_server("500 Oops").await;
    containers.add("shop", "app", "app1", Some("127.0.0.1".parse().unwrap()));
    let err =
        notify(&store, &rotation_state, &who, request(format!("http://app:{port}/x"))).await.unwrap_err();
    assert_eq!(err.code, "hook_failed");
    assert!(err.message.contains("HTTP 500"), "{}", err.message);
}
