//! The cluster store's in-memory copy of etcd, and the prefix watch that
//! keeps it current.
//!
//! Every entry remembers the etcd `mod_revision` it reflects, and a change
//! is applied only when it is newer: the store's own writes (applied at once,
//! at the revision etcd answered) and the watch's copy of the same change
//! (arriving later) meet without going back in time. A removal leaves a
//! tombstone until the watch has passed its revision, so a late event of an
//! older put cannot bring the secret back.
//!
//! The watch resumes from the last revision it applied + 1 after any
//! disconnect, so no change is missed; when etcd answers that this revision
//! was compacted away, the whole prefix is read again (`reload`).

use super::record::{Record, RecordError};
use super::{SecretMeta, StoreChange, StoreError};
use etcd_client::{Client, EventType, GetOptions, KeyValue, WatchOptions};
use seg_common::name::SecretName;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::broadcast;

/// One secret as last seen in etcd; `record: None` is a tombstone.
struct Entry {
    record: Option<Arc<Record>>,
    mod_revision: i64,
}

#[derive(Default)]
pub(super) struct Cache {
    entries: BTreeMap<SecretName, Entry>,
    /// Every change up to this etcd revision is reflected (by the watch or
    /// a full load); the watch resumes after it.
    revision: i64,
}

impl Cache {
    pub fn get(&self, name: &SecretName) -> Option<Arc<Record>> {
        self.entries.get(name).and_then(|e| e.record.clone())
    }

    pub fn records(&self) -> impl Iterator<Item = &Arc<Record>> {
        self.entries.values().filter_map(|e| e.record.as_ref())
    }

    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Every secret's metadata (to tell what a reload changed).
    pub fn metas(&self) -> BTreeMap<SecretName, SecretMeta> {
        self.records().map(|r| (r.meta.name.clone(), r.meta.clone())).collect()
    }

    /// Sets `name` to `record` (`None`: removed) as of `mod_revision`,
    /// unless the entry already reflects a newer change. Returns whether it
    /// was applied.
    pub fn apply(&mut self, name: &SecretName, record: Option<Record>, mod_revision: i64) -> bool {
        if self.entries.get(name).is_some_and(|e| e.mod_revision >= mod_revision) {
            return false;
        }
        let record = record.map(Arc::new);
        self.entries.insert(name.clone(), Entry { record, mod_revision });
        true
    }

    /// The watch has delivered everything up to `revision`: tombstones at
    /// or below it can go, no older event can follow.
    pub fn advance(&mut self, revision: i64) {
        if revision > self.revision {
            self.revision = revision;
            self.entries.retain(|_, e| e.record.is_some() || e.mod_revision > revision);
        }
    }

    /// Replaces everything with a full read of the prefix made at
    /// `revision`, keeping entries that already reflect a later change.
    pub fn reload(&mut self, loaded: Vec<(SecretName, Record, i64)>, revision: i64) {
        self.entries.retain(|_, e| e.mod_revision > revision);
        for (name, record, mod_revision) in loaded {
            self.apply(&name, Some(record), mod_revision);
        }
        self.revision = self.revision.max(revision);
        self.entries.retain(|_, e| e.record.is_some() || e.mod_revision > self.revision);
    }
}

/// The changes between two snapshots of the metadata, one per secret that
/// differs (added, removed or changed), in name order.
pub(super) fn diff(
    before: &BTreeMap<SecretName, SecretMeta>,
    after: &BTreeMap<SecretName, SecretMeta>,
) -> Vec<StoreChange> {
    let names: std::collections::BTreeSet<&SecretName> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter(|n| before.get(*n) != after.get(*n))
        .map(|n| StoreChange { before: before.get(n).cloned(), after: after.get(n).cloned() })
        .collect()
}

/// What the watch needs to turn etcd's keys into secrets.
pub(super) struct Decoder {
    /// `<prefix>/secrets/`
    pub key_prefix: String,
    pub kek_id: String,
}

impl Decoder {
    pub fn key(&self, name: &SecretName) -> String {
        format!("{}{name}", self.key_prefix)
    }

    /// The secret a key under the prefix names; `None` (with a warning) for
    /// anything else, which seg never writes.
    pub fn name(&self, key: &[u8]) -> Option<SecretName> {
        let parsed = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix(&self.key_prefix))
            .and_then(|n| SecretName::parse(n).ok());
        if parsed.is_none() {
            tracing::warn!(key = %String::from_utf8_lossy(key), "ignoring an etcd key that is not a seg secret");
        }
        parsed
    }

    pub fn record(&self, name: &SecretName, value: &[u8]) -> Result<Record, StoreError> {
        let reason = match Record::decode(value, name, &self.kek_id) {
            Ok(record) => return Ok(record),
            // The record's wording is about the embedded store's master.key.
            Err(RecordError::KeyMismatch { found, expected }) => format!(
                "it was sealed under key-encryption key {found} but this node has KEK {expected}: give this \
                 node this cluster's KEK"
            ),
            Err(e) => e.to_string(),
        };
        Err(StoreError::Corrupt { path: format!("etcd key {}", self.key(name)).into(), reason })
    }

    /// Every secret of a full read; a damaged record fails the whole read,
    /// like a damaged file fails the embedded store's open.
    pub fn all(&self, kvs: &[KeyValue]) -> Result<Vec<(SecretName, Record, i64)>, StoreError> {
        let mut out = Vec::with_capacity(kvs.len());
        for kv in kvs {
            if let Some(name) = self.name(kv.key()) {
                let record = self.record(&name, kv.value())?;
                out.push((name, record, kv.mod_revision()));
            }
        }
        Ok(out)
    }
}

/// Reads the whole prefix: the secrets and the revision the read was made at.
pub(super) async fn load(
    client: &mut Client,
    decoder: &Decoder,
) -> Result<(Vec<(SecretName, Record, i64)>, i64), LoadError> {
    let resp = client.get(decoder.key_prefix.as_str(), Some(GetOptions::new().with_prefix())).await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    Ok((decoder.all(resp.kvs())?, revision))
}

#[derive(Debug, thiserror::Error)]
pub(super) enum LoadError {
    #[error("{0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// What the watch shares with the store.
pub(super) struct Shared {
    pub cache: Arc<RwLock<Cache>>,
    /// Held by the store's commits until their result is in the cache
    /// (`EtcdStore::applying`); the watch applies nothing meanwhile.
    pub applying: Arc<tokio::sync::Mutex<()>>,
    /// Where each change the watch applied is reported. The store's own
    /// writes are in the cache before the watch brings them (`applying`),
    /// so only other writers' changes (other nodes) get there.
    pub changes: broadcast::Sender<StoreChange>,
    /// Told whether the watch is connected (`etcd_fresh.rs`).
    pub fresh: Arc<super::etcd_fresh::Freshness>,
}

/// Keeps the cache current until the runtime it runs on shuts down.
pub(super) async fn watch(mut client: Client, decoder: Arc<Decoder>, shared: Shared) {
    let Shared { cache, applying, changes, fresh } = &shared;
    let mut backoff = Backoff::default();
    loop {
        let started = std::time::Instant::now();
        let ended = watch_once(&mut client, &decoder, &shared).await;
        fresh.set_watching(false);
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Backoff::default();
        }
        match ended {
            Ok(Ended::Compacted(at)) => {
                tracing::warn!(
                    compacted = at,
                    "etcd compacted the revisions this node had not seen; reloading"
                );
                match load(&mut client, &decoder).await {
                    Ok((loaded, revision)) => {
                        let _applying = applying.lock().await;
                        let mut cache = write(cache);
                        let before = cache.metas();
                        cache.reload(loaded, revision);
                        let missed = diff(&before, &cache.metas());
                        drop(cache);
                        tell(changes, missed);
                        // etcd answers again: watch from the reload at once.
                        backoff = Backoff::default();
                        continue;
                    }
                    Err(e) => tracing::warn!(error = %e, "reloading the secrets from etcd failed; retrying"),
                }
            }
            Ok(Ended::Closed) => tracing::info!("the etcd watch ended; resuming"),
            Err(e) => {
                let from = read(cache).revision() + 1;
                tracing::warn!(error = %e, resume_from = from, "the etcd watch failed; reads are served from the cache");
            }
        }
        tokio::time::sleep(backoff.next()).await;
    }
}

enum Ended {
    Closed,
    Compacted(i64),
}

/// Sends `changes` to whoever listens (nobody: dropped; a listener that
/// fell behind learns it from the channel).
fn tell(to: &broadcast::Sender<StoreChange>, changes: Vec<StoreChange>) {
    for change in changes {
        let _ = to.send(change);
    }
}

async fn watch_once(
    client: &mut Client,
    decoder: &Decoder,
    shared: &Shared,
) -> Result<Ended, etcd_client::Error> {
    let Shared { cache, applying, changes, fresh } = shared;
    let from = read(cache).revision() + 1;
    let options = WatchOptions::new().with_prefix().with_start_revision(from).with_progress_notify();
    let mut stream = client.watch(decoder.key_prefix.as_str(), Some(options)).await?;
    fresh.set_watching(true);
    while let Some(resp) = stream.message().await? {
        if resp.compact_revision() > 0 {
            return Ok(Ended::Compacted(resp.compact_revision()));
        }
        if resp.canceled() {
            tracing::warn!(reason = resp.cancel_reason(), "etcd cancelled the watch");
            return Ok(Ended::Closed);
        }
        let applying = applying.lock().await;
        let mut cache = write(cache);
        let mut seen = 0;
        let mut applied = Vec::new();
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            seen = seen.max(kv.mod_revision());
            let Some(name) = decoder.name(kv.key()) else { continue };
            let record = match event.event_type() {
                EventType::Delete => None,
                EventType::Put => match decoder.record(&name, kv.value()) {
                    Ok(record) => Some(record),
                    Err(e) => {
                        tracing::error!(error = %e, "keeping the last good version of a damaged secret");
                        continue;
                    }
                },
            };
            let before = cache.get(&name).map(|r| r.meta.clone());
            if cache.apply(&name, record, kv.mod_revision()) {
                let after = cache.get(&name).map(|r| r.meta.clone());
                applied.push(StoreChange { before, after });
            }
        }
        // A response without events (a progress notification) says every
        // event up to its header revision was sent; one with events says
        // only that those were.
        let done = if resp.events().is_empty() && !resp.created() {
            resp.header().map_or(0, |h| h.revision())
        } else {
            seen
        };
        cache.advance(done);
        drop((cache, applying));
        tell(changes, applied);
    }
    Ok(Ended::Closed)
}

/// 200 ms doubling to 5 s between attempts; a watch that ran for a while
/// starts over at 200 ms.
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    fn next(&mut self) -> Duration {
        self.0 = (self.0 + 1).min(6);
        Duration::from_millis((100u64 << self.0).min(5_000))
    }
}

/// The cache is changed one entry at a time, so a panic while holding the
/// lock cannot leave it half-updated: ignore poisoning.
pub(super) fn read(cache: &RwLock<Cache>) -> std::sync::RwLockReadGuard<'_, Cache> {
    cache.read().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn write(cache: &RwLock<Cache>) -> std::sync::RwLockWriteGuard<'_, Cache> {
    cache.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
#[path = "etcd_cache_tests.rs"]
mod tests;
