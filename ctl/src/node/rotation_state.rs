//! What the admin and agent APIs share about running consumers: the watch
//! [`Hub`], the acknowledged versions and grace periods ([`Consumers`]),
//! the app containers a post-rotate action reaches ([`Containers`]), one
//! lock per secret so a rotation (and its pre-rotate hook) is never
//! interleaved with another change of the same secret, and the per-container
//! budget of post-rotate notifications.

use super::access_log::{AccessLog, Entry, HookLog, RequestOutcome, Socket};
use super::consumers::Consumers;
use super::watch::{plan, Hub};
use crate::attest::Attested;
use crate::store::SecretMeta;
use futures_util::future::BoxFuture;
use seg_common::api::Identity;
use seg_common::name::SecretName;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// A running app container, as a post-rotate action sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppContainer {
    pub id: String,
    pub name: String,
    /// Its addresses on the networks it is attached to.
    pub addresses: Vec<IpAddr>,
    /// Services of its project whose sidecars may notify it (`seg.notify-from`).
    pub notify_from: Vec<String>,
}

/// Why the Docker seam of post-rotate actions failed; quoted in the
/// notification's answer, so no variant is a `source`.
#[derive(Debug, thiserror::Error)]
pub enum ContainersError {
    #[error("Docker is unreachable: {0}")]
    Unreachable(crate::docker::NotConnected),
    #[error("listing containers: {0}")]
    List(bollard::errors::Error),
    #[error("sending {signal}: {cause}")]
    Signal { signal: String, cause: bollard::errors::Error },
    #[error("exec: {0}")]
    Exec(crate::docker::ExecError),
}

/// The Docker seam of post-rotate actions (a fake in tests).
pub trait Containers: Send + Sync {
    /// Running containers with identity `who` that are not seg sidecars.
    fn find<'a>(&'a self, who: &'a Identity) -> BoxFuture<'a, Result<Vec<AppContainer>, ContainersError>>;
    /// Sends `signal` (e.g. `SIGHUP`) to a container's main process.
    fn signal<'a>(&'a self, id: &'a str, signal: &'a str) -> BoxFuture<'a, Result<(), ContainersError>>;
    /// Runs a command inside a running container (exec hooks).
    fn exec<'a>(
        &'a self,
        run: crate::docker::ExecRun<'a>,
    ) -> BoxFuture<'a, Result<crate::docker::ExecOutput, ContainersError>>;
}

/// Post-rotate notifications a container may send in a burst…
const NOTIFY_BURST: f64 = 5.0;
/// …and per second after that.
const NOTIFY_PER_SEC: f64 = 1.0;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The rotation state shared by the admin and agent APIs (see the module
/// docs): push streams, acknowledgements, app containers, per-secret locks.
pub struct RotationState {
    pub hub: Arc<Hub>,
    pub consumers: Consumers,
    pub containers: Arc<dyn Containers>,
    pub log: Arc<AccessLog>,
    locks: Mutex<HashMap<SecretName, Arc<tokio::sync::Mutex<()>>>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// The other nodes, in a cluster ([`RotationState::join_peers`]).
    peers: std::sync::OnceLock<Arc<super::peers::Peers>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each change under these locks is a single map operation.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RotationState {
    pub fn new(hub: Arc<Hub>, containers: Arc<dyn Containers>, log: Arc<AccessLog>) -> Arc<RotationState> {
        Arc::new(RotationState {
            hub,
            consumers: Consumers::default(),
            containers,
            log,
            locks: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            peers: std::sync::OnceLock::new(),
        })
    }

    /// From now on, statuses (and what waits for acknowledgements) include
    /// the other nodes' consumers. Once, at start.
    pub fn join_peers(&self, peers: Arc<super::peers::Peers>) {
        let _ = self.peers.set(peers);
    }

    /// The status of `meta`'s consumers on this node and, in a cluster, on
    /// every other node; `wanted` defaults to its version. Complete when
    /// every watching consumer of every node has `wanted` or newer.
    pub fn status(&self, meta: &SecretMeta, wanted: Option<u64>) -> seg_common::api::SecretStatus {
        let mut st = self.consumers.status(meta, &self.hub.views(), wanted);
        let Some(peers) = self.peers.get() else { return st };
        for c in &mut st.consumers {
            c.node = Some(peers.node.clone());
        }
        let theirs = peers.consumers_of(&meta.name);
        st.complete &=
            theirs.iter().filter(|c| c.watching).all(|c| c.version.is_some_and(|v| v >= st.wanted));
        st.consumers.extend(theirs);
        st
    }

    /// Serializes changes of one secret (held across its pre-rotate hook).
    pub async fn lock_secret(&self, name: &SecretName) -> tokio::sync::OwnedMutexGuard<()> {
        let m = lock(&self.locks).entry(name.clone()).or_default().clone();
        m.lock_owned().await
    }

    /// Tells every stream what the change from `before` to `after` means
    /// for it, and keeps the consumer records in step. Returns how many
    /// streams were told.
    pub fn publish(&self, before: Option<&SecretMeta>, after: Option<&SecretMeta>) -> usize {
        let sent = self.hub.publish(&plan(before, after, &self.hub.views()));
        match after {
            None => {
                if let Some(b) = before {
                    self.consumers.forget_secret(&b.name);
                }
            }
            Some(a) if before.is_some_and(|b| b.grants != a.grants) => self.consumers.keep_granted(a),
            Some(_) => {}
        }
        sent
    }

    /// Takes one post-rotate notification from `container`'s budget.
    pub fn allow_notify(&self, container: &str) -> bool {
        let mut buckets = lock(&self.buckets);
        let now = Instant::now();
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| now.duration_since(b.at).as_secs() < 60);
        }
        let b = buckets.entry(container.to_owned()).or_insert(Bucket { tokens: NOTIFY_BURST, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * NOTIFY_PER_SEC).min(NOTIFY_BURST);
        b.at = now;
        if b.tokens < 1.0 {
            return false;
        }
        b.tokens -= 1.0;
        true
    }

    /// Writes the access-log line of one hook run.
    pub fn log_hook(&self, h: HookRecord<'_>) {
        let mut e = Entry::new(h.socket, "hook");
        e.secret = Some(h.secret.to_string());
        if h.attempted {
            e.attempted_version = Some(h.version);
        } else {
            e.version = Some(h.version);
        }
        if let Some(who) = h.who {
            e.identity = Some(who.identity.to_string());
            e.container_id = Some(seg_common::api::short_id(&who.container_id));
        }
        e.outcome = if h.ok { RequestOutcome::Allowed } else { RequestOutcome::Error };
        e.reason = format!("{} hook {}: {}", h.hook.kind, h.hook.action, h.hook.status);
        e.hook = Some(h.hook);
        self.log.record(&e);
    }
}

/// One hook run, for [`RotationState::log_hook`].
pub struct HookRecord<'a> {
    pub socket: Socket,
    pub secret: &'a SecretName,
    pub version: u64,
    /// `version` does not exist yet (a pre-rotate hook): logged as
    /// `attempted_version`.
    pub attempted: bool,
    pub who: Option<&'a Attested>,
    pub hook: HookLog,
    pub ok: bool,
}

/// Shortens a command line or URL for logs.
pub fn shorten(text: &str) -> String {
    let mut s: String = text.chars().take(200).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_have_a_burst_and_a_rate() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(AccessLog::open(&dir.path().join("a.log")).unwrap());
        let rotation_state = RotationState::new(
            Hub::new(Default::default()),
            Arc::new(super::super::fakes::FakeContainers::default()),
            log,
        );
        let allowed = (0..10).filter(|_| rotation_state.allow_notify("c1")).count();
        assert_eq!(allowed, 5);
        assert!(rotation_state.allow_notify("c2"), "another container has its own budget");
    }
}
