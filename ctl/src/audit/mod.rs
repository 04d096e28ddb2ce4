//! `segctl audit`: checks a Docker host against the CIS Docker Benchmark 1.6
//! recommendations that matter for seg's threats, plus seg's own checks
//! (secrets in the environment, setuid files, policy coverage, exposed secret
//! holders, sidecar hardening); scores it; fixes what seg owns.
//!
//! Compute, then apply:
//! - [`collect`] gathers [`facts::Facts`] through the narrow [`collect::EngineApi`]
//!   trait ([`docker_engine::DockerEngine`] for real) and a few host reads;
//! - [`evaluate`] is pure: facts → findings;
//! - [`fix`] plans (pure) and applies through the [`fix::Fixer`] trait;
//! - [`table`], [`sarif`] and serde (JSON) render the [`model::Report`].
//!
//! The check catalog, levels and the JSON schema are documented in
//! `docs/audit.md` and `docs/audit-schema.json`.

mod agent_dir;
pub mod catalog;
pub mod cli;
pub mod collect;
mod container_checks;
mod daemon_checks;
pub mod docker_engine;
pub mod dockerd;
pub mod facts;
pub mod fix;
pub mod model;
pub mod sarif;
mod secrets_env;
mod seg_checks;
pub mod setid;
pub mod table;

pub use cli::{run, AuditArgs};

use catalog::{finding, ids};
use facts::Facts;
use model::{Degraded, Finding, Level, Object};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("Docker: {action}: {reason}")]
    Docker { action: &'static str, reason: String },
    #[error(
        "no running container `{0}` (give a name as `docker ps` shows it, or at least 12 digits of its id)"
    )]
    NoSuchContainer(String),
    #[error(transparent)]
    UnknownCheck(#[from] catalog::UnknownCheck),
    #[error(transparent)]
    Fix(#[from] fix::FixError),
    #[error("{0}")]
    Internal(String),
}

/// Pure: every finding of the `selected` checks over `facts`, and the checks
/// that ran with less than they needed.
pub fn evaluate(facts: &Facts, selected: &[&str], run_dir: &str) -> (Vec<Finding>, Vec<Degraded>) {
    let wants = |id: &str| selected.contains(&id);
    let (mut out, mut degraded) = daemon_checks::check(&facts.daemon);
    if wants(ids::APPARMOR) && !facts.daemon.apparmor() {
        let detail = "AppArmor is not enabled on this host: the check does not apply to its containers";
        out.push(finding(ids::APPARMOR, Level::Note, vec![Object::daemon()], detail));
    }
    for c in &facts.containers {
        out.extend(container_checks::check(c, &facts.daemon, Some(selected)));
        out.extend(seg_checks::per_container(c, run_dir, &mut degraded));
    }
    if wants(ids::UNCOVERED) {
        out.extend(seg_checks::coverage(&facts.containers, &facts.seg));
    }
    if wants(ids::EXPOSED_SECRETS) {
        out.extend(seg_checks::exposed_secrets(facts, run_dir, &mut degraded));
    }
    out.retain(|f| wants(f.id));
    degraded.retain(|d| wants(d.check));
    (out, degraded)
}

#[cfg(test)]
mod tests;
