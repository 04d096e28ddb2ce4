//! Exec hooks: a pre- or post-rotate command run *inside* the running
//! containers of a service, found at each run by compose labels (the one
//! identity rule), so compose v1 (`shop_db_1`) and v2 (`shop-db-1`) names,
//! scaled services and several projects need no change to the hook.
//!
//! - A target `PROJECT/SERVICE` means that service; a bare `SERVICE` means
//!   that service in every project of the secret's consumers (the projects
//!   its grants name, and those of the containers consuming it now).
//! - Scaled services: the hook runs in **every** running replica, one after
//!   the other in name order. Pre-rotate stops at the first failure and the
//!   rotation is aborted (replicas already done keep what the command did:
//!   write commands that can be run twice). Post-rotate runs in every
//!   replica whatever the others did.
//! - No running container of the service is a failure, as is a non-zero
//!   exit, Docker refusing the exec, or the timeout (per replica; see
//!   `docker/exec.rs` for how the process is killed).
//! - Pre-rotate commands get the new value on stdin; post-rotate commands
//!   get a JSON description (names and versions, never the value: the
//!   consumer already read it from its own sidecar).

use super::access_log::{HookLog, Socket};
use super::hooks::{tail, HookResult};
use super::rotation_state::{shorten, AppContainer, ContainersError, HookRecord, RotationState};
use crate::docker::{ExecError, ExecOutput, ExecRun};
use crate::store::SecretMeta;
use seg_common::api::{short_id, ExecHook, HookRun, Identity, ProjectMatch, ServiceTarget};
use seg_common::name::SecretName;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// One container an exec hook runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub identity: Identity,
    pub container: AppContainer,
}

impl Target {
    /// `shop-db-1 (0123456789ab)`, as logged.
    pub fn shown(&self) -> String {
        format!("{} ({})", self.container.name, short_id(&self.container.id))
    }
}

/// The projects of a secret's consumers: those its grants name, and those
/// of the containers that consume it now (`None`: standalone containers).
pub fn consumer_projects(meta: &SecretMeta, live: &[Identity]) -> BTreeSet<Option<String>> {
    let granted = meta.grants.iter().filter_map(|g| match &g.project {
        ProjectMatch::Exact(p) => Some(Some(p.clone())),
        ProjectMatch::None => Some(None),
        ProjectMatch::Any => None,
    });
    granted.chain(live.iter().map(|i| i.project.clone())).collect()
}

/// The running app containers found for each identity the target means,
/// as targets in name order; an error when there is none at all.
pub fn targets(
    target: &ServiceTarget,
    found: Vec<(Identity, Vec<AppContainer>)>,
) -> Result<Vec<Target>, String> {
    let looked: Vec<String> = found.iter().map(|(i, _)| i.to_string()).collect();
    let mut all: Vec<Target> = found
        .into_iter()
        .flat_map(|(identity, cs)| {
            cs.into_iter().map(move |container| Target { identity: identity.clone(), container })
        })
        .collect();
    all.sort_by(|a, b| (&a.container.name, &a.container.id).cmp(&(&b.container.name, &b.container.id)));
    all.dedup_by(|a, b| a.container.id == b.container.id);
    if !all.is_empty() {
        return Ok(all);
    }
    Err(if looked.is_empty() {
        format!(
            "no project is known for service {target}: no grant names a project and no consumer is \
             connected; name it as PROJECT/SERVICE"
        )
    } else {
        format!("no running container of service {} (compose labels)", looked.join(", "))
    })
}

/// Finds the containers an exec hook runs in, now.
pub async fn resolve(rs: &RotationState, meta: &SecretMeta, exec: &ExecHook) -> Result<Vec<Target>, String> {
    let target = ServiceTarget::parse(&exec.service)?;
    let live: Vec<Identity> =
        rs.consumers.status(meta, &rs.hub.views(), None).consumers.into_iter().map(|c| c.identity).collect();
    let mut found = Vec::new();
    for identity in target.identities(&consumer_projects(meta, &live)) {
        let containers = rs.containers.find(&identity).await.map_err(|e| e.to_string())?;
        found.push((identity, containers));
    }
    targets(&target, found)
}

/// How one exec ended, as a hook result.
pub fn outcome(answer: Result<ExecOutput, ContainersError>, started: Instant) -> HookResult {
    let (status, ok, output) = match answer {
        Ok(out) => {
            let ok = out.exit_code == Some(0);
            let status = out.exit_code.map_or("ended without an exit code".into(), |c| format!("exit {c}"));
            let shown = if ok {
                String::new()
            } else {
                tail(if out.stderr.is_empty() { &out.stdout } else { &out.stderr })
            };
            (status, ok, shown)
        }
        Err(ContainersError::Exec(e @ ExecError::TimedOut { .. })) => (e.to_string(), false, String::new()),
        Err(e) => (e.to_string(), false, String::new()),
    };
    HookResult { run: HookRun { status, duration_ms: started.elapsed().as_millis() as u64 }, ok, output }
}

/// One exec hook run, across its targets.
pub struct Call<'a> {
    pub kind: &'static str,
    pub secret: &'a SecretName,
    /// The version the rotation creates (pre-rotate: not yet stored).
    pub version: u64,
    pub exec: &'a ExecHook,
    pub timeout: Duration,
    pub stdin: &'a [u8],
    /// Pre-rotate: stop at the first failure.
    pub stop_on_failure: bool,
}

/// Runs `call` in each target in turn and logs each run.
pub async fn run(rs: &RotationState, call: &Call<'_>, targets: &[Target]) -> Vec<(Target, HookResult)> {
    let env = vec![
        format!("SEG_HOOK={}", call.kind),
        format!("SEG_SECRET_NAME={}", call.secret),
        format!("SEG_SECRET_VERSION={}", call.version),
    ];
    let mut done = Vec::new();
    for t in targets {
        let started = Instant::now();
        let run = ExecRun {
            container: &t.container.id,
            argv: &call.exec.argv,
            user: call.exec.user.as_deref(),
            env: &env,
            stdin: call.stdin,
            timeout: call.timeout,
        };
        let result = outcome(rs.containers.exec(run).await, started);
        log(rs, call, Some(t), &result);
        let failed = !result.ok;
        done.push((t.clone(), result));
        if failed && call.stop_on_failure {
            break;
        }
    }
    done
}

/// Writes the access-log line of one run (`target` absent: it found no container).
pub fn log(rs: &RotationState, call: &Call<'_>, target: Option<&Target>, result: &HookResult) {
    let hook = HookLog {
        kind: call.kind,
        action: "exec".into(),
        target: target.map_or(call.exec.service.clone(), |t| t.identity.to_string()),
        container: target.map(Target::shown),
        status: shorten(&result.run.status),
        duration_ms: result.run.duration_ms,
    };
    let attempted = call.kind == "pre-rotate";
    let record = HookRecord {
        socket: Socket::Admin,
        secret: call.secret,
        version: call.version,
        attempted,
        who: None,
        hook,
        ok: result.ok,
    };
    rs.log_hook(record);
}

#[cfg(test)]
#[path = "hook_exec_tests.rs"]
mod tests;
