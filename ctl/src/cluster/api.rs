//! Bodies of the cluster endpoint's requests and answers (JSON), and of the
//! admin API's cluster routes.

use super::ca::Issued;
use serde::{Deserialize, Serialize};

pub const JOIN: &str = "/v1/cluster/join";
pub const RENEW: &str = "/v1/cluster/renew";
pub const NODES: &str = "/v1/cluster/nodes";
pub const TOKENS: &str = "/v1/cluster/tokens";
pub const ADMIN_CERTS: &str = "/v1/cluster/admin-certs";

/// `POST /v1/cluster/join`, without a client certificate.
#[derive(Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token: String,
    pub name: String,
    /// `HOST:PORT` the joining node's endpoint will be reached at.
    pub advertise: String,
    pub csr: String,
}

/// Never the token (a one-time credential).
impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRequest")
            .field("name", &self.name)
            .field("advertise", &self.advertise)
            .finish_non_exhaustive()
    }
}

/// What a joining node gets: its certificate, the CA's, the KEK (base64:
/// the answer is read into locked memory and the connection closed), and
/// where etcd is.
#[derive(Clone, Serialize, Deserialize)]
pub struct JoinAnswer {
    pub cert: Issued,
    pub ca_cert: String,
    pub kek_b64: String,
    pub etcd_endpoints: Vec<String>,
    pub etcd_prefix: String,
    pub etcd_ca: String,
    pub ca_url: String,
}

impl std::fmt::Debug for JoinAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinAnswer").field("serial", &self.cert.serial).finish_non_exhaustive()
    }
}

/// `POST /v1/cluster/renew`, with the node's current certificate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RenewRequest {
    pub csr: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RenewAnswer {
    pub cert: Issued,
}

/// `POST /v1/cluster/tokens`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenRequest {
    pub ttl_ms: u64,
}

/// The token (shown once) and the command that uses it.
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenAnswer {
    pub token: String,
    pub expires_at_ms: u64,
    pub ca_url: String,
}

impl TokenAnswer {
    /// What `cluster token` and `cluster init` print: the command to run on the new node.
    pub fn join_command(&self) -> String {
        let left_ms = self.expires_at_ms.saturating_sub(super::ca::millis(std::time::SystemTime::now()));
        format!(
            "To add a node, run this on it within {} (the token works once):\n\n    \
             segctl cluster join {} --server {}\n\n\
             (add --etcd-cert FILE --etcd-key FILE for its etcd client certificate, and --advertise HOST:PORT)",
            humantime::format_duration(std::time::Duration::from_secs(left_ms.div_ceil(1000))),
            self.token,
            self.ca_url
        )
    }
}

impl std::fmt::Debug for TokenAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenAnswer(…)")
    }
}

/// `POST /v1/cluster/admin-certs`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdminCertRequest {
    pub name: String,
    pub csr: String,
    pub ttl_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdminCertAnswer {
    pub cert: Issued,
    pub ca_cert: String,
}

/// One row of `segctl cluster ls`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRow {
    pub name: String,
    pub role: String,
    pub address: String,
    pub cert_expires_at_ms: u64,
    /// When the node last published its report (`None`: not seen since this
    /// node started, or an admin).
    pub last_seen_ms: Option<u64>,
    pub version: String,
    pub joined_at_ms: u64,
}

/// `GET /v1/cluster/nodes`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeList {
    pub cluster_ca: String,
    pub nodes: Vec<NodeRow>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_request_does_not_show_its_token() {
        let req = JoinRequest {
            token: "SEGTKN-1-secret".into(),
            name: "n".into(),
            advertise: "a:1".into(),
            csr: "c".into(),
        };
        assert!(!format!("{req:?}").contains("SEGTKN"), "{req:?}");
    }
}
