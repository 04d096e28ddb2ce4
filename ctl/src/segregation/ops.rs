//! The operations behind the admin routes. Each one that changes something
//! validates first (parse with line and column, the policy set as a
//! whole), then changes the rules in one transaction, then persists; if a
//! later step fails the earlier ones are undone, so a refused request leaves
//! the rules and the stored state as they were.

use super::api::{
    ApplyResult, CheckResult, DeclaredGrant, DiffResult, PolicyDetail, PolicySource, PolicySummary,
    RemoveResult,
};
use super::events::fix_attachments;
use super::state::{Mode, State};
use super::store::{name_of, Record, StoreError};
use super::{attach, blocking, live, view, Segregation};
use crate::docker::DockerNetworks;
use crate::firewall::{check, compile_with, validate_set, FirewallError, FlowEnd};
use crate::policy::{self, PolicyError, PortRange};
use bollard::Docker;
use seg_common::api::Identity;
use std::net::IpAddr;

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    BadPolicy(#[from] PolicyError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}; nothing was changed")]
    Conflict(String),
    #[error("no policy named `{0}` is applied (see `segctl policy ls`)")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("the firewall refused the update, so nothing changed: {0}")]
    Firewall(FirewallError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Docker(#[from] live::DockerFailure),
    #[error(transparent)]
    DaemonJson(#[from] crate::daemon_json::DaemonJsonError),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    /// `x-seg.secrets` names secrets the store does not hold.
    #[error(
        "{file}: x-seg.secrets names {} the store does not hold: {}; put {} first (`segctl secret put NAME`); \
         nothing was changed",
        if names.len() == 1 { "a secret" } else { "secrets" },
        names.join(", "),
        if names.len() == 1 { "it" } else { "them" }
    )]
    UnknownSecrets { file: String, names: Vec<String> },
    #[error("cannot read the secret store's grants: {0}; nothing was changed")]
    SecretStore(Box<crate::store::StoreError>),
    /// A grant or revocation of a declaration failed; what was done is undone.
    #[error("cannot {action} {grant}: {cause}; the policy and its grants were left as before")]
    Grant { action: &'static str, grant: String, cause: Box<crate::store::StoreError> },
}

// By hand, not `#[from]`: the message already quotes the firewall's error, so
// it must not be its `source` too (a chain printer would say it twice).
impl From<FirewallError> for OpError {
    fn from(e: FirewallError) -> OpError {
        OpError::Firewall(e)
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Segregation {
    /// The Docker client; a controller that has just started waits for its
    /// first connection attempt rather than refusing at once.
    pub(super) async fn require_docker(&self) -> Result<Docker, OpError> {
        self.docker.settled(crate::docker::FIRST_ATTEMPT_WAIT).await.ok().ok_or_else(|| {
            OpError::Unavailable(
                "the controller is not connected to Docker yet, and rules cannot be computed without \
                 the containers; check `segctl status`, then retry"
                    .into(),
            )
        })
    }

    /// Re-reads every container and network into the state.
    pub(super) async fn refresh_all(&self, st: &mut State, docker: &Docker) -> Result<(), OpError> {
        let (containers, networks) = live::collect(docker).await?;
        st.live.replace(containers, networks);
        Ok(())
    }

    pub async fn list(&self) -> Vec<PolicySummary> {
        let st = self.state.lock().await;
        st.records().values().zip(st.policies()).map(|(r, p)| view::summary(r, p)).collect()
    }

    pub async fn show(&self, name: &str) -> Result<PolicyDetail, OpError> {
        let st = self.state.lock().await;
        let (record, policy) = st.policy(name).ok_or_else(|| OpError::NotFound(name.into()))?;
        Ok(PolicyDetail {
            summary: view::summary(record, policy),
            policy: view::normalized(policy),
            source: record.source.text.clone(),
        })
    }

    /// The grants the applied policy `name` made; `None`: no such policy.
    pub async fn owned_grants(&self, name: &str) -> Option<Vec<DeclaredGrant>> {
        self.state.lock().await.records().get(name).map(|r| r.grants.clone())
    }

    /// `segctl policy apply`: the policy replaces the one of its project;
    /// `grants` are the grants it owns from now on (made by the caller).
    pub async fn apply(
        &self,
        source: PolicySource,
        grants: Vec<DeclaredGrant>,
    ) -> Result<ApplyResult, OpError> {
        let _changing = self.changing.lock().await;
        self.install(source, grants, true).await
    }

    /// [`Segregation::apply`]; `persist` false when the policy comes from
    /// the cluster store (another node applied and stored it).
    pub(super) async fn install(
        &self,
        source: PolicySource,
        grants: Vec<DeclaredGrant>,
        persist: bool,
    ) -> Result<ApplyResult, OpError> {
        let parsed = policy::parse_source(&source.text, &source.file, source.dir_project.as_deref())?;
        let name = name_of(&parsed);
        let docker = self.require_docker().await?;
        let mut st = self.state.lock().await;
        validate_set(&st.with_candidate(&name, &parsed)).map_err(|e| OpError::Conflict(e.to_string()))?;
        let same = st.records().get(&name).is_some_and(|r| r.source == source && r.grants == grants);
        self.refresh_all(&mut st, &docker).await?;
        let mut networks = super::api::NetworkReport::default();
        attach::ensure(
            &DockerNetworks { docker: docker.clone() },
            &parsed,
            st.live.inventory(),
            &mut networks,
        )
        .await;
        if !networks.created.is_empty() {
            st.live.set_networks(live::networks(&docker).await?);
        }
        let project = parsed.project.as_ref().map(|p| p.0.clone());
        networks.warnings.extend(super::host::bridge_warnings(st.live.inventory(), project.as_deref()).await);
        let record = Record { name: name.clone(), source, applied_at: now(), grants };
        let previous = st.put(record.clone(), parsed);
        let outcome = blocking(|| st.reconcile(Mode::Full)).map_err(OpError::from);
        let outcome = outcome.and_then(|o| self.persist(persist, |s| s.save(&record)).map(|()| o));
        let (applied, desired) = match outcome {
            Ok(Some(done)) => done,
            Ok(None) => unreachable!("the inventory was just read and a policy is in place"),
            Err(e) => return Err(self.undo(&mut st, &name, previous, e, persist)),
        };
        // Rules first, then moves: a container moved onto a guarded network
        // is dropped there until its connect event is handled, never open.
        let moved = fix_attachments(&mut st, &docker, None).await;
        networks.attachments = moved.attachments;
        networks.warnings.extend(moved.warnings);
        if !networks.attachments.is_empty() {
            blocking(|| st.reconcile(Mode::Fast))?;
        }
        let changed =
            !same || applied.changed() || !networks.attachments.is_empty() || !networks.created.is_empty();
        Ok(ApplyResult {
            name,
            changed,
            networks,
            rules: applied.report(&desired),
            grants: Default::default(),
        })
    }

    /// Puts the previous policy (or none) back, in memory, on disk and in
    /// the kernel, after a failed apply; returns the original error.
    fn undo(
        &self,
        st: &mut State,
        name: &str,
        previous: Option<(Record, policy::Policy)>,
        err: OpError,
        persist: bool,
    ) -> OpError {
        st.take(name);
        let restored = match previous {
            Some((record, p)) => {
                let saved = self.persist(persist, |s| s.save(&record));
                st.put(record, p);
                saved.err()
            }
            None => self.persist(persist, |s| s.remove(name).map(drop)).err(),
        };
        if let Err(e) = blocking(|| st.reconcile(Mode::Full)) {
            tracing::error!(
                "after a failed apply of `{name}`, the previous rules could not be restored: {e}"
            );
        }
        if let Some(e) = restored {
            tracing::error!("after a failed apply of `{name}`, the stored policy could not be restored: {e}");
        }
        err
    }

    /// `segctl policy rm`: its rules go; networks and attachments stay.
    pub async fn remove(&self, name: &str) -> Result<RemoveResult, OpError> {
        let _changing = self.changing.lock().await;
        self.uninstall(name, true).await
    }

    /// Writes to the policy store unless the change came from it (off the
    /// async workers: the cluster store blocks on etcd).
    fn persist(
        &self,
        persist: bool,
        op: impl FnOnce(&super::store::Store) -> Result<(), StoreError>,
    ) -> Result<(), OpError> {
        if persist {
            blocking(|| op(&self.store))?;
        }
        Ok(())
    }

    /// [`Segregation::remove`]; `persist` as for [`Segregation::install`].
    pub(super) async fn uninstall(&self, name: &str, persist: bool) -> Result<RemoveResult, OpError> {
        let docker = self.require_docker().await?;
        let mut st = self.state.lock().await;
        if st.policy(name).is_none() {
            return Err(OpError::NotFound(name.into()));
        }
        self.refresh_all(&mut st, &docker).await?;
        let previous = st.take(name);
        let outcome = blocking(|| st.reconcile(Mode::Full)).map_err(OpError::from);
        let outcome = outcome.and_then(|o| self.persist(persist, |s| s.remove(name).map(drop)).map(|()| o));
        match outcome {
            Ok(done) => {
                let rules = done.map(|(a, d)| a.report(&d)).unwrap_or_default();
                Ok(RemoveResult { name: name.into(), rules, grants: Default::default() })
            }
            Err(e) => {
                if let Some((record, p)) = previous {
                    st.put(record, p);
                }
                let _ = blocking(|| st.reconcile(Mode::Full));
                Err(e)
            }
        }
    }

    /// `segctl policy diff`: what `apply` would write, against the live rules.
    pub async fn diff(&self, source: PolicySource) -> Result<DiffResult, OpError> {
        let parsed = policy::parse_source(&source.text, &source.file, source.dir_project.as_deref())?;
        let name = name_of(&parsed);
        let docker = self.require_docker().await?;
        let mut st = self.state.lock().await;
        let candidates = st.with_candidate(&name, &parsed);
        validate_set(&candidates).map_err(|e| OpError::Conflict(e.to_string()))?;
        self.refresh_all(&mut st, &docker).await?;
        let desired = compile_with(&candidates, st.live.inventory(), &st.host());
        let (v4, v6) = blocking(|| st.writer.diff(&desired))?;
        let mut notes: Vec<String> = attach::to_create(&parsed, st.live.inventory())
            .iter()
            .map(|s| format!("apply would first create network {} (its rules then follow)", s.name))
            .collect();
        let moves = attach::plan(std::slice::from_ref(&parsed), st.live.inventory(), None);
        notes.extend(moves.iter().map(|op| format!("apply would {op} (its rules then follow)")));
        Ok(DiffResult { name, v4, v6, notes, grants: Default::default() })
    }

    /// `segctl policy check`: decided from the applied policies.
    pub async fn check(&self, from: &str, to: &str, port: &str) -> Result<CheckResult, OpError> {
        let st = self.state.lock().await;
        let range: PortRange = port.parse().map_err(|e| OpError::BadRequest(format!("--port: {e}")))?;
        if range.first != range.last {
            return Err(OpError::BadRequest(format!("--port {port}: give one port, not a range")));
        }
        let (src, dst) = (endpoint(&st, from)?, endpoint(&st, to)?);
        if matches!(dst, FlowEnd::World) {
            return Err(OpError::BadRequest("--to world: the world is a source only (use a CIDR)".into()));
        }
        let d = check(st.policies(), &src, &dst, range.proto, range.first);
        Ok(CheckResult {
            from: from.into(),
            to: to.into(),
            port: range.to_string(),
            allowed: d.allowed,
            rule: d.rule,
        })
    }
}

/// `world`, an address, `project/service`, or a service name that one
/// applied policy names (a standalone service otherwise).
fn endpoint(st: &State, text: &str) -> Result<FlowEnd, OpError> {
    if text == "world" {
        return Ok(FlowEnd::World);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(FlowEnd::Address(ip));
    }
    if let Some((project, service)) = text.split_once('/') {
        return Ok(FlowEnd::Service(Identity::new(Some(project), service)));
    }
    let owners: Vec<Option<&str>> =
        st.policies().iter().filter(|p| p.services.contains_key(text)).map(|p| p.project()).collect();
    match owners.as_slice() {
        [] | [None] => Ok(FlowEnd::Service(Identity::new(None, text))),
        [Some(project)] => Ok(FlowEnd::Service(Identity::new(Some(project), text))),
        many => {
            let names: Vec<String> = many.iter().map(|p| Identity::new(*p, text).to_string()).collect();
            Err(OpError::BadRequest(format!("`{text}` is ambiguous: say which one ({})", names.join(", "))))
        }
    }
}

impl Segregation {
    /// `segctl policy verify`: probes real flows between running containers
    /// of the applied policies (all, or the one named).
    pub async fn verify(
        &self,
        name: Option<&str>,
        timeout: std::time::Duration,
    ) -> Result<super::api::VerifyReport, OpError> {
        let docker = self.require_docker().await?;
        let mut st = self.state.lock().await;
        if let Some(n) = name.filter(|n| st.policy(n).is_none()) {
            return Err(OpError::NotFound(n.into()));
        }
        self.refresh_all(&mut st, &docker).await?;
        let selected: Vec<&policy::Policy> = st
            .records()
            .keys()
            .zip(st.policies())
            .filter(|(k, _)| name.is_none_or(|n| n == k.as_str()))
            .map(|(_, p)| p)
            .collect();
        let (planned, skipped) = super::verify::plan(st.policies(), &selected, &st.live, &st.host());
        // The PIDs: lists carry none, so the probing containers are inspected.
        let mut pids = std::collections::HashMap::new();
        for p in &planned {
            if !pids.contains_key(&p.from_id) {
                let known = live::inspect(&docker, &p.from_id).await?;
                pids.insert(p.from_id.clone(), known.and_then(|k| k.pid));
            }
        }
        drop(st);
        let targets: Vec<Option<super::probe::Target>> = planned
            .iter()
            .map(|p| pids[&p.from_id].map(|pid| super::probe::Target::from_pid(pid, p.addr)))
            .collect();
        let runnable: Vec<super::probe::Target> = targets.iter().flatten().cloned().collect();
        let mut results = tokio::task::spawn_blocking(move || super::probe::probe_all(&runnable, timeout))
            .await
            .map_err(|e| OpError::Unavailable(format!("the probes failed: {e}")))?
            .into_iter();
        let rows = planned
            .into_iter()
            .zip(targets)
            .map(|(p, t)| {
                let mut row = p.row;
                (row.observed, row.detail) = match t {
                    Some(_) => results.next().unwrap_or((super::api::Reach::Unknown, "no result".into())),
                    None => (super::api::Reach::Unknown, "the container stopped".into()),
                };
                row
            })
            .collect();
        Ok(super::api::VerifyReport { rows, skipped, timeout_ms: timeout.as_millis() as u64 })
    }
}
