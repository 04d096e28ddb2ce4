//! Keeps this node's report in the cluster's registry current (its
//! consumers, from [`RotationState`]), and wakes this node's waiters
//! (`rotate --wait`, post-rotate exec hooks) when another node's changes.

use super::peers::{NodeReport, Peers};
use super::rotation_state::RotationState;
use crate::store::SecretStore;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A report is republished at least this often (a lease that lapsed while
/// etcd was away comes back with it), and looked at for changes (streams
/// opening or closing) this often.
const REPUBLISH: Duration = Duration::from_secs(5);
const LOOK: Duration = Duration::from_secs(1);
/// Changes in a burst (a rotation's acknowledgements) go out together.
const COALESCE: Duration = Duration::from_millis(20);

/// This node's report now: the local rows of every secret that has any.
fn report(store: &dyn SecretStore, state: &RotationState) -> NodeReport {
    let views = state.hub.views();
    let mut consumers = BTreeMap::new();
    for meta in store.list().unwrap_or_default() {
        let rows = state.consumers.status(&meta, &views, None).consumers;
        if !rows.is_empty() {
            consumers.insert(meta.name, rows);
        }
    }
    NodeReport { consumers, at_ms: 0 }
}

/// Publishes this node's report when it changes (and every [`REPUBLISH`]),
/// and wakes local waiters when another node's report changes.
pub fn spawn(
    peers: Arc<Peers>,
    store: Arc<dyn SecretStore>,
    state: Arc<RotationState>,
) -> [tokio::task::JoinHandle<()>; 2] {
    let mut theirs = peers.registry.changed();
    let waker = state.clone();
    let wake = tokio::spawn(async move {
        while theirs.changed().await.is_ok() {
            waker.consumers.bump();
        }
    });
    let publish = tokio::spawn(async move {
        let mut ours = state.consumers.subscribe();
        let (mut last, mut at) = (Vec::new(), Instant::now() - REPUBLISH);
        loop {
            let mut now = report(store.as_ref(), &state);
            let bytes = serde_json::to_vec(&now).unwrap_or_default();
            if bytes != last || at.elapsed() >= REPUBLISH {
                now.at_ms = crate::cluster::ca::millis(std::time::SystemTime::now());
                let sent = serde_json::to_vec(&now).unwrap_or_default();
                let (registry, node) = (peers.registry.clone(), peers.node.clone());
                match tokio::task::spawn_blocking(move || registry.publish(&node, sent)).await {
                    Ok(Ok(())) => (last, at) = (bytes, Instant::now()),
                    Ok(Err(e)) => tracing::warn!(error = %e, "publishing this node's consumers"),
                    Err(e) => tracing::warn!(error = %e, "publishing this node's consumers"),
                }
            }
            let _ = tokio::time::timeout(LOOK, ours.changed()).await;
            tokio::time::sleep(COALESCE).await;
        }
    });
    [wake, publish]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::fakes::{attested, FakeContainers};
    use crate::node::{access_log::AccessLog, watch::Hub};
    use crate::store::NodeRegistry;
    use crate::store::{SecretMeta, StoreError};
    use seg_common::api::Consumer;
    use std::sync::Mutex;

    #[derive(Default)]
    struct FakeRegistry {
        reports: Mutex<BTreeMap<String, Arc<Vec<u8>>>>,
        changed: tokio::sync::watch::Sender<u64>,
    }

    impl NodeRegistry for FakeRegistry {
        fn publish(&self, node: &str, report: Vec<u8>) -> Result<(), StoreError> {
            self.reports.lock().unwrap().insert(node.into(), Arc::new(report));
            self.changed.send_modify(|n| *n += 1);
            Ok(())
        }
        fn withdraw(&self, node: &str) -> Result<(), StoreError> {
            self.reports.lock().unwrap().remove(node);
            Ok(())
        }
        fn reports(&self) -> BTreeMap<String, Arc<Vec<u8>>> {
            self.reports.lock().unwrap().clone()
        }
        fn changed(&self) -> tokio::sync::watch::Receiver<u64> {
            self.changed.subscribe()
        }
    }

    fn meta(version: u64) -> SecretMeta {
        crate::node::fakes::secret_meta("db", version, &["shop/app"])
    }

    fn remote(container: &str, version: Option<u64>, watching: bool) -> Consumer {
        let who = attested("shop", "app", container);
        Consumer {
            container_id: who.container_id,
            container_name: who.container_name,
            identity: who.identity,
            version,
            acked_at_ms: version.map(|_| 1),
            watching,
            last_hook: None,
            node: None,
        }
    }

    fn state() -> (tempfile::TempDir, Arc<RotationState>) {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(AccessLog::open(&dir.path().join("a.log")).unwrap());
        let containers = Arc::new(FakeContainers::default());
        (dir, RotationState::new(Hub::new(Default::default()), containers, log))
    }

    #[test]
    fn a_status_is_complete_only_when_every_node_has_the_version() {
        let (_dir, state) = state();
        let registry = Arc::new(FakeRegistry::default());
        state.join_peers(Arc::new(Peers { registry: registry.clone(), node: "a".into() }));
        state.consumers.ack(&attested("shop", "app", "local1"), &meta(2).name, 2);
        let report = |rows: Vec<Consumer>| {
            serde_json::to_vec(&NodeReport { consumers: [(meta(2).name, rows)].into(), at_ms: 0 }).unwrap()
        };
        // Its own report (as the registry echoes it) is not another node's.
        registry.publish("a", report(vec![remote("local1", Some(2), true)])).unwrap();
        registry
            .publish("b", report(vec![remote("b1", Some(1), true), remote("b2", Some(1), false)]))
            .unwrap();
        let st = state.status(&meta(2), None);
        let rows: Vec<(&str, Option<&str>)> =
            st.consumers.iter().map(|c| (c.container_id.as_str(), c.node.as_deref())).collect();
        assert_eq!(rows, [("local1", Some("a")), ("b1", Some("b")), ("b2", Some("b"))]);
        assert!(!st.complete, "b1 watches and has version 1");
        registry
            .publish("b", report(vec![remote("b1", Some(2), true), remote("b2", Some(1), false)]))
            .unwrap();
        assert!(state.status(&meta(2), None).complete, "b2's stream is closed: it does not hold anything up");
        registry.publish("c", b"not json".to_vec()).unwrap();
        assert_eq!(state.status(&meta(2), None).consumers.len(), 3, "an undecodable report is skipped");
    }
}
