//! Network segregation in the controller: applied policies and the docker0
//! ICC setting, kept in force on the host's firewall.
//!
//! - [`store`]: policies persisted under `<state>/policies/`, ICC in `<state>/icc.json`.
//! - [`live`]: the running picture (containers, networks), from Docker.
//! - [`state`]: policies + ICC + picture → rules ([`crate::firewall::compile_with`]).
//! - [`kernel`]: rules → kernel, reading it (full) or trusting memory (fast).
//! - `events`: Docker events (container start/die, network connect/disconnect)
//!   update the picture one container at a time and rewrite only the
//!   changed chains; a periodic resync re-reads everything and repairs.
//! - `clobber`: the kernel's nftables change notifications (iptables-nft's
//!   too) bring a repair within milliseconds; the resync is the safety net.
//! - [`attach`]: a policy's networks created, its services moved onto them.
//! - `ops`, `icc`, `networks`: what the admin API's `/v1/policies`, `/v1/icc` and
//!   `/v1/networks` routes (in `node::admin_policy`) do.
//! - [`verify`], [`probe`]: real flows probed from containers' namespaces.
//!
//! Rules stay in the kernel when the controller stops (fail closed) and are
//! adopted, not rebuilt, when it starts again.

/// The wire types of the policy and ICC routes (they live with the rest of
/// the wire contract in `seg_common::api`).
pub use seg_common::api::policy as api;
pub mod attach;
mod clobber;
mod events;
mod follow;
pub mod host;
mod icc;
pub mod kernel;
pub mod live;
pub mod metrics;
mod networks;
mod ops;
pub mod probe;
mod record;
pub mod state;
pub mod store;
mod store_cluster;
pub mod verify;
pub mod view;

pub use events::EventTiming;
pub use ops::OpError;

use crate::docker::DockerLink;
use crate::firewall::select::{self, Choice};
use crate::firewall::{Backend, Firewall};
use bollard::Docker;
use state::State;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the live rules are re-read and repaired, by default.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(30);
/// Event timings kept for `take_timings` (the benchmark's source).
const TIMINGS_KEPT: usize = 4096;

#[derive(Debug, Clone)]
pub struct Options {
    pub state_dir: PathBuf,
    pub resync_interval: Duration,
    /// `/proc/sys/net/bridge/bridge-nf-call-iptables`, checked at start.
    pub bridge_nf: PathBuf,
    /// The firewall backend (`--firewall`).
    pub firewall: Choice,
    /// On a node of a cluster: the cluster's records in etcd, where the
    /// policies and the ICC setting then live (`store_cluster.rs`, `follow.rs`).
    pub cluster: Option<Arc<dyn crate::store::ClusterKv>>,
}

impl Options {
    pub fn new(state_dir: &Path, resync_interval: Duration) -> Options {
        Options {
            state_dir: state_dir.to_owned(),
            resync_interval,
            bridge_nf: host::BRIDGE_NF.into(),
            firewall: Choice::Iptables,
            cluster: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SegregationError {
    #[error(transparent)]
    Host(#[from] host::HostError),
    #[error("cannot load the applied network policies")]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Firewall(#[from] select::Unavailable),
}

pub struct Segregation {
    state: tokio::sync::Mutex<State>,
    store: store::Store,
    /// The firewall's counters (the state's, shared).
    pub metrics: metrics::FirewallMetrics,
    /// Held by a change made here (apply, remove, ICC) and by taking in the
    /// cluster's changes (`follow.rs`), so that neither acts on a view the
    /// other is changing.
    changing: tokio::sync::Mutex<()>,
    /// The process's Docker connection (shared with attestation).
    docker: Arc<DockerLink>,
    resync_interval: Duration,
    timings: Mutex<VecDeque<EventTiming>>,
}

impl Segregation {
    /// Checks the host, loads the applied policies, and starts following
    /// `docker`'s events (subscribed now, so call it before the link
    /// connects; until it does, the kernel's rules are left as they are).
    pub fn start(opts: Options, docker: &Arc<DockerLink>) -> Result<Arc<Segregation>, SegregationError> {
        host::check_br_netfilter(&opts.bridge_nf, host::modprobe_br_netfilter)?;
        let backend = select::choose(opts.firewall)?;
        tracing::info!(backend = backend.name(), setting = %opts.firewall, "firewall backend");
        let (firewall, other) = select::open(backend);
        let store = match &opts.cluster {
            Some(kv) => store::Store::cluster(kv.clone()),
            None => store::Store::open(&opts.state_dir)?,
        };
        let seg = Segregation::with_store(store, firewall, opts.resync_interval, docker.clone())?;
        if seg.store.is_shared() {
            drop(seg.follow_cluster());
        }
        // Nothing else holds the state yet: no task runs before `follow_events`.
        seg.state.try_lock().expect("the state is not shared yet").writer.retire(other);
        drop(seg.follow_events(docker.subscribe()));
        // Both backends' changes are nftables changes (iptables-nft here).
        match clobber::NetlinkChanges::open() {
            Ok(changes) => drop(seg.repair_on_changes(Box::new(changes))),
            Err(e) => tracing::warn!(
                "cannot follow the kernel's nftables changes ({e}): rules another tool removes are \
                 repaired by the periodic resync only"
            ),
        }
        Ok(seg)
    }

    /// The backend in use, and Docker's own (`None`: not detected).
    pub async fn firewall_backends(&self) -> (Backend, Option<Backend>) {
        let ours = self.state.lock().await.writer.backend();
        (ours, blocking(select::docker_backend))
    }

    /// Loads the state with any firewall backend and follows `docker`'s
    /// events (subscribed now: call it before the link connects).
    pub fn following(
        state_dir: &Path,
        firewall: Box<dyn Firewall + Send>,
        resync_interval: Duration,
        docker: &Arc<DockerLink>,
    ) -> Result<Arc<Segregation>, SegregationError> {
        let seg = Segregation::open(state_dir, firewall, resync_interval, docker.clone())?;
        drop(seg.follow_events(docker.subscribe()));
        Ok(seg)
    }

    /// Loads the state with any firewall backend and a link of its own
    /// (see [`Segregation::attach_docker`]); starts nothing.
    pub fn new(
        state_dir: &Path,
        firewall: Box<dyn Firewall + Send>,
        resync_interval: Duration,
    ) -> Result<Arc<Segregation>, SegregationError> {
        Segregation::open(state_dir, firewall, resync_interval, DockerLink::new())
    }

    fn open(
        state_dir: &Path,
        firewall: Box<dyn Firewall + Send>,
        resync_interval: Duration,
        docker: Arc<DockerLink>,
    ) -> Result<Arc<Segregation>, SegregationError> {
        Segregation::with_store(store::Store::open(state_dir)?, firewall, resync_interval, docker)
    }

    fn with_store(
        store: store::Store,
        firewall: Box<dyn Firewall + Send>,
        resync_interval: Duration,
        docker: Arc<DockerLink>,
    ) -> Result<Arc<Segregation>, SegregationError> {
        // The cluster store blocks on etcd: off the async workers.
        let (loaded, icc) = blocking(|| Ok::<_, store::StoreError>((store.load_all()?, store.load_icc()?)))?;
        if !loaded.is_empty() || !icc {
            tracing::info!(policies = loaded.len(), docker0_icc = icc, "network segregation state loaded");
        }
        let state = State::new(loaded, icc, kernel::RuleWriter::new(firewall));
        Ok(Arc::new(Segregation {
            metrics: state.metrics.clone(),
            state: tokio::sync::Mutex::new(state),
            store,
            changing: tokio::sync::Mutex::new(()),
            docker,
            resync_interval,
            timings: Mutex::new(VecDeque::new()),
        }))
    }

    fn docker(&self) -> Option<Docker> {
        self.docker.current().ok()
    }

    /// The timings of the container events handled since the last call.
    pub fn take_timings(&self) -> Vec<EventTiming> {
        self.timings.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect()
    }

    /// Whether the containers were read from Docker at least once.
    pub async fn synced(&self) -> bool {
        self.state.lock().await.live.synced()
    }

    /// Adds containers and networks Docker does not list (the benchmark's
    /// synthetic thousand services) and brings the rules up to date. A
    /// resync drops the containers again (not the networks).
    pub async fn seed(&self, containers: Vec<live::Known>, networks: Vec<crate::firewall::NetworkFacts>) {
        let listed = match self.docker() {
            Some(docker) => live::networks(&docker).await.unwrap_or_default(),
            None => Vec::new(),
        };
        let mut st = self.state.lock().await;
        st.live.seed_networks(networks);
        let _ = st.live.set_networks(listed);
        for c in containers {
            st.live.upsert(c);
        }
        if let Err(e) = blocking(|| st.reconcile(state::Mode::Full)) {
            tracing::error!("seeding the inventory: {e}");
        }
    }

    fn record_timing(&self, t: EventTiming) {
        let mut q = self.timings.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() == TIMINGS_KEPT {
            q.pop_front();
        }
        q.push_back(t);
    }
}

/// Runs firewall work (child processes and waits) without stalling the
/// other tasks of a multi-threaded runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests;
