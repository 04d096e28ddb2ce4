//! Membership without a network: a real CA and real certificates, the
//! files in a temp directory, the records in a [`MemoryKv`].

use super::*;
use crate::cluster::ca::{cert_der, request};
use crate::cluster::files::Bundle;
use crate::store::memory_kv::MemoryKv;
use seg_common::secret::SecretBytes;

struct Rig {
    _dir: tempfile::TempDir,
    node: ClusterNode,
    kv: Arc<MemoryKv>,
}

fn rig_with(holds_ca: bool) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ca = ClusterCa::create("t").unwrap();
    let (key, csr) = request("a").unwrap();
    let subject = Subject { role: Role::Node, name: "a".into(), hosts: vec!["127.0.0.1".into()] };
    let cert = ca.issue(&csr, &subject, Duration::from_secs(3600)).unwrap();
    let kv = Arc::new(MemoryKv::default());
    let dir_records = Directory { kv: kv.as_ref() };
    dir_records
        .create(&ClusterMeta {
            format: 1,
            ca_cert: ca.cert_pem().into(),
            ca_fingerprint: ca.fingerprint().into(),
            ca_url: "https://127.0.0.1:7443".into(),
            cert_ttl_ms: 3_600_000,
            created_at_ms: 1,
            created_on: "a".into(),
            kek_id: "k".into(),
        })
        .unwrap();
    let member = Member {
        name: "a".into(),
        role: Role::Node,
        address: "127.0.0.1:7443".into(),
        certs: vec![cert.clone()],
        joined_at_ms: 1,
        version: "t".into(),
    };
    assert!(dir_records.add_member(&member).unwrap());
    let config = ClusterConfig {
        format: 1,
        node_name: "a".into(),
        etcd_endpoints: vec!["https://127.0.0.1:2379".into()],
        etcd_prefix: "/seg".into(),
        etcd_identity: None,
        listen: "127.0.0.1:7443".into(),
        advertise: "127.0.0.1:7443".into(),
        ca_url: "https://127.0.0.1:7443".into(),
    };
    let bundle = Bundle {
        config,
        ca_cert: ca.cert_pem().into(),
        etcd_ca: "ETCD CA".into(),
        node_cert: cert.pem,
        node_key: key,
        kek: SecretBytes::from_slice(&[7; 32]),
        ca_key: holds_ca.then(|| ca.key_pem()),
    };
    files::install(&state, &bundle).unwrap();
    let node = ClusterNode::open(state, kv.clone(), None).unwrap();
    Rig { _dir: dir, node, kv }
}

fn join_request(node: &ClusterNode, name: &str) -> (JoinRequest, JoinToken) {
    let (token, _) = node.token(Duration::from_secs(60)).unwrap();
    let (_, csr) = request(name).unwrap();
    let req = JoinRequest {
        token: token.reveal().to_string(),
        name: name.into(),
        advertise: "127.0.0.2:7443".into(),
        csr,
    };
    (req, token)
}

#[test]
fn a_token_admits_one_node_once() {
    let rig = rig_with(true);
    let (req, _) = join_request(&rig.node, "b");
    let answer = rig.node.join(req.clone()).unwrap();
    let kek = base64::engine::general_purpose::STANDARD.decode(&answer.kek_b64).unwrap();
    assert_eq!((kek, answer.etcd_ca.as_str()), (vec![7; 32], "ETCD CA"));
    let der = cert_der(&answer.cert.pem).unwrap();
    assert_eq!(rig.node.caller(Some(&der)), Caller::Member { role: Role::Node, name: "b".into() });
    let again = rig.node.join(JoinRequest { name: "c".into(), ..req }).unwrap_err().to_string();
    assert!(again.contains("used already"), "{again}");
    let (taken, token) = join_request(&rig.node, "a");
    let err = rig.node.join(taken).unwrap_err().to_string();
    assert!(err.contains("named a is in the cluster already"), "{err}");
    assert!(
        rig.kv.get(&format!("tokens/{}", token.id())).unwrap().is_some(),
        "a refused join keeps the token"
    );
    assert_eq!(rig.node.caller(None), Caller::Anonymous);
}

#[test]
fn foreign_tokens_and_nodes_without_the_ca_are_refused() {
    let rig = rig_with(true);
    let (mut req, _) = join_request(&rig.node, "b");
    req.token = JoinToken::generate(&"ab".repeat(32)).reveal().to_string();
    assert!(rig.node.join(req).unwrap_err().to_string().contains("another cluster"));
    let plain = rig_with(false);
    let (req, _) = join_request(&plain.node, "b");
    let err = plain.node.join(req).unwrap_err().to_string();
    assert!(
        err.contains("does not hold the cluster CA's key") && err.contains("https://127.0.0.1:7443"),
        "{err}"
    );
}

#[test]
fn a_renewal_keeps_the_previous_certificate_and_a_removal_refuses_both() {
    let rig = rig_with(true);
    let (req, _) = join_request(&rig.node, "b");
    let first = cert_der(&rig.node.join(req).unwrap().cert.pem).unwrap();
    let (_, csr) = request("b").unwrap();
    let second = cert_der(&rig.node.renew(Role::Node, "b", &csr).unwrap().cert.pem).unwrap();
    let b = Caller::Member { role: Role::Node, name: "b".into() };
    assert_eq!((rig.node.caller(Some(&first)), rig.node.caller(Some(&second))), (b.clone(), b));
    rig.node.remove(Role::Node, "b").unwrap();
    assert!(matches!(rig.node.caller(Some(&first)), Caller::Revoked { .. }));
    assert!(matches!(rig.node.caller(Some(&second)), Caller::Revoked { .. }));
    let err = rig.node.renew(Role::Node, "b", &csr).unwrap_err().to_string();
    assert!(err.contains("not a member"), "{err}");
    assert!(rig.node.remove(Role::Node, "b").unwrap_err().to_string().contains("no node named b"));
}

#[test]
fn a_removed_node_does_not_start_again() {
    let rig = rig_with(true);
    rig.node.remove(Role::Node, "a").unwrap();
    assert!(!rig.node.is_member());
    let again =
        ClusterNode::open(rig.node.state_dir.clone(), rig.kv.clone(), None).err().unwrap().to_string();
    assert!(again.contains("was removed from the cluster") && again.contains("cluster join"), "{again}");
}

#[test]
fn admin_certificates_are_members_of_their_own() {
    let rig = rig_with(true);
    let (_, csr) = request("ops").unwrap();
    let req = AdminCertRequest { name: "ops".into(), csr, ttl_ms: 60_000 };
    let der = cert_der(&rig.node.admin_cert(&req).unwrap().cert.pem).unwrap();
    assert_eq!(rig.node.caller(Some(&der)), Caller::Member { role: Role::Admin, name: "ops".into() });
    let rows = rig.node.nodes().unwrap().nodes;
    let names: Vec<(&str, &str)> = rows.iter().map(|r| (r.name.as_str(), r.role.as_str())).collect();
    assert_eq!(names, [("a", "node"), ("ops", "admin")]);
    rig.node.remove(Role::Admin, "ops").unwrap();
    assert!(matches!(rig.node.caller(Some(&der)), Caller::Revoked { .. }));
}
