//! `segctl node run`: the node controller. It serves two unix sockets —
//! the admin API (root only) and the agent API (containers, identified by
//! attestation) — over HTTP/1.1, keeps secrets in the embedded store, and
//! writes one access-log line per request.
//!
//! - [`setup`]: directories, the pid-file lock, socket binding.
//! - [`server`]: the admin accept loop and hyper limits; [`agent_server`]:
//!   the agent socket's (pinning, identification at accept, exit watch);
//!   [`gate`]: its connection budgets and the per-container registry.
//! - [`http`]: routes, responses, bounded body readers.
//! - [`admin`], [`agent`]: the two APIs (`admin_rotation`, `agent_rotation`:
//!   their rotation and push parts).
//! - [`docker_side`]: attestation, post-rotate signals and status over the
//!   process's one [`crate::docker::DockerLink`].
//! - [`access_log`]: the JSON-lines access log.
//! - Rotation: [`watch`] (push streams), [`consumers`] (acknowledged
//!   versions, grace periods), [`rotate`], [`hooks`] (host commands),
//!   [`notify`] (post-rotate actions), [`rotation_state`] (what ties them together).

pub mod access_log;
pub mod admin;
mod admin_cluster;
mod admin_grants;
mod admin_policy;
mod admin_rotation;
pub mod agent;
pub mod agent_dir;
mod agent_rotation;
pub mod agent_server;
pub mod cluster_endpoint;
pub mod cluster_node;
mod cluster_renew;
pub mod cluster_setup;
pub mod command;
pub mod consumers;
pub mod docker_side;
pub mod gate;
pub mod hangup;
pub mod hook_exec;
pub mod hooks;
pub mod http;
pub mod metrics;
mod metrics_server;
pub mod notify;
mod optional;
mod peer_sync;
pub mod peers;
mod remote_changes;
pub mod rotate;
pub mod rotation_state;
pub mod server;
pub mod setup;
pub mod store_choice;
pub mod watch;

#[cfg(test)]
mod fakes;

use crate::store::{SecretStore, StoreError};
use access_log::{AccessLog, Entry, RequestOutcome};
use http::{Failure, Resp};
use hyper::service::service_fn;
use hyper::StatusCode;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Options of `segctl node run`.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub docker_socket: PathBuf,
    /// Defaults to `<state>/access.log`.
    pub access_log: Option<PathBuf>,
    /// Rotation and refusal rate limit of the access log.
    pub access_log_options: access_log::Options,
    /// Limits on watch streams.
    pub watch_limits: watch::WatchLimits,
    /// Concurrent agent connections per container.
    pub conns_per_container: usize,
    /// How often network segregation re-reads and repairs the live rules.
    pub resync_interval: std::time::Duration,
    /// The firewall backend (`--firewall`).
    pub firewall: crate::firewall::select::Choice,
    /// The secret store (`--store`).
    pub store: store_choice::StoreChoice,
    /// `--cluster-listen`: overrides the cluster endpoint's address.
    pub cluster_listen: Option<String>,
    /// `--metrics-addr`: where Prometheus scrapes `/metrics` (off: `None`).
    pub metrics_addr: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Setup(#[from] setup::SetupError),
    #[error("cannot open the secret store")]
    Store(#[from] StoreError),
    #[error(transparent)]
    AccessLog(#[from] access_log::OpenError),
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Segregation(#[from] crate::segregation::SegregationError),
    #[error("cannot take part in the cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("cannot listen on {addr} for the cluster endpoint: {cause}")]
    Listen { addr: String, cause: std::io::Error },
}

/// Runs the controller until SIGTERM or SIGINT.
pub async fn run(opts: NodeOptions) -> Result<(), NodeError> {
    let paths = setup::Paths::new(&opts);
    setup::require_root()?;
    // Everything the controller creates is private unless chmod-ed open on
    // purpose; the admin socket is thus 0600 from the moment it exists.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    // Every watch stream holds a descriptor; the usual soft limit of 1024
    // would cap them long before the configured limits do.
    setup::raise_fd_limit();
    setup::prepare_dirs(&paths)?;
    let pid_lock = setup::lock_pid_file(&paths)?;
    let store_choice::Opened { store, registry, kv } =
        store_choice::open(&opts.store, &paths.state_dir).await?;
    let cluster = match kv.filter(|_| crate::cluster::files::exists(&paths.state_dir)) {
        Some(kv) => Some(optional::open_cluster(&paths.state_dir, kv, registry.clone().map(|r| r.0)).await?),
        None => None,
    };
    let store_kind = store.kind();
    let log = Arc::new(AccessLog::open_with(&paths.access_log, opts.access_log_options)?);
    access_log::spawn_upkeep(&log);
    // One Docker connection and event stream for the whole process.
    let docker = crate::docker::DockerLink::new();
    let segregation = crate::segregation::Segregation::start(
        crate::segregation::Options {
            firewall: opts.firewall,
            // A cluster's nodes share their policies and ICC setting.
            cluster: cluster.as_ref().map(|c| c.kv.clone()),
            ..crate::segregation::Options::new(&paths.state_dir, opts.resync_interval)
        },
        &docker,
    )?;
    let docker_side =
        docker_side::DockerSide::new(docker.clone(), "/proc".into(), Some(paths.agent_dir.clone()));
    let admin_listener = setup::bind_socket(&paths.admin_socket, 0o600)?;
    // Binds agent.sock, then makes agent/ read-only for every container.
    let (agent_dir, agent_listener) = agent_dir::AgentDir::secure(&paths)?;
    let hub = watch::Hub::new(opts.watch_limits);
    let pinger = hub.spawn_pinger();
    let rotation_state = rotation_state::RotationState::new(hub, docker_side.clone(), log.clone());
    let remote = remote_changes::spawn(store.clone(), rotation_state.clone());
    let peers = registry.map(|(registry, node)| Arc::new(peers::Peers { registry, node }));
    let peer_tasks = peers.clone().map(|peers| {
        rotation_state.join_peers(peers.clone());
        peer_sync::spawn(peers, store.clone(), rotation_state.clone())
    });
    let admin = Arc::new(admin::Admin {
        store: store.clone(),
        log: log.clone(),
        docker: docker_side.clone(),
        rotation_state: rotation_state.clone(),
        segregation: Some(segregation),
        cluster: cluster.clone(),
        info: admin::NodeInfo {
            state_dir: paths.state_dir.clone(),
            admin_socket: paths.admin_socket.clone(),
            agent_socket: paths.agent_socket.clone(),
            access_log: paths.access_log.clone(),
            started: Instant::now(),
            agent_socket_health: Some(agent_dir.health()),
        },
    });
    let limits = gate::GateLimits { per_container: opts.conns_per_container, ..Default::default() };
    let gate = gate::Gate::new(limits, "/proc".into());
    drop(docker_side.follow_events(container_gone(gate.clone(), rotation_state.clone())));
    drop(docker.spawn_connect(opts.docker_socket.clone()));
    let removed = Arc::new(tokio::sync::Notify::new());
    let optional_tasks = optional::start(&opts, &admin, &log, cluster.as_ref(), &removed).await?;
    let agent = Arc::new(agent::Agent { store, log, identify: docker_side, rotation_state });
    let admin_task = tokio::spawn(serve_admin(admin_listener, admin));
    // The guard serves the agent socket and rebinds it if it is removed or replaced.
    let agent_task = agent_dir.spawn_guard(agent_listener, move |listener| {
        tokio::spawn(agent_server::serve(listener, agent.clone(), gate.clone()))
    });
    tracing::info!(
        "seg controller {} ready: admin {}, agent {}, store {}",
        env!("CARGO_PKG_VERSION"),
        paths.admin_socket.display(),
        paths.agent_socket.display(),
        store_kind
    );
    let signal = tokio::select! {
        signal = wait_for_signal() => signal,
        () = removed.notified() => "removed from the cluster",
    };
    tracing::info!("{signal}: shutting down");
    optional_tasks.into_iter().for_each(|task| task.abort());
    admin_task.abort();
    agent_task.abort();
    pinger.abort();
    remote.into_iter().chain(peer_tasks.into_iter().flatten()).for_each(|task| task.abort());
    if let Some(peers) = peers {
        peers::withdraw(peers).await;
    }
    agent_dir.shutdown();
    setup::cleanup(&paths);
    drop(pid_lock);
    Ok(())
}

async fn serve_admin(listener: tokio::net::UnixListener, admin: Arc<admin::Admin>) {
    server::serve(listener, "admin", server::MAX_CONNECTIONS, move |peer, _hangup| {
        let admin = admin.clone();
        service_fn(move |req| {
            let admin = admin.clone();
            async move { Ok::<_, Infallible>(admin.handle(peer, req).await) }
        })
    })
    .await
}

/// What a container that stops or is removed takes with it: every agent
/// connection attested as it (and so its watch streams), and — once it is
/// removed — its place in the consumer lists.
fn container_gone(
    gate: Arc<gate::Gate>,
    rotation_state: Arc<rotation_state::RotationState>,
) -> docker_side::GoneListener {
    Arc::new(move |container: &str, action: &str| {
        if matches!(action, "die" | "stop" | "destroy") {
            let cut = gate.cut_container(container);
            if cut > 0 {
                tracing::info!(
                    "container {} {action}: cut its {cut} agent connection(s)",
                    seg_common::api::short_id(container)
                );
            }
        }
        if action == "destroy" {
            rotation_state.consumers.forget_container(container);
        }
    })
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers; stop the controller with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Runs a store call off the async workers (the embedded store touches files).
pub(crate) async fn with_store<T, F>(store: &Arc<dyn SecretStore>, f: F) -> Result<T, Failure>
where
    T: Send + 'static,
    F: FnOnce(&dyn SecretStore) -> T + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(store.as_ref())).await.map_err(|e| {
        Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("store call failed: {e}"))
    })
}

/// A store read on the caller's thread: reads are served from memory (see
/// [`SecretStore`]), and a hop to the blocking pool per agent request cost
/// more than the read itself (measured: 4× the latency of the whole read).
pub(crate) fn read_store<T>(store: &Arc<dyn SecretStore>, f: impl FnOnce(&dyn SecretStore) -> T) -> T {
    f(store.as_ref())
}

pub(crate) fn store_failure(err: StoreError) -> Failure {
    let (status, code) = match &err {
        StoreError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        StoreError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        StoreError::BadTtl { .. } => (StatusCode::BAD_REQUEST, "bad_ttl"),
        StoreError::BadHook(_) => (StatusCode::BAD_REQUEST, "bad_hook"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "store_error"),
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!("secret store: {err}");
    }
    Failure::new(status, code, err.to_string())
}

/// Completes the access-log entry from the outcome and builds the response.
pub(crate) fn finish(entry: &mut Entry, result: Result<Resp, Failure>) -> Resp {
    match result {
        Ok(resp) => {
            entry.outcome = RequestOutcome::Allowed;
            resp
        }
        Err(failure) => {
            entry.outcome = match failure.status {
                StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => RequestOutcome::Denied,
                _ => RequestOutcome::Error,
            };
            entry.reason = format!("{}: {}", failure.code, failure.message);
            failure.into_response()
        }
    }
}
