//! The agent API (containers only). A caller is identified once per
//! connection, when it is accepted, by attestation of the process that
//! connected (pinned by its pidfd); the decision — identity or refusal — is
//! never revisited, a refused connection is closed after its answer, and a
//! connection whose process has exited is refused and closed. A caller may
//! list and read only the secrets granted to its identity. "Not granted" and
//! "no such secret" get the same answer so a container cannot probe for
//! names.
//!
//! The push side — watch streams, acknowledgements, post-rotate
//! notifications and reads of the previous version — is in `agent_rotation`.

use super::access_log::{AccessLog, Entry, Socket};
use super::hangup::Hangup;
use super::http::{self, json, parse_name, Failure, ReqBody, Resp, Route};
use super::rotation_state::RotationState;
use super::{finish, read_store, store_failure};
use crate::attest::{AttestError, Attested, LookupError, PinnedPeer};
use crate::store::{SecretStore, StoreError};
use futures_util::future::BoxFuture;
use hyper::{Method, Request, StatusCode};
use seg_common::api::{short_id, GrantedSecret, SecretList, WhoAmI};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// Turns a pinned caller into an identity. The live implementation attests
/// via `/proc` and Docker; tests use a fake.
pub trait Identify: Send + Sync {
    fn identify<'a>(&'a self, peer: &'a PinnedPeer) -> BoxFuture<'a, Result<Attested, IdentifyError>>;
}

#[derive(Debug, thiserror::Error)]
pub enum IdentifyError {
    #[error("Docker is unreachable, so callers cannot be identified ({0}); retry shortly")]
    DockerUnavailable(String),
    #[error(transparent)]
    Attest(#[from] AttestError),
}

impl IdentifyError {
    /// The container the caller was found in, when attestation got that far
    /// (so a refusal's access-log line names it, not only its reason).
    fn container_id(&self) -> Option<&str> {
        match self {
            IdentifyError::Attest(
                AttestError::NoIdentity { container_id }
                | AttestError::Lookup { container_id, .. }
                | AttestError::NotRunning { container_id }
                | AttestError::BadLabel { container_id, .. }
                | AttestError::WritableAgentMount { container_id, .. },
            ) => Some(container_id),
            _ => None,
        }
    }

    pub(crate) fn into_failure(self) -> Failure {
        let forbidden = StatusCode::FORBIDDEN;
        let code = match &self {
            IdentifyError::DockerUnavailable(_)
            | IdentifyError::Attest(AttestError::Lookup { cause: LookupError::Docker(_), .. }) => {
                return Failure::new(StatusCode::SERVICE_UNAVAILABLE, "docker_unavailable", self.to_string())
            }
            IdentifyError::Attest(AttestError::NotAContainer { .. }) => "not_a_container",
            IdentifyError::Attest(AttestError::NoIdentity { .. } | AttestError::BadLabel { .. }) => {
                "no_identity"
            }
            IdentifyError::Attest(AttestError::WritableAgentMount { .. }) => "agent_mount_writable",
            IdentifyError::Attest(AttestError::ProcessGone { .. }) => "caller_gone",
            IdentifyError::Attest(_) => "unidentified",
        };
        Failure::new(forbidden, code, self.to_string())
    }
}

pub struct Agent {
    pub store: Arc<dyn SecretStore>,
    pub log: Arc<AccessLog>,
    pub identify: Arc<dyn Identify>,
    pub rotation_state: Arc<RotationState>,
}

/// A refused identification, as every request of the connection is answered.
#[derive(Debug, Clone)]
pub struct Refused {
    failure: Failure,
    /// The container the caller was found in, if attestation got that far.
    container_id: Option<String>,
}

/// Per-connection state: the pinned peer, the identity decided for it
/// (once), and the way to hang up on it (a watch stream cut off, its
/// container gone).
pub struct AgentConn {
    peer: PinnedPeer,
    who: OnceCell<Result<Attested, Refused>>,
    pub(super) hangup: Hangup,
}

impl AgentConn {
    pub fn pinned(peer: PinnedPeer, hangup: Hangup) -> AgentConn {
        AgentConn { peer, who: OnceCell::new(), hangup }
    }

    /// A connection of a unit test's fake caller `pid` (always alive).
    #[cfg(test)]
    pub fn new(peer: super::server::Peer) -> AgentConn {
        AgentConn::pinned(PinnedPeer::fixture(peer.pid.unwrap_or(0), peer.uid), Hangup::default())
    }

    pub fn pid(&self) -> i32 {
        self.peer.pid
    }

    /// Resolves when the process that opened the connection has exited.
    pub async fn peer_exited(&self) {
        self.peer.exited().await
    }

    /// Whether this connection must be closed after the current answer: its
    /// identification failed, or the process that opened it is gone.
    fn closing(&self) -> bool {
        self.who.get().is_some_and(|w| w.is_err()) || !self.peer.is_alive()
    }
}

impl Agent {
    pub async fn handle<B: ReqBody>(&self, conn: &AgentConn, req: Request<B>) -> Resp {
        let mut entry = Entry::new(Socket::Agent, "unknown");
        entry.pid = Some(conn.peer.pid);
        entry.uid = Some(conn.peer.uid);
        let result = self.dispatch(conn, req, &mut entry).await;
        let mut resp = finish(&mut entry, result);
        self.log.record(&entry);
        if conn.closing() {
            // hyper closes the connection once this answer is written.
            resp.headers_mut()
                .insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
        }
        resp
    }

    /// Decides who the caller of `conn` is — once: the answer, identity or
    /// refusal, holds for the connection's life. The server calls this when
    /// it accepts the connection.
    pub async fn identify_conn<'c>(&self, conn: &'c AgentConn) -> Result<&'c Attested, &'c Refused> {
        let decided = conn
            .who
            .get_or_init(|| async {
                self.identify.identify(&conn.peer).await.map_err(|err| Refused {
                    container_id: err.container_id().map(short_id),
                    failure: err.into_failure(),
                })
            })
            .await;
        decided.as_ref()
    }

    async fn dispatch<B: ReqBody>(
        &self,
        conn: &AgentConn,
        req: Request<B>,
        entry: &mut Entry,
    ) -> Result<Resp, Failure> {
        let path = req.uri().path().to_owned();
        let route = http::route(&path);
        let (get, post) = (req.method() == Method::GET, req.method() == Method::POST);
        entry.action = match route {
            Route::WhoAmI if get => "whoami",
            Route::Secrets if get => "list",
            Route::Secret(_) if get => "read",
            Route::Watch if get => "watch",
            Route::Ack if post => "ack",
            Route::Notify if post => "notify",
            _ => return Err(unrouted(route, &req)),
        };
        if let Route::Secret(raw) = route {
            // Named in the log even when the caller is refused before the read.
            entry.secret = parse_name(raw).ok().map(|n| n.to_string());
        }
        let who = self.attest(conn, entry).await?;
        entry.identity = Some(who.identity.to_string());
        entry.container_id = Some(short_id(&who.container_id));
        let query = req.uri().query().map(str::to_owned);
        match route {
            Route::WhoAmI => Ok(json(
                StatusCode::OK,
                &WhoAmI { identity: who.identity.clone(), container_id: who.container_id.clone() },
            )),
            Route::Secrets => self.list(who).await,
            Route::Secret(raw) => self.read(who, raw, query.as_deref(), entry).await,
            Route::Watch => self.watch(conn, who, query.as_deref(), entry).await,
            Route::Ack => self.ack(who, http::read_json_request(req).await?, entry).await,
            _ => self.notify(who, http::read_json_request(req).await?, entry).await,
        }
    }

    async fn attest<'c>(&self, conn: &'c AgentConn, entry: &mut Entry) -> Result<&'c Attested, Failure> {
        let who = self.identify_conn(conn).await.map_err(|refused| {
            entry.container_id.clone_from(&refused.container_id);
            refused.failure.clone()
        })?;
        // The identity belongs to the process that connected: once it has
        // exited, whoever holds the socket now (it may have been passed on
        // with SCM_RIGHTS) is nobody.
        if !conn.peer.is_alive() {
            entry.container_id = Some(short_id(&who.container_id));
            return Err(Failure::new(
                StatusCode::FORBIDDEN,
                "caller_gone",
                "the process that opened this connection has exited; connections cannot be handed on",
            ));
        }
        Ok(who)
    }

    async fn list(&self, who: &Attested) -> Result<Resp, Failure> {
        let secrets = self.granted(who).await?;
        Ok(json(StatusCode::OK, &SecretList { secrets }))
    }

    /// The secrets granted to `who`, with their current versions.
    pub(super) async fn granted(&self, who: &Attested) -> Result<Vec<GrantedSecret>, Failure> {
        let metas = read_store(&self.store, |s| s.list()).map_err(store_failure)?;
        Ok(metas
            .into_iter()
            .filter(|m| m.grants.iter().any(|g| g.matches(&who.identity)))
            .map(|m| GrantedSecret { name: m.name, version: m.version, ttl_ms: m.ttl_ms })
            .collect())
    }

    async fn read(
        &self,
        who: &Attested,
        raw: &str,
        query: Option<&str>,
        entry: &mut Entry,
    ) -> Result<Resp, Failure> {
        let name = parse_name(raw)?;
        let [wanted] = http::numbers_query(query, ["version"])?;
        entry.secret = Some(name.to_string());
        let denied = || {
            Failure::new(
                StatusCode::FORBIDDEN,
                "not_granted",
                format!(
                    "{} may not read secret {name} (it is not granted to this service, or does not exist); \
                     an operator can run `segctl secret grant {name} --to {}`",
                    who.identity, who.identity
                ),
            )
        };
        let n = name.clone();
        let meta = match read_store(&self.store, |s| s.meta(&n)) {
            Ok(meta) => meta,
            Err(StoreError::NotFound(_)) => return Err(denied()),
            Err(e) => return Err(store_failure(e)),
        };
        let grant = meta.grants.iter().find(|g| g.matches(&who.identity)).ok_or_else(denied)?;
        entry.reason = format!("granted to {grant}");
        if let Some(v) = wanted.filter(|v| *v != meta.version) {
            return self.read_previous(&name, v, meta.version, entry).await;
        }
        let n = name.clone();
        let current = match read_store(&self.store, |s| s.get(&n)) {
            Ok(v) => v,
            Err(StoreError::NotFound(_)) => return Err(denied()),
            Err(e) => return Err(store_failure(e)),
        };
        entry.version = Some(current.version);
        Ok(http::secret_value(current.value, current.version, current.ttl_ms))
    }
}

pub(super) fn unrouted<B>(route: Route<'_>, req: &Request<B>) -> Failure {
    match http::allow_for(route, false) {
        Some(allow) => Failure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} {} is not supported; use {allow}", req.method(), req.uri().path()),
        ),
        None => {
            let shown: String = req.uri().path().chars().take(100).collect();
            Failure::new(StatusCode::NOT_FOUND, "not_found", format!("no agent route {shown:?}"))
        }
    }
}

#[cfg(test)]
#[path = "agent_tests.rs"]
mod tests;
