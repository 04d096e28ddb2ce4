//! The cluster store as the home of the membership records
//! ([`ClusterKv`]): keys under `<prefix>/cluster/`, on the store's
//! connection and runtime, within its timeout. Reads are linearizable
//! (they fail without a quorum rather than answer from a stale member).

use super::etcd::EtcdStore;
use super::etcd_conn::{call, unreachable};
use super::{ClusterKv, StoreError};
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};

const NOT_WRITTEN: &str = "nothing was changed in the cluster's records; check etcd, then retry";
const UNCONFIRMED: &str =
    "the change was sent but not confirmed: check with `segctl cluster ls` before retrying";

impl EtcdStore {
    /// `<prefix>/cluster/<key>`.
    fn cluster_key(&self, key: &str) -> String {
        let secrets = &self.decoder.key_prefix;
        let base = secrets.strip_suffix("secrets/").unwrap_or(secrets);
        format!("{base}cluster/{key}")
    }

    fn kv_read<T>(
        &self,
        op: impl Fn(
            etcd_client::Client,
        ) -> futures_util::future::BoxFuture<'static, Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        self.block_on(call(self.timeout, true, || op(self.client.clone())))
            .map_err(|f| unreachable(&self.endpoints, &f.cause, NOT_WRITTEN))
    }

    fn kv_txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, StoreError> {
        self.block_on(call(self.timeout, false, || {
            let (mut client, txn) = (self.client.clone(), txn.clone());
            async move { client.txn(txn).await }
        }))
        .map_err(|f| {
            let outcome = if f.maybe_applied { UNCONFIRMED } else { NOT_WRITTEN };
            unreachable(&self.endpoints, &f.cause, outcome)
        })
    }
}

impl ClusterKv for EtcdStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let full = self.cluster_key(key);
        let mut resp = self.kv_read(|mut client| {
            let full = full.clone();
            Box::pin(async move { client.get(full, None).await })
        })?;
        Ok(resp.take_kvs().pop().map(|kv| kv.into_key_value().1))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let full = self.cluster_key(prefix);
        let base = self.cluster_key("");
        let mut resp = self.kv_read(|mut client| {
            let full = full.clone();
            Box::pin(async move { client.get(full, Some(GetOptions::new().with_prefix())).await })
        })?;
        let mut out: Vec<(String, Vec<u8>)> = resp
            .take_kvs()
            .into_iter()
            .filter_map(|kv| {
                let (k, v) = kv.into_key_value();
                let k = String::from_utf8(k).ok()?;
                Some((k.strip_prefix(&base)?.to_owned(), v))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let full = self.cluster_key(key);
        self.kv_txn(Txn::new().and_then([TxnOp::put(full, value, None)])).map(drop)
    }

    fn create(&self, key: &str, value: Vec<u8>) -> Result<bool, StoreError> {
        let full = self.cluster_key(key);
        let txn = Txn::new()
            .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(full, value, None)]);
        Ok(self.kv_txn(txn)?.succeeded())
    }

    fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let full = self.cluster_key(key);
        // Exists → read and delete in one transaction: of two callers, the
        // second finds the key gone.
        let txn = Txn::new()
            .when([Compare::create_revision(full.clone(), CompareOp::Greater, 0)])
            .and_then([TxnOp::get(full.clone(), None), TxnOp::delete(full, None)]);
        let resp = self.kv_txn(txn)?;
        if !resp.succeeded() {
            return Ok(None);
        }
        Ok(resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        }))
    }
}
