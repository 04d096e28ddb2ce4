//! The endpoint's TLS, in process over a pipe: who gets through the
//! handshake, and what a refused client is told.

use super::*;
use crate::cluster::ca::{request, ClusterCa, Role, Subject};
use std::time::Duration;

fn issued(ca: &ClusterCa, role: Role, name: &str, lifetime: Duration) -> SecretBytes {
    let (key, csr) = request(name).unwrap();
    let hosts = if role == Role::Node { vec!["localhost".into()] } else { vec![] };
    let cert = ca.issue(&csr, &Subject { role, name: name.into(), hosts }, lifetime).unwrap();
    crate::cluster::pem_pair(&cert.pem, &key)
}

/// Handshakes a client with `identity` against a node of `ca`; the peer
/// certificate the server saw, or the client's error.
async fn handshake(ca: &ClusterCa, client: Arc<ClientConfig>) -> Result<bool, String> {
    let node = issued(ca, Role::Node, "n1", Duration::from_secs(3600));
    let server = server(ca.cert_pem(), Arc::new(NodeCert::new(&node, ca.cert_pem()).unwrap())).unwrap();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let accept = tokio::spawn(async move {
        let tls = tokio_rustls::TlsAcceptor::from(server).accept(b).await.map_err(|e| e.to_string())?;
        Ok::<bool, String>(tls.get_ref().1.peer_certificates().is_some())
    });
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn =
        tokio_rustls::TlsConnector::from(client).connect(name, a).await.map_err(|e| e.to_string())?;
    // TLS 1.3: the client learns of a refused certificate on its first read.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = conn.write_all(b"x").await;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut byte)).await;
    match accept.await.unwrap() {
        Ok(saw) => Ok(saw),
        Err(server_side) => Err(format!("{server_side} / client read: {read:?}")),
    }
}

#[tokio::test]
async fn members_anonymous_clients_and_strangers_at_the_handshake() {
    let ca = ClusterCa::create("t").unwrap();
    let admin = issued(&ca, Role::Admin, "ops", Duration::from_secs(60));
    assert_eq!(handshake(&ca, client(ca.cert_pem(), Some(&admin)).unwrap()).await, Ok(true));
    // Without a certificate: through the handshake (to join), refused per request.
    assert_eq!(handshake(&ca, client(ca.cert_pem(), None).unwrap()).await, Ok(false));
    // A certificate of another CA is refused at once.
    let other = ClusterCa::create("other").unwrap();
    let stranger = issued(&other, Role::Admin, "ops", Duration::from_secs(60));
    let err = handshake(&ca, client(ca.cert_pem(), Some(&stranger)).unwrap()).await.unwrap_err();
    assert!(err.contains("UnknownIssuer") || err.contains("unknown issuer"), "{err}");
}

#[tokio::test]
async fn an_expired_certificate_is_refused_with_the_reason() {
    let ca = ClusterCa::create("t").unwrap();
    let short = issued(&ca, Role::Admin, "ops", Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = handshake(&ca, client(ca.cert_pem(), Some(&short)).unwrap()).await.unwrap_err();
    assert!(err.to_lowercase().contains("expired"), "{err}");
}

#[tokio::test]
async fn a_joining_node_accepts_only_the_server_of_its_token() {
    let ca = ClusterCa::create("t").unwrap();
    assert_eq!(handshake(&ca, pinned(ca.fingerprint()).unwrap()).await, Ok(false));
    let impostor = ClusterCa::create("impostor").unwrap();
    let err = handshake(&impostor, pinned(ca.fingerprint()).unwrap()).await.unwrap_err();
    assert!(err.contains("alert") || err.contains("not of the cluster"), "{err}");
}
