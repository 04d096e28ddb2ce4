use super::*;
use rustls::client::danger::ServerCertVerifier;

fn node(name: &str) -> Subject {
    Subject { role: Role::Node, name: name.into(), hosts: vec!["127.0.0.1".into(), "node-1.example".into()] }
}

#[test]
fn a_signed_request_carries_the_cas_names_not_the_requesters() {
    let ca = ClusterCa::create("test").unwrap();
    let (key, csr) = request("i-want-to-be-admin").unwrap();
    assert!(std::str::from_utf8(key.expose()).unwrap().contains("PRIVATE KEY"));
    let issued = ca.issue(&csr, &node("n1"), Duration::from_secs(3600)).unwrap();
    let der = cert_der(&issued.pem).unwrap();
    let peer = PeerCert::parse(&der).unwrap();
    assert_eq!(
        (peer.role, peer.name.as_str(), peer.serial.as_str()),
        (Role::Node, "n1", issued.serial.as_str())
    );
    let in_an_hour = millis(SystemTime::now()) + 3_600_000;
    assert!(peer.not_after_ms.abs_diff(in_an_hour) < 5_000, "{} vs {in_an_hour}", peer.not_after_ms);
    let admin = Subject { role: Role::Admin, name: "ops".into(), hosts: vec![] };
    let issued = ca.issue(&csr, &admin, Duration::from_secs(60)).unwrap();
    assert_eq!(PeerCert::parse(&cert_der(&issued.pem).unwrap()).unwrap().role, Role::Admin);
}

#[test]
fn the_ca_survives_a_round_trip_through_its_files() {
    let ca = ClusterCa::create("test").unwrap();
    let again = ClusterCa::load(ca.cert_pem(), &ca.key_pem()).unwrap();
    assert_eq!(again.fingerprint(), ca.fingerprint());
    assert_eq!(fingerprint_of_pem(ca.cert_pem()).unwrap(), ca.fingerprint());
    let (_, csr) = request("n2").unwrap();
    let issued = again.issue(&csr, &node("n2"), Duration::from_secs(60)).unwrap();
    // Signed by the same key: the original CA's certificate verifies it.
    let roots = {
        let mut r = rustls::RootCertStore::empty();
        r.add(cert_der(ca.cert_pem()).unwrap()).unwrap();
        std::sync::Arc::new(r)
    };
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider).build().unwrap();
    let name = rustls_pki_types::ServerName::try_from("node-1.example").unwrap();
    let now = rustls_pki_types::UnixTime::now();
    verifier.verify_server_cert(&cert_der(&issued.pem).unwrap(), &[], &name, &[], now).unwrap();
    assert!(!format!("{ca:?}").contains("PRIVATE"));
}

#[test]
fn garbage_requests_and_hosts_are_refused_with_the_reason() {
    let ca = ClusterCa::create("test").unwrap();
    let err = ca.issue("not a csr", &node("n1"), Duration::from_secs(60)).unwrap_err().to_string();
    assert!(err.contains("not a valid signed CSR"), "{err}");
    let (_, csr) = request("n1").unwrap();
    let bad = Subject { hosts: vec!["bad host!".into()], ..node("n1") };
    let err = ca.issue(&csr, &bad, Duration::from_secs(60)).unwrap_err().to_string();
    assert!(err.contains("neither an IP address nor a host name"), "{err}");
    let other = ClusterCa::create("other").unwrap();
    assert_ne!(other.fingerprint(), ca.fingerprint());
    assert!(PeerCert::parse(b"junk").is_err());
}
