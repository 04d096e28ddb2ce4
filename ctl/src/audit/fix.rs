//! `segctl audit --fix [--dry-run] [--default-deny]`: changes only what seg
//! owns, idempotently, and prints the plan before touching anything.
//!
//! - ICC off on docker0, persisted: `"icc": false` in daemon.json through
//!   [`crate::daemon_json`] (dockerd reads it when it restarts).
//! - ICC off on docker0, live: the controller's docker0 ICC rule (`PUT
//!   /v1/icc`, what `segctl icc disable` does), placed by the firewall compiler
//!   behind seg's policy jump. Without a running controller the step is
//!   reported as pending, never faked with a rule of our own.
//! - `--default-deny`: for each project with running services that no
//!   policy covers and no policy at all, a policy naming those services with
//!   no `ingress:` (the format's default deny), applied through the
//!   controller (`POST /v1/policies`). A project that has a policy already is
//!   not rewritten: the plan names the services to add to it.
//!
//! [`plan`] is pure over a [`FixState`] read through the [`Fixer`] trait;
//! [`apply`] runs the steps. A second run finds nothing to do.

use super::facts::Facts;
use crate::daemon_json::{self, DaemonJsonError};
use futures_util::future::BoxFuture;
use seg_common::api::Identity;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FixError {
    #[error(transparent)]
    DaemonJson(#[from] DaemonJsonError),
    #[error("the controller refused: {0}")]
    Controller(String),
}

/// The running node controller: what `--fix` asks of it.
pub trait Controller: Send {
    /// Puts the docker0 ICC rule into the controller's ruleset (at once).
    fn icc_off(&mut self) -> BoxFuture<'_, Result<(), FixError>>;
    /// Applies a policy (replacing the stored policy of the same name).
    fn apply_policy<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, Result<(), FixError>>;
}

/// What `--fix` may change, and how to read it back.
pub trait Fixer {
    fn daemon_json(&self) -> &Path;
    /// The persisted `icc` (`None`: not set, dockerd's default on).
    fn persisted_icc(&self) -> Result<Option<bool>, FixError>;
    /// Returns whether the file changed.
    fn persist_icc_off(&mut self) -> Result<bool, FixError>;
    /// `None`: the controller is not running.
    fn controller(&mut self) -> Option<&mut dyn Controller>;
}

/// What the plan is computed from.
#[derive(Clone, Debug, Default)]
pub struct FixState {
    pub persisted_icc: Option<bool>,
    /// Inter-container traffic on docker0 is off now (bridge option or a rule).
    pub live_icc_off: bool,
    pub controller: bool,
    /// Services with running, network-attached containers that no policy names.
    pub uncovered: BTreeSet<Identity>,
    pub default_deny: bool,
    /// Names of the applied policies (the project, or `_standalone`).
    pub policies: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    PersistIccOff {
        file: PathBuf,
        was: Option<bool>,
    },
    LiveIccOff,
    /// Shown, never applied: no controller to place the rule.
    LiveIccPending,
    ApplyPolicy {
        name: String,
        services: Vec<String>,
        text: String,
    },
    /// Shown, never applied: the project has a policy; seg does not rewrite it.
    AddToPolicy {
        name: String,
        services: Vec<String>,
    },
    /// Shown, never applied: no controller to apply the policy.
    PolicyPending {
        name: String,
        services: Vec<String>,
    },
}

impl Step {
    /// Whether [`apply`] acts on this step (the others are advice).
    pub fn actionable(&self) -> bool {
        matches!(self, Step::PersistIccOff { .. } | Step::LiveIccOff | Step::ApplyPolicy { .. })
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::PersistIccOff { file, was } => {
                let was = was.map_or("not set".to_owned(), |w| w.to_string());
                write!(f, "set \"icc\": false in {} (was {was}); dockerd applies it when it restarts", file.display())
            }
            Step::LiveIccOff => f.write_str("drop docker0-to-docker0 traffic now (the controller's ICC rule)"),
            Step::LiveIccPending => f.write_str(
                "pending: ICC off now needs the controller's rule; start it (`segctl node run`) and rerun, \
                 or restart dockerd to apply the persisted setting",
            ),
            Step::ApplyPolicy { name, services, .. } => {
                write!(f, "apply policy `{name}`: default-deny ingress for {}", services.join(", "))
            }
            Step::AddToPolicy { name, services } => write!(
                f,
                "not changed: policy `{name}` does not name {}; add them to it (seg does not rewrite your policy)",
                services.join(", ")
            ),
            Step::PolicyPending { name, services } => write!(
                f,
                "pending: default-deny policy `{name}` for {} needs the controller (`segctl node run`)",
                services.join(", ")
            ),
        }
    }
}

/// A policy closing ingress of `services` (`{}`: ingress absent = none).
pub fn default_deny_policy(project: Option<&str>, services: &BTreeSet<String>) -> String {
    let mut text = String::from(
        "# Applied by `segctl audit --fix --default-deny`: ingress closed for the services\n\
         # no policy covered. Replace it with a policy that opens what each service needs.\nversion: 1\n",
    );
    if let Some(p) = project {
        text.push_str(&format!("project: {p}\n"));
    }
    text.push_str("services:\n");
    for s in services {
        text.push_str(&format!("  {s}: {{}}\n"));
    }
    text
}

/// Pure: the steps that bring the host to what seg wants; empty when it is there.
pub fn plan(state: &FixState, daemon_json: &Path) -> Vec<Step> {
    let mut steps = Vec::new();
    if state.persisted_icc != Some(false) {
        steps.push(Step::PersistIccOff { file: daemon_json.to_owned(), was: state.persisted_icc });
    }
    if !state.live_icc_off {
        steps.push(if state.controller { Step::LiveIccOff } else { Step::LiveIccPending });
    }
    if !state.default_deny {
        return steps;
    }
    let mut by_project: BTreeMap<Option<&str>, BTreeSet<String>> = BTreeMap::new();
    for id in &state.uncovered {
        by_project.entry(id.project.as_deref()).or_default().insert(id.service.clone());
    }
    for (project, services) in by_project {
        let name = project.unwrap_or(crate::segregation::store::STANDALONE).to_owned();
        let list: Vec<String> = services.iter().cloned().collect();
        steps.push(if state.policies.contains(&name) {
            Step::AddToPolicy { name, services: list }
        } else if !state.controller {
            Step::PolicyPending { name, services: list }
        } else {
            Step::ApplyPolicy { name, services: list, text: default_deny_policy(project, &services) }
        });
    }
    steps
}

/// Services of running, network-attached containers that no policy names.
pub fn uncovered(facts: &Facts) -> BTreeSet<Identity> {
    let covered = |id: &Identity| {
        let mut named = facts.seg.policies.iter().filter(|p| p.project() == id.project.as_deref());
        named.any(|p| p.services.contains_key(id.service.as_str()))
    };
    let attached = |m: &str| !matches!(m, "none" | "host") && !m.starts_with("container:");
    facts
        .containers
        .iter()
        .filter(|c| attached(c.network_mode()))
        .filter_map(|c| crate::identity::identity_from_labels(&c.labels()).ok())
        .filter(|id| !covered(id))
        .collect()
}

/// Reads what the plan needs: the audit's facts plus daemon.json.
pub fn read_state(facts: &Facts, fixer: &mut dyn Fixer, default_deny: bool) -> Result<FixState, FixError> {
    let policies = facts
        .seg
        .policies
        .iter()
        .map(|p| p.project().unwrap_or(crate::segregation::store::STANDALONE).to_owned())
        .collect();
    Ok(FixState {
        persisted_icc: fixer.persisted_icc()?,
        live_icc_off: facts.daemon.docker0_icc_off(),
        controller: fixer.controller().is_some(),
        uncovered: if default_deny { uncovered(facts) } else { BTreeSet::new() },
        default_deny,
        policies,
    })
}

/// What one applied step did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixResult {
    pub step: Step,
    pub changed: bool,
}

/// Runs the actionable steps in order; stops at the first error (what ran
/// stays done, and a rerun plans only the rest).
pub async fn apply(steps: &[Step], fixer: &mut dyn Fixer) -> Result<Vec<FixResult>, FixError> {
    let mut out = Vec::new();
    for step in steps {
        let changed = match step {
            Step::PersistIccOff { .. } => fixer.persist_icc_off()?,
            Step::LiveIccOff => match fixer.controller() {
                Some(c) => c.icc_off().await.map(|()| true)?,
                None => false,
            },
            Step::ApplyPolicy { text, .. } => match fixer.controller() {
                Some(c) => c.apply_policy(text).await.map(|()| true)?,
                None => false,
            },
            Step::LiveIccPending | Step::AddToPolicy { .. } | Step::PolicyPending { .. } => false,
        };
        out.push(FixResult { step: step.clone(), changed });
    }
    Ok(out)
}

/// [`Controller`] over the admin socket.
pub struct AdminController {
    pub client: crate::client::AdminClient,
}

impl Controller for AdminController {
    fn icc_off(&mut self) -> BoxFuture<'_, Result<(), FixError>> {
        Box::pin(async move {
            use seg_common::api::policy::{IccRequest, IccStatus};
            let req = IccRequest { enabled: false, persist: false, daemon_json: None };
            let _: IccStatus = self
                .client
                .call("PUT", "/v1/icc", Some(&req))
                .await
                .map_err(|e| FixError::Controller(format!("{e:#}")))?;
            Ok(())
        })
    }

    fn apply_policy<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, Result<(), FixError>> {
        Box::pin(async move {
            use seg_common::api::policy::{ApplyResult, PolicySource};
            let source = PolicySource {
                file: "segctl audit --fix --default-deny".into(),
                text: text.to_owned(),
                dir_project: None,
            };
            let _: ApplyResult = self
                .client
                .call("POST", "/v1/policies", Some(&source))
                .await
                .map_err(|e| FixError::Controller(format!("{e:#}")))?;
            Ok(())
        })
    }
}

/// The real [`Fixer`]: daemon.json on disk, the controller when it runs.
pub struct HostFixer {
    pub daemon_json: PathBuf,
    pub controller: Option<AdminController>,
}

impl Fixer for HostFixer {
    fn daemon_json(&self) -> &Path {
        &self.daemon_json
    }
    fn persisted_icc(&self) -> Result<Option<bool>, FixError> {
        Ok(daemon_json::read_icc(&self.daemon_json)?)
    }
    fn persist_icc_off(&mut self) -> Result<bool, FixError> {
        Ok(daemon_json::set_icc(&self.daemon_json, false)?.changed())
    }
    fn controller(&mut self) -> Option<&mut dyn Controller> {
        self.controller.as_mut().map(|c| c as &mut dyn Controller)
    }
}

#[cfg(test)]
#[path = "fix_tests.rs"]
mod tests;
