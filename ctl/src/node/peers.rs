//! The other nodes of a cluster, as far as rotation needs them: their
//! reports of their consumers (streams and acknowledged versions) in the
//! cluster's [`NodeRegistry`], merged into `secret status` and into what
//! `rotate --wait` and post-rotate exec hooks wait for (`RotationState`),
//! so they cover every node. This node's own report is kept current by
//! `peer_sync`. A node that dies or loses etcd drops out within the
//! registry's lease TTL, so nobody waits for it forever.

use crate::store::NodeRegistry;
use seg_common::api::Consumer;
use seg_common::name::SecretName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One node's report, as it is stored in the registry.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The consumers of each secret this node has any for.
    pub consumers: BTreeMap<SecretName, Vec<Consumer>>,
    /// When the node published it (ms since the epoch): `cluster ls`'s
    /// "last seen". Not part of what decides whether to publish again.
    #[serde(default)]
    pub at_ms: u64,
}

/// The other nodes' reports, read by `RotationState::status`.
pub struct Peers {
    pub registry: Arc<dyn NodeRegistry>,
    /// This node's name (its own report is not another node's).
    pub node: String,
}

impl Peers {
    /// The consumers of `name` on every other node, each with its node.
    pub fn consumers_of(&self, name: &SecretName) -> Vec<Consumer> {
        let mut out = Vec::new();
        for (node, bytes) in self.registry.reports() {
            if node == self.node {
                continue;
            }
            let Ok(mut report) = serde_json::from_slice::<NodeReport>(&bytes) else {
                tracing::warn!(node, "ignoring a node report that does not decode (another seg version?)");
                continue;
            };
            for mut c in report.consumers.remove(name).unwrap_or_default() {
                c.node = Some(node.clone());
                out.push(c);
            }
        }
        out
    }
}

/// Removes this node's report on a clean stop (the other nodes drop its
/// consumers at once rather than when its lease runs out).
pub async fn withdraw(peers: Arc<Peers>) {
    let withdrawn = tokio::task::spawn_blocking(move || peers.registry.withdraw(&peers.node)).await;
    if let Ok(Err(e)) = withdrawn {
        tracing::warn!(error = %e, "withdrawing this node's consumers from the cluster");
    }
}
