//! Network policies: which services may talk to which, per compose project.
//!
//! A policy is a YAML file (`version: 1`) or the `x-seg:` key of a compose
//! file. Reading one checks everything that can be checked without Docker —
//! syntax, unknown or duplicate keys, versions, ports, CIDRs, references to
//! services and networks — and every error names the file, line and column.
//! Nothing is applied from a policy that does not read cleanly.
//! The format is described in `docs/policy.md`.

mod dupcheck;
mod error;
pub mod grants;
pub mod graph;
mod model;
pub mod net;
mod secrets;
mod values;

pub use error::PolicyError;
pub use model::{
    Egress, Ingress, IngressRule, Name, NetRef, NetworkDecl, Peer, Peers, Policy, Ports, ServiceKey,
    ServiceRef, ServiceSpec, Version,
};
pub use model::{FileMode, SecretDecl, Secrets, DEFAULT_MODE};
pub use net::{Cidr, CidrError, Family, PortRange, PortRangeError, Proto, ProtoError};

use dupcheck::NoDuplicates;
use model::{ParseContext, CONTEXT};
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Reads and checks a policy file or a compose file with an `x-seg:` key.
/// This is `segctl policy lint -f FILE`.
pub fn lint(path: &Path) -> Result<Policy, PolicyError> {
    load(path)
}

/// Reads a policy file, or the `x-seg:` key of a compose file.
pub fn load(path: &Path) -> Result<Policy, PolicyError> {
    let file = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|cause| PolicyError::Read { file: file.clone(), cause })?;
    parse_source(&text, &file, dir_project(path).as_deref())
}

/// The directory name of a file, the project `x-seg:` defaults to last.
pub fn dir_project(path: &Path) -> Option<String> {
    let full = path.canonicalize().ok()?;
    full.parent().and_then(|d| d.file_name()).map(|n| n.to_string_lossy().into_owned())
}

/// Parses the text of a policy file or of a compose file with `x-seg:`
/// (what [`load`] does once the file is read; the controller gets the text
/// from `segctl policy apply`). `file` names it in messages; `dir_project`
/// is the compose file's directory name.
pub fn parse_source(text: &str, file: &str, dir_project: Option<&str>) -> Result<Policy, PolicyError> {
    if has_x_seg(text) {
        return parse_compose(text, file, dir_project);
    }
    let name = Path::new(file).file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    if name.contains("compose") {
        let message = "a compose file without an `x-seg:` key holds no policy".to_string();
        return Err(PolicyError::File { file: file.to_string(), message });
    }
    parse_policy(text, file)
}

/// Parses the text of a policy file; `file` is only used in messages.
pub fn parse_policy(text: &str, file: &str) -> Result<Policy, PolicyError> {
    let yaml_err = |e: serde_norway::Error| PolicyError::from_yaml(file, &e);
    serde_norway::from_str::<NoDuplicates>(text).map_err(yaml_err)?;
    let names: Names = serde_norway::from_str(text).map_err(yaml_err)?;
    let ctx = ParseContext {
        policy_services: names.services.into_keys().collect(),
        policy_networks: names.networks.into_keys().collect(),
        compose_services: None,
    };
    let mut policy: Policy = with_context(ctx, || serde_norway::from_str(text)).map_err(yaml_err)?;
    policy.origin = file.to_string();
    Ok(policy)
}

/// Parses the `x-seg:` key of a compose file. The project is, in order:
/// `x-seg.project`, the compose `name:`, then `dir_project` (the directory
/// name, normalized the way compose does).
pub fn parse_compose(text: &str, file: &str, dir_project: Option<&str>) -> Result<Policy, PolicyError> {
    let yaml_err = |e: serde_norway::Error| PolicyError::from_yaml(file, &e);
    serde_norway::from_str::<ComposeDup>(text).map_err(yaml_err)?;
    let compose: ComposeNames = serde_norway::from_str(text).map_err(yaml_err)?;
    let Some(names) = compose.x_seg else {
        let message = "a compose file without an `x-seg:` key holds no policy".to_string();
        return Err(PolicyError::File { file: file.to_string(), message });
    };
    let ctx = ParseContext {
        policy_services: names.services.into_keys().collect(),
        policy_networks: names.networks.into_keys().collect(),
        compose_services: Some(compose.services.into_keys().collect()),
    };
    let parsed: ComposePolicy = with_context(ctx, || serde_norway::from_str(text)).map_err(yaml_err)?;
    let mut policy = parsed.x_seg;
    if policy.project.is_none() {
        let fallback = compose.name.or_else(|| dir_project.map(normalize_project));
        policy.project = fallback.filter(|p| !p.is_empty()).map(Name);
    }
    policy.origin = format!("{file}#x-seg");
    Ok(policy)
}

/// An error for a `Deserialize` impl outside this module (the compose
/// generator's): `message` may say where the YAML path goes with
/// [`PATH_SLOT`]; [`PolicyError::from_yaml`] then reads it with its line
/// and column.
pub fn located<E: serde::de::Error>(message: String) -> E {
    model::own(message)
}

pub use model::PATH_SLOT;

/// Compose's project name rule: lowercase, only `[a-z0-9_-]`.
pub fn normalize_project(dir: &str) -> String {
    dir.to_lowercase().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect()
}

fn has_x_seg(text: &str) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "x-seg")]
        x_seg: Option<IgnoredAny>,
    }
    serde_norway::from_str::<Probe>(text).ok().is_some_and(|p| p.x_seg.is_some())
}

/// Runs one parse with `ctx` visible to the model's `Deserialize` impls.
fn with_context<T>(ctx: ParseContext, parse: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            CONTEXT.with(|c| *c.borrow_mut() = None);
        }
    }
    CONTEXT.with(|c| *c.borrow_mut() = Some(ctx));
    let _reset = Reset;
    parse()
}

/// The first, lenient pass: only the names the strict pass checks against.
#[derive(Deserialize)]
struct Names {
    #[serde(default)]
    services: BTreeMap<String, IgnoredAny>,
    #[serde(default)]
    networks: BTreeMap<String, IgnoredAny>,
}

#[derive(Deserialize)]
struct ComposeNames {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    services: BTreeMap<String, IgnoredAny>,
    #[serde(rename = "x-seg")]
    x_seg: Option<Names>,
}

#[derive(Deserialize)]
struct ComposeDup {
    #[serde(rename = "x-seg")]
    _x_seg: Option<NoDuplicates>,
}

#[derive(Deserialize)]
struct ComposePolicy {
    #[serde(rename = "x-seg")]
    x_seg: Policy,
}

#[cfg(test)]
mod tests;
