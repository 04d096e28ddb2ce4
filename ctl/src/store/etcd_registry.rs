//! The cluster store as the nodes' [`NodeRegistry`]: the registry's
//! requests (`etcd_nodes.rs`) run on the store's connection and runtime,
//! within its timeout, and fail as the store's writes do.

use super::etcd::EtcdStore;
use super::etcd_conn::{chain, unreachable};
use super::etcd_nodes::Registry;
use super::{NodeRegistry, StoreError};
use etcd_client::Client;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;

const NOT_PUBLISHED: &str = "this node's consumers are not visible to the other nodes until etcd answers; \
                             it retries on its own";
const NOT_WITHDRAWN: &str = "the other nodes drop this node's consumers when its lease runs out";

impl EtcdStore {
    pub(super) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Puts this node's report under its lease (`NodeRegistry::publish`).
    pub(super) fn publish_report(&self, node: &str, report: Vec<u8>) -> Result<(), StoreError> {
        self.registry_call(NOT_PUBLISHED, |registry, mut client| async move {
            registry.publish(&mut client, node, report).await
        })
    }

    /// Removes this node's report (`NodeRegistry::withdraw`).
    pub(super) fn withdraw_report(&self, node: &str) -> Result<(), StoreError> {
        self.registry_call(NOT_WITHDRAWN, |registry, mut client| async move {
            registry.withdraw(&mut client, node).await
        })
    }

    /// One registry request within the store's timeout. The timer is made
    /// inside the store's runtime (the caller may have none).
    fn registry_call<'a, Fut>(
        &'a self,
        outcome: &'static str,
        op: impl FnOnce(&'a Registry, Client) -> Fut,
    ) -> Result<(), StoreError>
    where
        Fut: Future<Output = Result<(), etcd_client::Error>> + 'a,
    {
        let request = op(&self.registry, self.client.clone());
        let answer = self.block_on(async { tokio::time::timeout(self.timeout, request).await });
        let cause = match answer {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => chain(&e),
            Err(_) => format!("no answer within {} ms", self.timeout.as_millis()),
        };
        Err(unreachable(&self.endpoints, &cause, outcome))
    }
}

impl NodeRegistry for EtcdStore {
    fn publish(&self, node: &str, report: Vec<u8>) -> Result<(), StoreError> {
        self.publish_report(node, report)
    }

    fn withdraw(&self, node: &str) -> Result<(), StoreError> {
        self.withdraw_report(node)
    }

    fn reports(&self) -> BTreeMap<String, Arc<Vec<u8>>> {
        self.registry().reports()
    }

    fn changed(&self) -> watch::Receiver<u64> {
        self.registry().subscribe()
    }
}
