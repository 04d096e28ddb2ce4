//! The admin API (root only): manage secrets, their grants and leases, and
//! report status. The socket is 0600; the peer uid is checked as well in
//! case the mode is ever loosened by hand. Every change is pushed to the
//! watch streams it concerns; rotation, hooks and consumer status are in
//! `admin_rotation`.

use super::access_log::{AccessLog, Entry, Socket};
use super::http::{self, json, parse_name, Failure, ReqBody, Resp, Route};
use super::rotation_state::RotationState;
use super::server::Peer;
use super::{finish, read_store, store_failure, with_store};
use crate::store::{SecretMeta, SecretStore};
use futures_util::future::BoxFuture;
use hyper::{Method, Request, StatusCode};
use seg_common::api::{
    validate_label, FirewallStatus, GrantTarget, ProjectMatch, PutResult, SecretInfo, StatusReport,
    TtlRequest,
};
use seg_common::name::SecretName;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// How the Docker link is doing, for `GET /v1/status`.
pub trait DockerStatus: Send + Sync {
    fn describe(&self) -> BoxFuture<'_, String>;
}

pub use seg_common::api::ChangeResult;

pub struct NodeInfo {
    pub state_dir: PathBuf,
    pub admin_socket: PathBuf,
    pub agent_socket: PathBuf,
    pub access_log: PathBuf,
    pub started: Instant,
    /// The agent socket's guard (`None` in tests without one).
    pub agent_socket_health: Option<Arc<super::agent_dir::Health>>,
}

pub struct Admin {
    pub store: Arc<dyn SecretStore>,
    pub log: Arc<AccessLog>,
    pub docker: Arc<dyn DockerStatus>,
    pub info: NodeInfo,
    pub rotation_state: Arc<RotationState>,
    /// Network policies and ICC (`/v1/policies…`, `/v1/icc`); `None` in tests.
    pub segregation: Option<Arc<crate::segregation::Segregation>>,
    /// This node's cluster membership (`/v1/cluster/…`); `None` on one host.
    pub cluster: Option<Arc<super::cluster_node::ClusterNode>>,
}

impl Admin {
    pub async fn handle<B>(&self, peer: Peer, req: Request<B>) -> Resp
    where
        B: ReqBody,
    {
        let mut entry = Entry::new(Socket::Admin, "unknown");
        entry.pid = peer.pid;
        entry.uid = Some(peer.uid);
        let result = self.dispatch(peer, req, &mut entry).await;
        let mut resp = finish(&mut entry, result);
        self.log.record(&entry);
        if matches!(entry.action, "put" | "rotate" | "read") {
            // The request or the answer carried a value: end the connection,
            // so hyper's buffers holding it are freed (and wiped) now, not
            // when an idle keep-alive client finally goes away.
            resp.headers_mut()
                .insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
        }
        resp
    }

    async fn dispatch<B>(&self, peer: Peer, req: Request<B>, entry: &mut Entry) -> Result<Resp, Failure>
    where
        B: ReqBody,
    {
        let path = req.uri().path().to_owned();
        if super::admin_policy::owns(&path) {
            let grants =
                super::admin_grants::Grants { store: &self.store, rotation_state: &self.rotation_state };
            let seg = self.segregation.as_deref();
            return super::admin_policy::handle(seg, grants, peer.uid, req, entry).await;
        }
        if super::admin_cluster::owns(&path) {
            entry.action = "cluster";
            if peer.uid != 0 {
                let msg =
                    format!("the admin socket serves root (uid 0) only; the caller is uid {}", peer.uid);
                return Err(Failure::new(StatusCode::FORBIDDEN, "not_root", msg));
            }
            return super::admin_cluster::handle(self.cluster.as_ref(), req, entry).await;
        }
        let route = http::route(&path);
        entry.action = action(req.method(), route);
        if entry.action == "unknown" {
            return Err(unrouted(route, req.method(), &path));
        }
        if peer.uid != 0 {
            let msg = format!("the admin socket serves root (uid 0) only; the caller is uid {}", peer.uid);
            return Err(Failure::new(StatusCode::FORBIDDEN, "not_root", msg));
        }
        let name = match route {
            Route::Secret(raw)
            | Route::SecretTtl(raw)
            | Route::SecretGrants(raw)
            | Route::SecretRotate(raw)
            | Route::SecretHooks(raw)
            | Route::SecretStatus(raw) => {
                let name = parse_name(raw)?;
                entry.secret = Some(name.to_string());
                Some(name)
            }
            _ => None,
        };
        match (entry.action, name) {
            ("status", _) => self.status().await,
            ("list", _) => self.list().await,
            ("put", Some(n)) => self.put(n, req, entry).await,
            ("rotate", Some(n)) => self.rotate(n, req, entry).await,
            ("read", Some(n)) => self.read(n, entry).await,
            ("hooks", Some(n)) => self.hooks(n).await,
            ("set_hooks", Some(n)) => self.set_hooks(n, req, entry).await,
            ("secret_status", Some(n)) => self.secret_status(n, req.uri().query(), entry).await,
            ("remove", Some(n)) => self.change(n, |s, n| s.remove(n).map(|()| true)).await,
            ("ttl", Some(n)) => {
                let len = http::content_length(&req);
                let TtlRequest { ttl_ms } = http::read_json(req.into_body(), len).await?;
                entry.reason = format!("ttl_ms={ttl_ms}");
                self.change(n, move |s, n| s.set_ttl(n, ttl_ms).map(|()| true)).await
            }
            (grant_or_revoke, Some(n)) => {
                let len = http::content_length(&req);
                let target = checked_target(http::read_json(req.into_body(), len).await?)?;
                entry.reason = format!("target {target}");
                if grant_or_revoke == "grant" {
                    self.change(n, move |s, n| s.grant(n, &target)).await
                } else {
                    self.change(n, move |s, n| s.revoke(n, &target)).await
                }
            }
            _ => Err(unrouted(route, &Method::GET, &path)),
        }
    }

    async fn status(&self) -> Result<Resp, Failure> {
        let kind = self.store.kind();
        let secrets = read_store(&self.store, |s| s.list()).map_err(store_failure)?.len();
        let report = StatusReport {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_secs: self.info.started.elapsed().as_secs(),
            store: kind.to_owned(),
            state_dir: self.info.state_dir.display().to_string(),
            admin_socket: self.info.admin_socket.display().to_string(),
            agent_socket: self.info.agent_socket.display().to_string(),
            access_log: self.info.access_log.display().to_string(),
            secrets,
            docker: self.docker.describe().await,
            watches: self.rotation_state.hub.count(),
            agent_socket_status: self.info.agent_socket_health.as_ref().map(|h| h.report()),
            firewall: match &self.segregation {
                Some(seg) => {
                    let (ours, docker) = seg.firewall_backends().await;
                    let docker_backend = docker.map(|b| b.name().to_owned());
                    Some(FirewallStatus { backend: ours.name().to_owned(), docker_backend })
                }
                None => None,
            },
            cluster: self.cluster.as_ref().map(|c| c.status()),
        };
        Ok(json(StatusCode::OK, &report))
    }

    async fn list(&self) -> Result<Resp, Failure> {
        let metas = read_store(&self.store, |s| s.list()).map_err(store_failure)?;
        let infos: Vec<SecretInfo> = metas.into_iter().map(info).collect();
        Ok(json(StatusCode::OK, &infos))
    }

    /// A new version; on an existing secret this is a rotation with default
    /// options (its pre-rotate hook runs, the version is pushed).
    async fn put<B>(&self, name: SecretName, req: Request<B>, entry: &mut Entry) -> Result<Resp, Failure>
    where
        B: ReqBody,
    {
        let ttl = http::ttl_query(req.uri().query())?;
        let rotation = self.rotation(name, ttl, None, false, req).await?;
        let done = super::rotate::rotate(&self.store, &self.rotation_state, rotation, entry).await?;
        Ok(json(StatusCode::OK, &PutResult { name: done.name, version: done.version }))
    }

    /// Checks the options, then reads the value (refusing a bad lease before
    /// reading up to 512 KiB of value).
    pub(super) async fn rotation<B: ReqBody>(
        &self,
        name: SecretName,
        ttl_ms: Option<u64>,
        grace_ms: Option<u64>,
        must_exist: bool,
        req: Request<B>,
    ) -> Result<super::rotate::Rotation, Failure> {
        if let Some(ttl_ms) = ttl_ms {
            crate::store::check_ttl(ttl_ms).map_err(store_failure)?;
        }
        let grace = super::rotate::grace_policy(grace_ms)?;
        let len = http::content_length(&req);
        let value = http::read_secret(req.into_body(), len).await?;
        Ok(super::rotate::Rotation { name, value, ttl_ms, grace, must_exist })
    }

    async fn read(&self, name: SecretName, entry: &mut Entry) -> Result<Resp, Failure> {
        let current = read_store(&self.store, |s| s.get(&name)).map_err(store_failure)?;
        entry.version = Some(current.version);
        Ok(http::secret_value(current.value, current.version, current.ttl_ms))
    }

    /// Runs one mutating store call under the secret's lock, pushes what it
    /// changed to the watch streams, and answers with a [`ChangeResult`].
    async fn change<F>(&self, name: SecretName, f: F) -> Result<Resp, Failure>
    where
        F: FnOnce(&dyn SecretStore, &SecretName) -> Result<bool, crate::store::StoreError> + Send + 'static,
    {
        let _guard = self.rotation_state.lock_secret(&name).await;
        let n = name.clone();
        let (before, changed, after) = with_store(&self.store, move |s| {
            let before = s.meta(&n).ok();
            let changed = f(s, &n);
            (before, changed, s.meta(&n).ok())
        })
        .await?;
        let changed = changed.map_err(store_failure)?;
        if changed {
            self.rotation_state.publish(before.as_ref(), after.as_ref());
        }
        Ok(json(StatusCode::OK, &ChangeResult { name, changed }))
    }
}

fn action(method: &Method, route: Route<'_>) -> &'static str {
    match (route, method.as_str()) {
        (Route::Status, "GET") => "status",
        (Route::Secrets, "GET") => "list",
        (Route::Secret(_), "GET") => "read",
        (Route::Secret(_), "PUT") => "put",
        (Route::Secret(_), "DELETE") => "remove",
        (Route::SecretTtl(_), "PUT") => "ttl",
        (Route::SecretGrants(_), "POST") => "grant",
        (Route::SecretGrants(_), "DELETE") => "revoke",
        (Route::SecretRotate(_), "POST") => "rotate",
        (Route::SecretHooks(_), "GET") => "hooks",
        (Route::SecretHooks(_), "PUT") => "set_hooks",
        (Route::SecretStatus(_), "GET") => "secret_status",
        _ => "unknown",
    }
}

fn unrouted(route: Route<'_>, method: &Method, path: &str) -> Failure {
    let shown: String = path.chars().take(100).collect();
    match http::allow_for(route, true) {
        Some(allow) => Failure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} {shown} is not supported; use {allow}"),
        ),
        None => Failure::new(StatusCode::NOT_FOUND, "not_found", format!("no admin route {shown:?}")),
    }
}

/// Grant targets arrive as JSON, which bypasses [`GrantTarget::parse`];
/// check the labels here so junk never reaches the store.
fn checked_target(target: GrantTarget) -> Result<GrantTarget, Failure> {
    let bad =
        |e: seg_common::api::BadLabel| Failure::new(StatusCode::BAD_REQUEST, "bad_grant", e.to_string());
    if let ProjectMatch::Exact(p) = &target.project {
        validate_label("project", p).map_err(bad)?;
    }
    validate_label("service", &target.service).map_err(bad)?;
    Ok(target)
}

pub(super) fn info(m: SecretMeta) -> SecretInfo {
    SecretInfo {
        name: m.name,
        version: m.version,
        ttl_ms: m.ttl_ms,
        grants: m.grants.iter().map(ToString::to_string).collect(),
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

#[cfg(test)]
#[path = "admin_tests.rs"]
mod tests;
