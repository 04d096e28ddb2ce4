//! rustls configurations of the cluster endpoint and its clients (ring as
//! the crypto provider, TLS 1.2 and 1.3, HTTP/1.1).
//!
//! - The endpoint presents its node certificate with the CA certificate
//!   after it, and asks every client for a certificate of the cluster CA.
//!   A client without one is let through the handshake only so that
//!   `POST /v1/cluster/join` (which a token authorizes) can be answered;
//!   every other request refuses it (`node/cluster_endpoint.rs`).
//! - An admin or a node checks the endpoint against the CA certificate.
//! - A node that joins has no CA certificate yet, only its fingerprint from
//!   the token: [`pinned`] accepts the server only if the chain it presents
//!   holds a CA certificate with that fingerprint and the server's
//!   certificate verifies against it, name included.

use super::ca::{cert_der, fingerprint};
use super::ClusterError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use seg_common::secret::SecretBytes;
use std::sync::{Arc, RwLock};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(what: &'static str) -> impl FnOnce(rustls::Error) -> ClusterError {
    move |e| ClusterError::Certificate { what, cause: e.to_string() }
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, ClusterError> {
    let mut roots = RootCertStore::empty();
    roots.add(cert_der(ca_pem)?).map_err(tls_err("trusting the cluster CA"))?;
    Ok(Arc::new(roots))
}

/// A certificate chain and its key from PEM text (`node.pem`: certificate
/// then key; an admin's two files concatenated).
pub fn identity(
    pem: &SecretBytes,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ClusterError> {
    let bad = |cause: String| ClusterError::Certificate { what: "reading a certificate and its key", cause };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.expose())
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(pem.expose()).map_err(|e| bad(format!("no private key: {e}")))?;
    Ok((certs, key))
}

/// The endpoint's certificate, replaced in place when it is renewed.
#[derive(Debug)]
pub struct NodeCert(RwLock<Arc<CertifiedKey>>);

impl NodeCert {
    /// From `node.pem`, with the CA certificate appended to the chain.
    pub fn new(node_pem: &SecretBytes, ca_pem: &str) -> Result<NodeCert, ClusterError> {
        Ok(NodeCert(RwLock::new(Arc::new(certified(node_pem, ca_pem)?))))
    }

    pub fn replace(&self, node_pem: &SecretBytes, ca_pem: &str) -> Result<(), ClusterError> {
        let key = Arc::new(certified(node_pem, ca_pem)?);
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = key;
        Ok(())
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn certified(node_pem: &SecretBytes, ca_pem: &str) -> Result<CertifiedKey, ClusterError> {
    let (mut chain, key) = identity(node_pem)?;
    chain.truncate(1);
    chain.push(cert_der(ca_pem)?);
    CertifiedKey::from_der(chain, key, &provider()).map_err(tls_err("loading the node certificate"))
}

impl ResolvesServerCert for NodeCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The endpoint's configuration.
pub fn server(ca_pem: &str, cert: Arc<NodeCert>) -> Result<Arc<ServerConfig>, ClusterError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| ClusterError::Certificate { what: "trusting the cluster CA", cause: e.to_string() })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err("configuring TLS"))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client that trusts the cluster CA, with a certificate of its own (an
/// admin's or a node's) or none.
pub fn client(ca_pem: &str, identity_pem: Option<&SecretBytes>) -> Result<Arc<ClientConfig>, ClusterError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err("configuring TLS"))?
        .with_root_certificates(roots(ca_pem)?);
    let mut config = match identity_pem {
        Some(pem) => {
            let (chain, key) = identity(pem)?;
            builder.with_client_auth_cert(chain, key).map_err(tls_err("loading the client certificate"))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client for joining: the server must present the CA of `fingerprint`.
pub fn pinned(fingerprint: &str) -> Result<Arc<ClientConfig>, ClusterError> {
    let verifier = Arc::new(Pinned { fingerprint: fingerprint.to_owned(), provider: provider() });
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err("configuring TLS"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates.iter().find(|c| fingerprint(c) == self.fingerprint).ok_or_else(|| {
            rustls::Error::General(format!(
                "the server is not of the cluster in the token: it presents no CA certificate with \
                 fingerprint {}…",
                &self.fingerprint[..12]
            ))
        })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        webpki.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
