//! The cluster's own certificate authority, made in Rust (rcgen, ECDSA
//! P-256 on ring): it signs node certificates (server and client auth) and
//! admin certificates (client auth) from certificate requests, so a
//! private key never leaves the machine that made it.
//!
//! What a certificate says about its holder is in its subject: the common
//! name is the node's (or the admin's) name and the organizational unit its
//! [`Role`]. Everything else a request asks for is ignored: the CA decides
//! the names, the key usages and the lifetime.

use super::ClusterError;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use seg_common::secret::SecretBytes;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the CA itself is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Accepted clock difference between machines: a certificate is valid from
/// a little before it was made.
const SKEW: Duration = Duration::from_secs(300);

/// What a certificate lets its holder do on a seg endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A node: renews its own certificate; nothing else.
    Node,
    /// An operator: every admin command (`segctl --server`).
    Admin,
}

impl Role {
    /// The organizational unit that carries the role.
    fn unit(self) -> &'static str {
        match self {
            Role::Node => "seg-node",
            Role::Admin => "seg-admin",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Admin => "admin",
        }
    }
}

/// Who a certificate is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    pub role: Role,
    pub name: String,
    /// Host names or addresses the holder serves on (nodes only).
    pub hosts: Vec<String>,
}

/// A certificate the CA signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    pub pem: String,
    pub serial: String,
    pub not_after_ms: u64,
}

pub struct ClusterCa {
    cert_pem: String,
    fingerprint: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

fn cert_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> ClusterError {
    move |e| ClusterError::Certificate { what, cause: e.to_string() }
}

impl ClusterCa {
    /// A new CA for the cluster `label` (shown in its name only).
    pub fn create(label: &str) -> Result<ClusterCa, ClusterError> {
        let key = KeyPair::generate().map_err(cert_err("making the cluster CA's key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&format!("seg cluster CA ({label})"), "seg-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial());
        let now = SystemTime::now();
        params.not_before = (now - SKEW).into();
        params.not_after = (now + CA_LIFETIME).into();
        let cert = params.self_signed(&key).map_err(cert_err("signing the cluster CA"))?;
        let cert_pem = cert.pem();
        Ok(ClusterCa { fingerprint: fingerprint(cert.der()), cert_pem, issuer: Issuer::new(params, key) })
    }

    /// The CA from its certificate and its key (PEM).
    pub fn load(cert_pem: &str, key_pem: &SecretBytes) -> Result<ClusterCa, ClusterError> {
        let text = std::str::from_utf8(key_pem.expose()).map_err(|_| ClusterError::Certificate {
            what: "reading the cluster CA's key",
            cause: "it is not PEM text".into(),
        })?;
        let key = KeyPair::from_pem(text).map_err(cert_err("reading the cluster CA's key"))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(cert_err("reading the cluster CA"))?;
        Ok(ClusterCa { fingerprint: fingerprint_of_pem(cert_pem)?, cert_pem: cert_pem.to_owned(), issuer })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// SHA-256 of the CA certificate, hex: what a join token pins.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The CA's private key as PEM, in locked memory (for its 0600 file).
    pub fn key_pem(&self) -> SecretBytes {
        let pem = zeroize::Zeroizing::new(self.issuer.key().serialize_pem());
        SecretBytes::from_slice(pem.as_bytes())
    }

    /// Signs the key of `csr_pem` for `subject`, valid for `lifetime`.
    pub fn issue(
        &self,
        csr_pem: &str,
        subject: &Subject,
        lifetime: Duration,
    ) -> Result<Issued, ClusterError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            ClusterError::BadRequest(format!("the certificate request is not a valid signed CSR: {e}"))
        })?;
        let now = SystemTime::now();
        let not_after = now + lifetime;
        let serial = random_serial();
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&subject.name, subject.role.unit());
        params.serial_number = Some(serial.clone());
        params.not_before = (now - SKEW).into();
        params.not_after = not_after.into();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.extended_key_usages = match subject.role {
            Role::Node => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            Role::Admin => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.subject_alt_names = subject.hosts.iter().map(|h| san(h)).collect::<Result<_, _>>()?;
        csr.params = params;
        let cert = csr.signed_by(&self.issuer).map_err(cert_err("signing the certificate"))?;
        Ok(Issued { pem: cert.pem(), serial: hex(serial.as_ref()), not_after_ms: millis(not_after) })
    }
}

/// A fresh key pair and a request for `name`'s certificate: the key stays
/// with the caller (PEM in locked memory), the request goes to the CA.
pub fn request(name: &str) -> Result<(SecretBytes, String), ClusterError> {
    let key = KeyPair::generate().map_err(cert_err("making a key pair"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = self::name(name, "seg-request");
    let csr = params.serialize_request(&key).map_err(cert_err("making the certificate request"))?;
    let csr = csr.pem().map_err(cert_err("encoding the certificate request"))?;
    let pem = zeroize::Zeroizing::new(key.serialize_pem());
    Ok((SecretBytes::from_slice(pem.as_bytes()), csr))
}

/// What a peer's certificate (already verified against the CA) says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCert {
    pub role: Role,
    pub name: String,
    pub serial: String,
    pub not_after_ms: u64,
}

impl PeerCert {
    pub fn parse(der: &[u8]) -> Result<PeerCert, ClusterError> {
        let bad = |why: &str| ClusterError::BadRequest(format!("the client certificate {why}"));
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| bad("cannot be parsed"))?;
        let subject = cert.subject();
        let text = |attr: Option<&x509_parser::x509::AttributeTypeAndValue<'_>>| {
            attr.and_then(|a| a.as_str().ok()).map(str::to_owned)
        };
        let name = text(subject.iter_common_name().next()).ok_or_else(|| bad("has no common name"))?;
        let unit = text(subject.iter_organizational_unit().next()).unwrap_or_default();
        let role = [Role::Node, Role::Admin]
            .into_iter()
            .find(|r| r.unit() == unit)
            .ok_or_else(|| bad("is not a seg node or admin certificate"))?;
        let not_after_ms = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0) * 1000;
        Ok(PeerCert { role, name, serial: hex(cert.raw_serial()), not_after_ms })
    }
}

/// SHA-256 of a DER certificate, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

pub fn fingerprint_of_pem(pem: &str) -> Result<String, ClusterError> {
    Ok(fingerprint(&cert_der(pem)?))
}

/// The first certificate of a PEM text.
pub fn cert_der(pem: &str) -> Result<CertificateDer<'static>, ClusterError> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| ClusterError::Certificate { what: "reading a PEM certificate", cause: e.to_string() })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn name(common: &str, unit: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common);
    dn.push(DnType::OrganizationalUnitName, unit);
    dn
}

fn san(host: &str) -> Result<SanType, ClusterError> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let bad = || ClusterError::BadRequest(format!("{host:?} is neither an IP address nor a host name"));
    let label_ok =
        |l: &str| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(bad());
    }
    let dns = host.try_into().map_err(|_| bad())?;
    Ok(SanType::DnsName(dns))
}

/// 16 random bytes, high bit clear (a positive DER integer of fixed length).
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system RNG works");
    bytes[0] &= 0x7f;
    bytes[0] |= 0x40;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
#[path = "ca_tests.rs"]
mod tests;
