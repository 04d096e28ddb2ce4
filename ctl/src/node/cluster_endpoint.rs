//! The cluster endpoint: TCP with mutual TLS (rustls), HTTP/1.1 (hyper).
//! It answers
//!
//! - `POST /v1/cluster/join` to anyone: the join token in the body is the
//!   credential (no client certificate yet);
//! - `POST /v1/cluster/renew` to a member, for its own certificate;
//! - every admin route (`secret`, `policy`, `status`, `cluster …`) to a
//!   holder of an admin certificate, exactly as the root-only admin socket
//!   does (`segctl --server`).
//!
//! Every request is checked against the allow list of honoured
//! certificates as it is now (refreshed from etcd every
//! [`REFRESH`]), so a removed member is refused within a second even on a
//! connection it opened before.

use super::access_log::{AccessLog, Entry, Socket};
use super::admin::Admin;
use super::admin_cluster::blocking;
use super::cluster_node::{Caller, ClusterNode};
use super::http::{self, json, Failure, Resp};
use super::server::{builder, Peer, HEADER_TIMEOUT, MAX_CONNECTIONS};
use crate::cluster::api::{self, JoinRequest, RenewRequest};
use crate::cluster::ca::Role;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How often the allow list is re-read from etcd.
pub const REFRESH: Duration = Duration::from_millis(500);

pub struct Endpoint {
    pub node: Arc<ClusterNode>,
    pub admin: Arc<Admin>,
    pub log: Arc<AccessLog>,
    /// Join attempts in the current second: anyone may try one, and each
    /// that looks like a token costs an etcd transaction.
    pub joins: std::sync::Mutex<(std::time::Instant, u32)>,
}

/// Join attempts answered per second; more get `429` (a token's secret is
/// 128 bits: guessing is hopeless anyway, this bounds the load on etcd).
const JOINS_PER_SECOND: u32 = 10;

impl Endpoint {
    pub fn new(node: Arc<ClusterNode>, admin: Arc<Admin>, log: Arc<AccessLog>) -> Endpoint {
        let joins = std::sync::Mutex::new((std::time::Instant::now(), 0));
        Endpoint { node, admin, log, joins }
    }

    fn may_join(&self) -> bool {
        let mut window = self.joins.lock().unwrap_or_else(|p| p.into_inner());
        if window.0.elapsed() >= Duration::from_secs(1) {
            *window = (std::time::Instant::now(), 0);
        }
        window.1 += 1;
        window.1 <= JOINS_PER_SECOND
    }
}

/// Accepts connections until the task is aborted.
pub async fn serve(listener: TcpListener, config: Arc<rustls::ServerConfig>, endpoint: Arc<Endpoint>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("cluster endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the cap: closed at once (a storm must not exhaust descriptors).
        let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
        let (acceptor, endpoint) = (acceptor.clone(), endpoint.clone());
        tokio::spawn(async move {
            let _slot = permit;
            let tls = match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(%addr, "cluster endpoint: TLS handshake failed: {e}"),
                Err(_) => return tracing::debug!(%addr, "cluster endpoint: no TLS handshake in time"),
            };
            let der: Option<Arc<[u8]>> =
                tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| Arc::from(c.as_ref()));
            let service = service_fn(move |req| {
                let (endpoint, der) = (endpoint.clone(), der.clone());
                async move { Ok::<_, Infallible>(endpoint.handle(der.as_deref(), addr, req).await) }
            });
            if let Err(e) = builder().serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(%addr, "cluster endpoint: connection ended: {e}");
            }
        });
    }
}

/// Keeps the allow list current; when this node finds itself removed, it
/// says so and stops serving (`on_removed`).
pub async fn refresh(node: Arc<ClusterNode>, on_removed: impl FnOnce() + Send) {
    loop {
        tokio::time::sleep(REFRESH).await;
        let n = node.clone();
        match tokio::task::spawn_blocking(move || n.refresh()).await {
            Ok(Ok(())) if !node.is_member() => {
                tracing::error!(
                    node = %node.config.node_name,
                    "this node was removed from the cluster (`segctl cluster remove`): stopping, it serves no more secrets"
                );
                return on_removed();
            }
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!("cluster endpoint: cannot refresh the allow list: {e}"),
            Err(e) => tracing::debug!("cluster endpoint: refresh task: {e}"),
        }
    }
}

impl Endpoint {
    async fn handle(&self, der: Option<&[u8]>, addr: SocketAddr, req: Request<Incoming>) -> Resp {
        let mut caller = self.node.caller(der);
        if matches!(caller, Caller::Revoked { .. }) && self.node.may_refresh_now() {
            // A certificate made a moment ago (an admin's, a node's renewal
            // on the CA node) is in etcd before the next refresh: look again
            // once rather than refuse it for up to half a second.
            let node = self.node.clone();
            if let Ok(Ok(())) = tokio::task::spawn_blocking(move || node.refresh()).await {
                caller = self.node.caller(der);
            }
        }
        let path = req.uri().path().to_owned();
        if let Caller::Member { role: Role::Admin, .. } = &caller {
            if path != api::RENEW {
                // Everything the admin socket serves, as root would get it there.
                return self.admin.handle(Peer { pid: None, uid: 0 }, req).await;
            }
        }
        let mut entry = Entry::new(Socket::Cluster, "unknown");
        entry.reason = format!("from {addr}");
        let result = self.route(caller, &path, req, &mut entry).await;
        let resp = super::finish(&mut entry, result);
        self.log.record(&entry);
        resp
    }

    async fn route(
        &self,
        caller: Caller,
        path: &str,
        req: Request<Incoming>,
        entry: &mut Entry,
    ) -> Result<Resp, Failure> {
        let post = req.method() == Method::POST;
        match (caller, path) {
            (_, api::JOIN) if post => {
                entry.action = "cluster_join";
                if !self.may_join() {
                    return Err(Failure::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "busy",
                        "too many join attempts this second; retry shortly",
                    ));
                }
                let request: JoinRequest = http::read_json_request(req).await?;
                entry.reason = format!("node {} at {}, {}", request.name, request.advertise, entry.reason);
                let node = self.node.clone();
                let answer = blocking(move || node.join(request)).await?;
                let mut resp = json(StatusCode::OK, &answer);
                // The answer held the KEK: no keep-alive buffer keeps it.
                resp.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
                Ok(resp)
            }
            (Caller::Member { role, name }, api::RENEW) if post => {
                entry.action = "cluster_renew";
                entry.reason = format!("{} {name}, {}", role.name(), entry.reason);
                let RenewRequest { csr } = http::read_json_request(req).await?;
                let node = self.node.clone();
                blocking(move || node.renew(role, &name, &csr)).await.map(|a| json(StatusCode::OK, &a))
            }
            (Caller::Member { name, .. }, _) => Err(Failure::new(
                StatusCode::FORBIDDEN,
                "node_certificate",
                format!(
                    "{name} presented a node certificate, which only renews itself here; administer the cluster \
                     with an admin certificate (`segctl cluster admin-cert`)"
                ),
            )),
            (Caller::Revoked { name }, _) => Err(Failure::new(
                StatusCode::FORBIDDEN,
                "revoked",
                format!(
                    "the certificate of {name} is not honoured: it was removed from the cluster (or replaced by a \
                     renewal long ago)"
                ),
            )),
            (Caller::Anonymous, _) => Err(Failure::new(
                StatusCode::UNAUTHORIZED,
                "no_certificate",
                "this endpoint needs a client certificate of the cluster's CA (`segctl cluster admin-cert`); \
                 only POST /v1/cluster/join is answered without one",
            )),
        }
    }
}
