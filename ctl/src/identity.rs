//! Who a container is for seg: the one rule that turns a container's labels
//! into its [`Identity`]. Attestation (the agent socket), the firewall
//! inventory, segregation, notify and audit all call [`identity_from_labels`],
//! so the secrets side and the network side never disagree about a container.
//! This module owns the label names and imports nothing of the controller.
//!
//! Precedence (docs/DESIGN.md, "Identity"):
//! - project: `com.docker.compose.project`, else `seg.project`, else none;
//! - service: `seg.for` (a sidecar acts for that service of its own project),
//!   else `com.docker.compose.service`, else `seg.service`, else no identity.
//!
//! Only the labels actually used are validated, so an ignored label with an
//! odd value does not lock a container out; a used label that is empty or
//! not a valid name gives the container no identity at all.

use seg_common::api::{validate_label, BadLabel, Identity};
use std::collections::BTreeMap;

pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";
/// On a compose network: the network's key in the compose file.
pub const COMPOSE_NETWORK: &str = "com.docker.compose.network";
pub const SEG_FOR: &str = "seg.for";
pub const SEG_SERVICE: &str = "seg.service";
pub const SEG_PROJECT: &str = "seg.project";
/// On an app container: the services (of its own project, comma-separated)
/// whose sidecars may have the controller notify it after a rotation. A
/// caller can always notify its own service; any other needs this consent.
pub const SEG_NOTIFY_FROM: &str = "seg.notify-from";

/// Whether the container is a sidecar: it carries `seg.for` (and so the
/// identity of the service it acts for, never its own).
pub fn is_sidecar(labels: &BTreeMap<String, String>) -> bool {
    labels.contains_key(SEG_FOR)
}

/// The services named by a `seg.notify-from` label.
pub fn notify_from(labels: &BTreeMap<String, String>) -> Vec<String> {
    labels
        .get(SEG_NOTIFY_FROM)
        .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("no identity label: set com.docker.compose.service (compose does), seg.for or seg.service")]
    Missing,
    #[error("bad identity label: {0}")]
    Invalid(BadLabel),
}

// By hand, not `#[from]`: the message quotes the label error, so it is not
// also exposed as `source` (a chain printer would say it twice).
impl From<BadLabel> for LabelError {
    fn from(e: BadLabel) -> LabelError {
        LabelError::Invalid(e)
    }
}

/// The label `key`, validated, if present.
fn get(labels: &BTreeMap<String, String>, key: &'static str) -> Result<Option<String>, BadLabel> {
    match labels.get(key) {
        Some(value) => validate_label(key, value).map(|()| Some(value.clone())),
        None => Ok(None),
    }
}

/// The identity a container's labels give it (see the module docs).
pub fn identity_from_labels(labels: &BTreeMap<String, String>) -> Result<Identity, LabelError> {
    let project = match get(labels, COMPOSE_PROJECT)? {
        Some(p) => Some(p),
        None => get(labels, SEG_PROJECT)?,
    };
    let service = if let Some(s) = get(labels, SEG_FOR)? {
        s
    } else if let Some(s) = get(labels, COMPOSE_SERVICE)? {
        s
    } else if let Some(s) = get(labels, SEG_SERVICE)? {
        s
    } else {
        return Err(LabelError::Missing);
    };
    Ok(Identity { project, service })
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
