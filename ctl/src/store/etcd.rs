//! The cluster store: secrets in etcd, envelope-encrypted, shared by every
//! node. See `docs/cluster.md` for the layout, the key hierarchy and what a
//! failure does.
//!
//! Layout: `<prefix>/secrets/<name>` holds the JSON record of the embedded
//! store's format 1 (`record.rs`: metadata, the current and the previous
//! version), where each `sealed` is an envelope (`envelope.rs`) and
//! `key_id` is the KEK's id. Nothing in etcd is secret without the KEK.
//!
//! Reads are served from the in-memory cache (`etcd_cache.rs`), never from
//! etcd. A write reads the key from etcd (linearizable), builds the new
//! record and commits it in one transaction that compares the key's
//! `mod_revision` with the one read: two writers racing on one secret → one
//! wins, the other gets [`StoreError::Conflict`] and nothing of its change is
//! written, so versions never fork and no update is lost silently.

use super::envelope::Kek;
use super::etcd_cache::{self as cache, Cache, Decoder};
use super::etcd_conn::{call, chain, connect_options, unreachable};
pub use super::etcd_conn::{read_kek_file, EtcdConfig};
use super::record::{Record, SealedVersion};
use super::*;
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use seg_common::api::DEFAULT_TTL_MS;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

pub struct EtcdStore {
    cache: Arc<RwLock<Cache>>,
    pub(super) decoder: Arc<Decoder>,
    kek: Kek,
    pub(super) client: Client,
    pub(super) endpoints: String,
    pub(super) timeout: Duration,
    writer: Mutex<()>,
    /// Other writers' changes, as the watch applies them ([`SecretStore::changes`]).
    changes: tokio::sync::broadcast::Sender<StoreChange>,
    /// Held by a commit from before its transaction until its result is in
    /// the cache, and by the watch while it applies what etcd sent: so the
    /// watch never sees this store's own write before the cache has it, and
    /// reports only other writers' changes.
    applying: Arc<tokio::sync::Mutex<()>>,
    /// How long etcd has not confirmed the cache (`etcd_fresh.rs`).
    fresh: Arc<super::etcd_fresh::Freshness>,
    /// The nodes' reports (`etcd_nodes.rs`).
    pub(super) registry: Arc<super::etcd_nodes::Registry>,
    /// Drives the etcd client and the watch (see [`EtcdStore::open`]).
    /// `Option` only so that `Drop` can take it.
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("endpoints", &self.endpoints).field("kek", &self.kek).finish()
    }
}

impl Drop for EtcdStore {
    /// Without waiting: the store may be dropped inside another runtime,
    /// where blocking on a shutdown is not allowed.
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

const STALE: &str =
    "this node no longer hands out the value (it may have been rotated or revoked meanwhile); \
                     sidecars wipe it as their leases end, and it is served again once etcd answers";

/// Other writers' changes a slow listener may fall behind by before it is
/// told it missed some (it then re-reads everything: `StoreChanges` docs).
const CHANGES_QUEUE: usize = 4096;

/// What the caller is told happened to its write when etcd failed it.
const NOT_WRITTEN: &str = "nothing was written; this node keeps serving reads from its last known state — \
                           check the members with `etcdctl endpoint health`, then retry";
const UNCONFIRMED: &str =
    "the write was sent but not confirmed, so etcd may still apply it: once etcd answers, \
                           check the secret's version before retrying";
const NOT_OPENED: &str =
    "the store was not opened; check the endpoints, that the client certificate is signed \
                          by etcd's CA, and the members";

impl EtcdStore {
    /// Connects with mutual TLS, reads every secret under the prefix once
    /// and starts the watch that keeps the cache current.
    ///
    /// The store runs its own small tokio runtime (one worker) and its sync
    /// methods `block_on` its handle. The trait is synchronous and is called
    /// from the node's blocking pool and from plain threads (tests, the
    /// CLI), so there may be no runtime to borrow; an owned one also means a
    /// write never waits on a worker of the caller's runtime (no deadlock if
    /// the caller's workers are all busy), and the watch stops with the
    /// store. Do not call the write methods from inside an async task.
    pub fn open(cfg: EtcdConfig) -> Result<EtcdStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("seg-etcd")
            .enable_all()
            .build()
            .map_err(|cause| StoreError::Io {
                action: "starting",
                path: "the etcd client runtime".into(),
                cause,
            })?;
        let endpoints = cfg.endpoints.join(",");
        let options = connect_options(&cfg)?;
        let prefix = cfg.prefix.trim_end_matches('/');
        let decoder = Arc::new(Decoder { key_prefix: format!("{prefix}/secrets/"), kek_id: cfg.kek.id() });
        let client = runtime
            .block_on(Client::connect(&cfg.endpoints, Some(options)))
            .map_err(|e| unreachable(&endpoints, &chain(&e), NOT_OPENED))?;
        let store = EtcdStore {
            cache: Arc::new(RwLock::new(Cache::default())),
            decoder,
            kek: cfg.kek,
            client,
            endpoints,
            timeout: cfg.timeout,
            writer: Mutex::new(()),
            changes: tokio::sync::broadcast::channel(CHANGES_QUEUE).0,
            applying: Arc::default(),
            fresh: super::etcd_fresh::Freshness::new(),
            registry: super::etcd_nodes::Registry::new(prefix),
            runtime: Some(runtime),
        };
        let revision = store.load()?;
        let watch = cache::watch(
            store.client.clone(),
            store.decoder.clone(),
            cache::Shared {
                cache: store.cache.clone(),
                applying: store.applying.clone(),
                changes: store.changes.clone(),
                fresh: store.fresh.clone(),
            },
        );
        let runtime = store.runtime.as_ref().expect("just set");
        runtime.spawn(watch);
        runtime.spawn(store.registry.clone().follow(store.client.clone()));
        let prefix_key = store.decoder.key_prefix.clone();
        runtime.spawn(super::etcd_fresh::probe(store.client.clone(), prefix_key, store.fresh.clone()));
        tracing::info!(endpoints = %store.endpoints, prefix, revision, kek = %store.kek.id(), "opened the etcd store");
        Ok(store)
    }

    /// Fills the cache with everything under the prefix; returns the
    /// revision it was read at.
    fn load(&self) -> Result<i64, StoreError> {
        let loaded = self.block_on(call(self.timeout, true, || {
            let (mut client, decoder) = (self.client.clone(), self.decoder.clone());
            async move {
                match cache::load(&mut client, &decoder).await {
                    Ok(loaded) => Ok(Ok(loaded)),
                    Err(cache::LoadError::Etcd(e)) => Err(e),
                    Err(cache::LoadError::Store(e)) => Ok(Err(e)),
                }
            }
        }));
        let (records, revision) =
            loaded.map_err(|f| unreachable(&self.endpoints, &f.cause, NOT_OPENED))??;
        cache::write(&self.cache).reload(records, revision);
        Ok(revision)
    }

    /// The etcd revision the cache reflects (for tests and status).
    pub fn revision(&self) -> i64 {
        cache::read(&self.cache).revision()
    }

    fn cached(&self, name: &SecretName) -> Result<Arc<Record>, StoreError> {
        cache::read(&self.cache).get(name).ok_or_else(|| StoreError::NotFound(name.clone()))
    }

    /// A value handed out now, on the lease the cache's age still allows.
    fn unseal(&self, record: &Record, v: &SealedVersion) -> Result<SecretVersion, StoreError> {
        let stale = self.fresh.stale_for();
        let ttl_ms = super::etcd_fresh::lease_left(record.meta.ttl_ms, stale).ok_or_else(|| {
            let cause = format!(
                "no confirmed contact for {} s, longer than the lease of {} ({} s)",
                stale.as_secs(),
                record.meta.name,
                record.meta.ttl_ms / 1000
            );
            unreachable(&self.endpoints, &cause, STALE)
        })?;
        let value =
            self.kek.open(&record.meta.name, v.version, &v.blob).map_err(|e| StoreError::Corrupt {
                path: format!("etcd key {}", self.decoder.key(&record.meta.name)).into(),
                reason: format!("version {} {e}; remove the secret and put it again", v.version),
            })?;
        Ok(SecretVersion { value, version: v.version, ttl_ms })
    }

    pub(super) fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.as_ref().expect("the runtime lives as long as the store").block_on(f)
    }

    /// Local writers take turns, so two admins on one node never conflict
    /// with each other; a poisoned lock guards no data, ignore it.
    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads `name` from etcd, lets `change` decide the new state
    /// (`Some(None)`: remove, `None`: leave as is) and commits it if the key
    /// is unchanged since the read. Returns what `change` returned.
    fn read_modify_write<T>(
        &self,
        name: &SecretName,
        change: impl FnOnce(Option<Record>) -> Result<(Option<Option<Record>>, T), StoreError>,
    ) -> Result<T, StoreError> {
        let _writer = self.lock_writer();
        let key = self.decoder.key(name);
        let (raw, revision) = self.fetch(&key)?;
        let current = raw.map(|value| self.decoder.record(name, &value)).transpose()?;
        let (new, out) = change(current)?;
        if let Some(new) = new {
            self.commit(name, &key, revision, new)?;
        }
        Ok(out)
    }

    /// Writes `new` (`None`: removes) if the key is still at `revision`.
    /// Call with the writer lock held.
    fn commit(
        &self,
        name: &SecretName,
        key: &str,
        revision: i64,
        new: Option<Record>,
    ) -> Result<(), StoreError> {
        let op = match &new {
            Some(record) => TxnOp::put(key, record.encode(&self.kek.id()), None),
            None => TxnOp::delete(key, None),
        };
        let _applying = self.block_on(self.applying.lock());
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, revision)])
            .and_then([op])
            .or_else([TxnOp::get(key, None)]);
        let resp = self
            .block_on(call(self.timeout, false, || {
                let (mut client, txn) = (self.client.clone(), txn.clone());
                async move { client.txn(txn).await }
            }))
            .map_err(|f| {
                let outcome = if f.maybe_applied { UNCONFIRMED } else { NOT_WRITTEN };
                unreachable(&self.endpoints, &f.cause, outcome)
            })?;
        let at = resp.header().map_or(0, |h| h.revision());
        if !resp.succeeded() {
            self.learn_from_conflict(name, &resp.op_responses());
            return Err(StoreError::Conflict { name: name.clone() });
        }
        cache::write(&self.cache).apply(name, new, at);
        Ok(())
    }

    /// The stored bytes of `key` now, with its `mod_revision` (0: absent).
    fn fetch(&self, key: &str) -> Result<(Option<Vec<u8>>, i64), StoreError> {
        let mut resp = self
            .block_on(call(self.timeout, true, || {
                let mut client = self.client.clone();
                async move { client.get(key, None).await }
            }))
            .map_err(|f| unreachable(&self.endpoints, &f.cause, NOT_WRITTEN))?;
        Ok(match resp.take_kvs().pop() {
            Some(kv) => {
                let revision = kv.mod_revision();
                (Some(kv.into_key_value().1), revision)
            }
            None => (None, 0),
        })
    }

    /// A lost race still tells what won: put it in the cache now rather
    /// than when the watch brings it, so a retry starts from it. It is
    /// another writer's change, so it is reported like the watch's.
    fn learn_from_conflict(&self, name: &SecretName, responses: &[TxnOpResponse]) {
        let Some(TxnOpResponse::Get(get)) = responses.first() else { return };
        let (record, at) = match get.kvs().first() {
            Some(kv) => match self.decoder.record(name, kv.value()) {
                Ok(record) => (Some(record), kv.mod_revision()),
                Err(_) => return,
            },
            None => (None, get.header().map_or(0, |h| h.revision())),
        };
        let mut cache = cache::write(&self.cache);
        let before = cache.get(name).map(|r| r.meta.clone());
        if cache.apply(name, record, at) {
            let after = cache.get(name).map(|r| r.meta.clone());
            drop(cache);
            let _ = self.changes.send(StoreChange { before, after });
        }
    }

    /// Applies `change` to the metadata of an existing secret; writes only
    /// when it reports a modification.
    fn modify(
        &self,
        name: &SecretName,
        change: impl FnOnce(&mut SecretMeta) -> bool,
    ) -> Result<bool, StoreError> {
        self.read_modify_write(name, |current| {
            let mut record = current.ok_or_else(|| StoreError::NotFound(name.clone()))?;
            if !change(&mut record.meta) {
                return Ok((None, false));
            }
            record.meta.updated_at = now_secs();
            Ok((Some(Some(record)), true))
        })
    }
}

impl SecretStore for EtcdStore {
    fn put(&self, name: &SecretName, value: &SecretBytes, ttl_ms: Option<u64>) -> Result<u64, StoreError> {
        check_value(value)?;
        if let Some(ttl) = ttl_ms {
            check_ttl(ttl)?;
        }
        self.read_modify_write(name, |current| {
            let now = now_secs();
            let mut record = current.unwrap_or_else(|| Record::new(name, DEFAULT_TTL_MS, now));
            let version = record.meta.version + 1;
            let blob = self.kek.seal(name, version, value).map_err(|e| StoreError::Io {
                action: "sealing a new version of",
                path: name.as_str().into(),
                cause: std::io::Error::other(e),
            })?;
            record.push_version(SealedVersion { version, blob, created_at: now });
            if let Some(ttl) = ttl_ms {
                record.meta.ttl_ms = ttl;
            }
            Ok((Some(Some(record)), version))
        })
    }

    fn get(&self, name: &SecretName) -> Result<SecretVersion, StoreError> {
        let record = self.cached(name)?;
        self.unseal(&record, &record.versions[0])
    }

    fn meta(&self, name: &SecretName) -> Result<SecretMeta, StoreError> {
        Ok(self.cached(name)?.meta.clone())
    }

    fn list(&self) -> Result<Vec<SecretMeta>, StoreError> {
        Ok(cache::read(&self.cache).records().map(|r| r.meta.clone()).collect())
    }

    /// Works on a damaged record too (it is not decoded): removing and
    /// putting again is the way out of damage in etcd.
    fn remove(&self, name: &SecretName) -> Result<(), StoreError> {
        let _writer = self.lock_writer();
        let key = self.decoder.key(name);
        match self.fetch(&key)? {
            (Some(_), revision) => self.commit(name, &key, revision, None),
            (None, _) => Err(StoreError::NotFound(name.clone())),
        }
    }

    fn change_meta(
        &self,
        name: &SecretName,
        change: &mut dyn FnMut(&mut SecretMeta) -> bool,
    ) -> Result<bool, StoreError> {
        self.modify(name, change)
    }

    fn kind(&self) -> &'static str {
        "etcd"
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<StoreChange>> {
        Some(self.changes.subscribe())
    }

    fn get_version(&self, name: &SecretName, version: u64) -> Result<Option<SecretVersion>, StoreError> {
        let record = self.cached(name)?;
        record.find(version).map(|v| self.unseal(&record, v)).transpose()
    }
}
