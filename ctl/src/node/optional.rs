//! The parts of a node that run only when configured: cluster membership
//! (`<state-dir>/cluster/`: the endpoint, the allow list's refresh, the
//! certificate's renewal) and `--metrics-addr`.

use super::access_log::AccessLog;
use super::{
    admin, cluster_endpoint, cluster_node, cluster_renew, metrics, metrics_server, NodeError, NodeOptions,
};
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Starts what `opts` and the membership ask for; the tasks stop when aborted.
pub(super) async fn start(
    opts: &NodeOptions,
    admin: &Arc<admin::Admin>,
    log: &Arc<AccessLog>,
    cluster: Option<&Arc<cluster_node::ClusterNode>>,
    removed: &Arc<tokio::sync::Notify>,
) -> Result<Vec<JoinHandle<()>>, NodeError> {
    let mut tasks = Vec::new();
    if let Some(addr) = &opts.metrics_addr {
        tasks.push(start_metrics(addr, admin, log).await?);
    }
    if let Some(node) = cluster {
        let listen = opts.cluster_listen.as_deref();
        tasks.extend(start_cluster(node.clone(), admin.clone(), log.clone(), listen, removed.clone()).await?);
    }
    Ok(tasks)
}

/// `/metrics` on `addr`, counting from the access log from now on.
pub(super) async fn start_metrics(
    addr: &str,
    admin: &Arc<admin::Admin>,
    log: &Arc<AccessLog>,
) -> Result<tokio::task::JoinHandle<()>, NodeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|cause| NodeError::Listen { addr: addr.to_owned(), cause })?;
    let (firewall, firewall_backend) = match &admin.segregation {
        Some(seg) => (Some(seg.metrics.clone()), seg.firewall_backends().await.0.name().to_owned()),
        None => (None, "none".to_owned()),
    };
    let metrics = Arc::new(metrics::Metrics::new(metrics::Sources {
        ack_seconds: admin.rotation_state.consumers.ack_seconds.clone(),
        firewall,
        store: admin.store.kind().to_owned(),
        firewall_backend,
    }));
    log.observe_with(metrics.clone());
    tracing::info!(listen = %addr, "metrics at http://{addr}/metrics");
    Ok(tokio::spawn(metrics_server::serve(listener, metrics, admin.rotation_state.clone())))
}

/// This node's membership: its files, the CA's record, the allow list.
pub(super) async fn open_cluster(
    state_dir: &std::path::Path,
    kv: Arc<dyn crate::store::ClusterKv>,
    registry: Option<Arc<dyn crate::store::NodeRegistry>>,
) -> Result<Arc<cluster_node::ClusterNode>, NodeError> {
    let state_dir = state_dir.to_owned();
    let opened =
        tokio::task::spawn_blocking(move || cluster_node::ClusterNode::open(state_dir, kv, registry))
            .await
            .map_err(|e| crate::cluster::ClusterError::BadRequest(e.to_string()))??;
    Ok(Arc::new(opened))
}

/// The cluster endpoint, the allow list's refresh and the certificate's renewal.
pub(super) async fn start_cluster(
    node: Arc<cluster_node::ClusterNode>,
    admin: Arc<admin::Admin>,
    log: Arc<AccessLog>,
    listen: Option<&str>,
    removed: Arc<tokio::sync::Notify>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, NodeError> {
    let addr = listen.unwrap_or(&node.config.listen).to_owned();
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|cause| NodeError::Listen { addr: addr.clone(), cause })?;
    let tls = crate::cluster::tls::server(&node.meta.ca_cert, node.cert.clone())?;
    let endpoint = Arc::new(cluster_endpoint::Endpoint::new(node.clone(), admin, log));
    tracing::info!(
        node = %node.config.node_name,
        listen = %addr,
        ca = node.ca.is_some(),
        "cluster endpoint ready"
    );
    Ok(vec![
        tokio::spawn(cluster_endpoint::serve(listener, tls, endpoint)),
        tokio::spawn(cluster_endpoint::refresh(node.clone(), move || removed.notify_one())),
        tokio::spawn(cluster_renew::run(node)),
    ])
}
