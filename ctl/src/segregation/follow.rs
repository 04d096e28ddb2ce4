//! On a node of a cluster, the applied policies and the ICC setting are the
//! cluster's: a `segctl policy apply` on any node stores the policy in etcd
//! (`store_cluster.rs`), and every node reads the cluster's set every
//! [`FOLLOW`] and installs here what differs — applied, replaced or removed
//! through the same steps as a local `apply` (networks created, attachments
//! fixed, one transaction), only without writing the store back. Each node
//! enforces the policies on its own containers (docs/cluster.md says what
//! that means for traffic between hosts).
//!
//! Records compare by their source and owned grants, not by when they were
//! applied, so nodes never bounce a policy between them.

use super::api::{DeclaredGrant, PolicySource};
use super::ops::OpError;
use super::{blocking, Segregation};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub const FOLLOW: Duration = Duration::from_secs(1);

type Wanted = BTreeMap<String, (PolicySource, Vec<DeclaredGrant>)>;

impl Segregation {
    /// Takes in the cluster's changes until the task is aborted.
    pub(super) fn follow_cluster(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let seg = self.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::time::sleep(FOLLOW).await;
                match seg.catch_up().await {
                    Ok(()) => failing = false,
                    // Once per run of failures: etcd down, Docker not up yet.
                    Err(e) if !failing => {
                        tracing::warn!("taking in the cluster's policies: {e}; retrying every second");
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
        })
    }

    /// Installs here what the cluster's set has and this node's lacks or
    /// holds otherwise, and removes what the cluster no longer has.
    async fn catch_up(&self) -> Result<(), OpError> {
        let _changing = self.changing.lock().await;
        let (remote, icc) = blocking(|| Ok::<_, OpError>((self.store.load_all()?, self.store.load_icc()?)))?;
        let remote: Wanted =
            remote.into_iter().map(|(r, _)| (r.name.clone(), (r.source, r.grants))).collect();
        let (local, local_icc): (Wanted, bool) = {
            let st = self.state.lock().await;
            let local = st.records().iter().map(|(n, r)| (n.clone(), (r.source.clone(), r.grants.clone())));
            (local.collect(), st.docker0_icc)
        };
        for (name, (source, grants)) in &remote {
            if local.get(name) != Some(&(source.clone(), grants.clone())) {
                self.install(source.clone(), grants.clone(), false).await?;
                tracing::info!(policy = %name, "applied the cluster's policy on this node");
            }
        }
        for name in local.keys().filter(|n| !remote.contains_key(*n)) {
            self.uninstall(name, false).await?;
            tracing::info!(policy = %name, "removed a policy the cluster no longer has");
        }
        if icc != local_icc {
            self.install_icc(icc, false).await?;
            tracing::info!(docker0_icc = icc, "took the cluster's ICC setting");
        }
        Ok(())
    }
}
