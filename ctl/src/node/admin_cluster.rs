//! The admin API's cluster routes (local socket, or the endpoint with an
//! admin certificate): `GET /v1/cluster/nodes`, `DELETE
//! /v1/cluster/nodes/NAME[?role=admin]`, `POST /v1/cluster/tokens`, `POST
//! /v1/cluster/admin-certs`.

use super::access_log::Entry;
use super::cluster_node::ClusterNode;
use super::http::{self, json, Failure, ReqBody, Resp};
use crate::cluster::api::{self, AdminCertRequest, TokenAnswer, TokenRequest};
use crate::cluster::ca::Role;
use crate::cluster::ClusterError;
use hyper::{Method, Request, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// Longest a join token or an admin certificate may be made for.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const MAX_ADMIN_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

pub fn owns(path: &str) -> bool {
    path.starts_with("/v1/cluster/")
}

pub async fn handle<B: ReqBody>(
    cluster: Option<&Arc<ClusterNode>>,
    req: Request<B>,
    entry: &mut Entry,
) -> Result<Resp, Failure> {
    let Some(cluster) = cluster.cloned() else {
        return Err(Failure::new(
            StatusCode::CONFLICT,
            "not_clustered",
            "this node is not in a cluster: start one with `segctl cluster init` or join one with `segctl cluster join`",
        ));
    };
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, api::NODES) => {
            entry.action = "cluster_ls";
            blocking(move || cluster.nodes()).await.map(|list| json(StatusCode::OK, &list))
        }
        (&Method::POST, api::TOKENS) => {
            entry.action = "cluster_token";
            let TokenRequest { ttl_ms } = http::read_json_request(req).await?;
            let ttl = bounded(ttl_ms, MAX_TOKEN_TTL, "a token")?;
            let ca_url = cluster.meta.ca_url.clone();
            let (token, expires_at_ms) = blocking(move || cluster.token(ttl)).await?;
            Ok(json(
                StatusCode::OK,
                &TokenAnswer { token: token.reveal().to_string(), expires_at_ms, ca_url },
            ))
        }
        (&Method::POST, api::ADMIN_CERTS) => {
            entry.action = "cluster_admin_cert";
            let request: AdminCertRequest = http::read_json_request(req).await?;
            bounded(request.ttl_ms, MAX_ADMIN_TTL, "an admin certificate")?;
            entry.reason = format!("admin {}", request.name);
            blocking(move || cluster.admin_cert(&request)).await.map(|a| json(StatusCode::OK, &a))
        }
        (&Method::DELETE, p) if p.starts_with(&format!("{}/", api::NODES)) => {
            entry.action = "cluster_remove";
            let name = p[api::NODES.len() + 1..].to_owned();
            let role = match http::text_query(req.uri().query(), "role")? {
                Some("admin") => Role::Admin,
                None | Some("node") => Role::Node,
                Some(other) => {
                    return Err(Failure::bad_request(format!("role {other:?}: use node or admin")))
                }
            };
            entry.reason = format!("{} {name}", role.name());
            blocking(move || cluster.remove(role, &name)).await.map(|m| json(StatusCode::OK, &m))
        }
        _ => Err(Failure::new(StatusCode::NOT_FOUND, "not_found", format!("no route {method} {path}"))),
    }
}

fn bounded(ttl_ms: u64, max: Duration, what: &str) -> Result<Duration, Failure> {
    let ttl = Duration::from_millis(ttl_ms);
    if ttl < Duration::from_secs(1) || ttl > max {
        return Err(Failure::bad_request(format!(
            "{what} lasts from 1 s to {}; asked for {}",
            humantime::format_duration(max),
            humantime::format_duration(ttl)
        )));
    }
    Ok(ttl)
}

/// Runs a cluster operation (etcd, blocking) off the async workers.
pub async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> Result<T, ClusterError> + Send + 'static,
) -> Result<T, Failure> {
    match tokio::task::spawn_blocking(op).await {
        Ok(result) => result.map_err(failure),
        Err(e) => Err(Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cluster call failed: {e}"),
        )),
    }
}

pub fn failure(err: ClusterError) -> Failure {
    let (status, code) = match &err {
        ClusterError::Token(_) => (StatusCode::FORBIDDEN, "bad_token"),
        ClusterError::BadRequest(_) | ClusterError::Certificate { .. } => {
            (StatusCode::BAD_REQUEST, "bad_request")
        }
        ClusterError::Exists { .. } | ClusterError::AlreadyMember { .. } => (StatusCode::CONFLICT, "exists"),
        ClusterError::Store(crate::store::StoreError::Unreachable { .. })
        | ClusterError::Unreachable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unreachable"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "cluster_error"),
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!("cluster: {err}");
    }
    Failure::new(status, code, err.to_string())
}
