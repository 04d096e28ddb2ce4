//! Renews this node's certificate before it expires: at two thirds of its
//! life, with a fresh key (the old key is not reused), through the CA node
//! (or directly, on the CA node). A failure is retried every
//! [`RETRY`] until the certificate expires — then the other nodes and
//! admins refuse this node's endpoint, and `segctl status` says so.

use super::cluster_node::ClusterNode;
use crate::cluster::api::{self, RenewAnswer, RenewRequest};
use crate::cluster::ca::{millis, request, PeerCert, Role};
use crate::cluster::remote::Endpoint;
use crate::cluster::{files, tls, ClusterError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const RETRY: Duration = Duration::from_secs(30);

pub async fn run(node: Arc<ClusterNode>) {
    loop {
        let wait = until_renewal(&node);
        tokio::time::sleep(wait).await;
        match renew(&node).await {
            Ok(not_after_ms) => tracing::info!(
                node = %node.config.node_name,
                expires_in_s = not_after_ms.saturating_sub(millis(SystemTime::now())) / 1000,
                "renewed this node's certificate"
            ),
            Err(e) => {
                tracing::warn!(node = %node.config.node_name, "cannot renew this node's certificate: {e}; retrying in {} s", RETRY.as_secs());
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Time left until two thirds of the current certificate's life.
fn until_renewal(node: &ClusterNode) -> Duration {
    let Some(not_after) = current(node).map(|c| c.not_after_ms) else { return Duration::ZERO };
    let life = node.meta.cert_ttl_ms;
    let at = not_after.saturating_sub(life / 3);
    Duration::from_millis(at.saturating_sub(millis(SystemTime::now())))
}

fn current(node: &ClusterNode) -> Option<PeerCert> {
    let cert = node.cert.current();
    PeerCert::parse(cert.cert.first()?).ok()
}

/// Returns the new certificate's expiry.
async fn renew(node: &Arc<ClusterNode>) -> Result<u64, ClusterError> {
    let name = node.config.node_name.clone();
    let (key, csr) = request(&name)?;
    let answer: RenewAnswer = if node.ca.is_some() {
        let n = node.clone();
        tokio::task::spawn_blocking(move || n.renew(Role::Node, &name, &csr))
            .await
            .map_err(|e| ClusterError::BadRequest(e.to_string()))??
    } else {
        let identity = files::node_pem(&node.state_dir)?;
        let config = tls::client(&node.meta.ca_cert, Some(&identity))?;
        Endpoint::parse(&node.meta.ca_url)?.call(config, "POST", api::RENEW, &RenewRequest { csr }).await?
    };
    let pem = crate::cluster::pem_pair(&answer.cert.pem, &key);
    // The file first: a crash then leaves the new pair, which the CA honours.
    files::replace_node_pem(&node.state_dir, &answer.cert.pem, &key)?;
    node.cert.replace(&pem, &node.meta.ca_cert)?;
    Ok(answer.cert.not_after_ms)
}
