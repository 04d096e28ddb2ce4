//! The cluster's node registry in etcd: each node publishes one report
//! (what only it knows: its consumers and their acknowledged versions) at
//! `<prefix>/nodes/<node>`, attached to a lease of its own that it keeps
//! alive, so the report of a node that died or lost etcd disappears within
//! [`LEASE_TTL_SECS`]. Every node keeps the others' reports in memory,
//! current through a prefix watch, and says when they changed.

use super::etcd_conn::chain;
use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// A node's report outlives it by at most this long.
pub const LEASE_TTL_SECS: i64 = 10;
/// Keep-alives are sent this often (a third of the TTL).
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(3);

pub(super) struct Registry {
    key_prefix: String,
    reports: RwLock<BTreeMap<String, Arc<Vec<u8>>>>,
    changed: watch::Sender<u64>,
    /// This node's lease while it is alive (`None`: grant one on the next publish).
    lease: Arc<Mutex<Option<i64>>>,
}

impl Registry {
    pub fn new(prefix: &str) -> Arc<Registry> {
        Arc::new(Registry {
            key_prefix: format!("{}/nodes/", prefix.trim_end_matches('/')),
            reports: RwLock::default(),
            changed: watch::Sender::new(0),
            lease: Arc::default(),
        })
    }

    fn set(&self, reports: impl FnOnce(&mut BTreeMap<String, Arc<Vec<u8>>>)) {
        reports(&mut self.reports.write().unwrap_or_else(|e| e.into_inner()));
        self.changed.send_modify(|n| *n += 1);
    }

    fn node_of(&self, key: &[u8]) -> Option<String> {
        std::str::from_utf8(key).ok()?.strip_prefix(&self.key_prefix).map(str::to_owned)
    }

    /// Keeps the reports current until the runtime shuts down: a full read,
    /// then a watch from just after it; any failure starts over.
    pub async fn follow(self: Arc<Self>, mut client: Client) {
        loop {
            if let Err(e) = self.follow_once(&mut client).await {
                tracing::warn!(error = %chain(&e), "the etcd watch of the node reports failed; retrying");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn follow_once(&self, client: &mut Client) -> Result<(), etcd_client::Error> {
        let resp = client.get(self.key_prefix.as_str(), Some(GetOptions::new().with_prefix())).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let all: BTreeMap<String, Arc<Vec<u8>>> = resp
            .kvs()
            .iter()
            .filter_map(|kv| Some((self.node_of(kv.key())?, Arc::new(kv.value().to_vec()))))
            .collect();
        self.set(|reports| *reports = all);
        let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
        let mut stream = client.watch(self.key_prefix.as_str(), Some(options)).await?;
        while let Some(resp) = stream.message().await? {
            if resp.canceled() || resp.compact_revision() > 0 {
                return Ok(());
            }
            self.set(|reports| {
                for event in resp.events() {
                    let Some((kv, node)) = event.kv().and_then(|kv| Some((kv, self.node_of(kv.key())?)))
                    else {
                        continue;
                    };
                    match event.event_type() {
                        EventType::Put => reports.insert(node, Arc::new(kv.value().to_vec())),
                        EventType::Delete => reports.remove(&node),
                    };
                }
            });
        }
        Ok(())
    }

    /// Puts `report` under this node's lease, granting (and keeping alive)
    /// a new lease when there is none or etcd forgot it.
    pub async fn publish(
        &self,
        client: &mut Client,
        node: &str,
        report: Vec<u8>,
    ) -> Result<(), etcd_client::Error> {
        let key = format!("{}{node}", self.key_prefix);
        for _ in 0..2 {
            let lease = self.lease(client).await?;
            match client.put(key.as_str(), report.clone(), Some(PutOptions::new().with_lease(lease))).await {
                Ok(_) => return Ok(()),
                // "requested lease not found": expired while etcd was away.
                Err(e) if chain(&e).contains("lease not found") => self.forget_lease(lease),
                Err(e) => return Err(e),
            }
        }
        Err(etcd_client::Error::LeaseKeepAliveError("the node's lease expired twice in a row".into()))
    }

    /// Removes this node's report and ends its lease (a clean stop: the
    /// others stop waiting for its consumers at once, not after the TTL).
    pub async fn withdraw(&self, client: &mut Client, node: &str) -> Result<(), etcd_client::Error> {
        client.delete(format!("{}{node}", self.key_prefix), None).await?;
        let lease = self.lease.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(id) = lease {
            client.lease_revoke(id).await?;
        }
        Ok(())
    }

    fn forget_lease(&self, lease: i64) {
        let mut held = self.lease.lock().unwrap_or_else(|e| e.into_inner());
        if *held == Some(lease) {
            *held = None;
        }
    }

    async fn lease(&self, client: &mut Client) -> Result<i64, etcd_client::Error> {
        if let Some(id) = *self.lease.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(id);
        }
        let id = client.lease_grant(LEASE_TTL_SECS, None).await?.id();
        let (mut keeper, mut answers) = client.lease_keep_alive(id).await?;
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
        let held = self.lease.clone();
        tokio::spawn(async move {
            // Ends when etcd says the lease is gone (TTL 0) or the stream
            // breaks: the next publish then grants a new one.
            loop {
                tokio::time::sleep(KEEP_ALIVE_EVERY).await;
                let alive = match keeper.keep_alive().await {
                    Ok(()) => matches!(answers.message().await, Ok(Some(a)) if a.ttl() > 0),
                    Err(_) => false,
                };
                if !alive {
                    let mut h = held.lock().unwrap_or_else(|e| e.into_inner());
                    if *h == Some(id) {
                        *h = None;
                    }
                    tracing::warn!(
                        lease = id,
                        "this node's etcd lease lapsed; its report is republished with a new one"
                    );
                    return;
                }
            }
        });
        Ok(id)
    }

    pub fn reports(&self) -> BTreeMap<String, Arc<Vec<u8>>> {
        self.reports.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
