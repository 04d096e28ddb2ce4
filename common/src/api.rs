//! The wire contract of the two controller sockets (HTTP/1.1 over unix
//! sockets). JSON everywhere except secret values, which travel as raw
//! `application/octet-stream` bodies so that the receiver can read them
//! straight into a [`crate::secret::SecretBytes`] of known length, with no
//! base64 or JSON string copies left behind.
//!
//! Agent socket (containers only, identity by attestation):
//! - `GET /v1/whoami` → [`WhoAmI`]
//! - `GET /v1/secrets` → [`SecretList`] (what the caller may read)
//! - `GET /v1/secrets/{name}` → value; headers [`HDR_VERSION`], [`HDR_LEASE_MS`]
//!
//! Admin socket (root only):
//! - `GET /v1/status` → [`StatusReport`]
//! - `GET /v1/secrets` → `Vec<`[`SecretInfo`]`>`
//! - `PUT /v1/secrets/{name}[?ttl_ms=N]` body = value → [`PutResult`]
//! - `GET /v1/secrets/{name}` → value; header [`HDR_VERSION`]
//! - `DELETE /v1/secrets/{name}`
//! - `PUT /v1/secrets/{name}/ttl` [`TtlRequest`]
//! - `POST /v1/secrets/{name}/grants` / `DELETE …/grants` [`GrantTarget`]
//!
//! Networks (`segctl net`): see [`network`]; policies and ICC: see [`policy`].
//!
//! Rotation (push stream, acknowledgements, hooks, consumer status): see
//! [`rotation`].
//!
//! Every error is a non-2xx status with an [`ApiError`] body.

pub mod hook_exec;
pub mod network;
pub mod policy;
pub mod rotation;
pub use hook_exec::*;
pub use rotation::*;

use crate::name::SecretName;
use serde::{Deserialize, Serialize};
use std::fmt;

pub const HDR_VERSION: &str = "seg-secret-version";
pub const HDR_LEASE_MS: &str = "seg-lease-ttl-ms";

/// Default lease of a secret: 5 minutes.
pub const DEFAULT_TTL_MS: u64 = 5 * 60 * 1000;
/// Shortest lease accepted: 1 second.
pub const MIN_TTL_MS: u64 = 1000;
/// Longest lease accepted: 24 hours.
pub const MAX_TTL_MS: u64 = 24 * 3600 * 1000;

/// Who a container is, for grants: a compose project (absent for plain
/// `docker run` containers) and a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identity {
    pub project: Option<String>,
    pub service: String,
}

impl Identity {
    pub fn new(project: Option<&str>, service: &str) -> Identity {
        Identity { project: project.map(str::to_owned), service: service.to_owned() }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.project {
            Some(p) => write!(f, "{p}/{}", self.service),
            None => f.write_str(&self.service),
        }
    }
}

/// Whom a grant names: `PROJECT/SERVICE`, `*/SERVICE` (that service in any
/// project) or `SERVICE` (a standalone container labelled `seg.service`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GrantTarget {
    pub project: ProjectMatch,
    pub service: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectMatch {
    /// Only containers outside any compose project.
    None,
    /// Any project.
    Any,
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: use 1-128 of a-z A-Z 0-9 '_' '.' '-', starting with a letter or digit")]
pub struct BadLabel {
    pub what: &'static str,
    pub value: String,
}

/// Compose project and service names, as seg accepts them in grants.
pub fn validate_label(what: &'static str, value: &str) -> Result<(), BadLabel> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(BadLabel { what, value: value.chars().take(64).collect() })
    }
}

impl GrantTarget {
    pub fn parse(raw: &str) -> Result<GrantTarget, BadLabel> {
        let (project, service) = match raw.split_once('/') {
            Some(("*", s)) => (ProjectMatch::Any, s),
            Some((p, s)) => {
                validate_label("project", p)?;
                (ProjectMatch::Exact(p.to_owned()), s)
            }
            None => (ProjectMatch::None, raw),
        };
        validate_label("service", service)?;
        Ok(GrantTarget { project, service: service.to_owned() })
    }

    pub fn matches(&self, who: &Identity) -> bool {
        let project_ok = match (&self.project, &who.project) {
            (ProjectMatch::Any, _) => true,
            (ProjectMatch::None, None) => true,
            (ProjectMatch::Exact(want), Some(have)) => want == have,
            _ => false,
        };
        project_ok && self.service == who.service
    }
}

impl fmt::Display for GrantTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.project {
            ProjectMatch::None => f.write_str(&self.service),
            ProjectMatch::Any => write!(f, "*/{}", self.service),
            ProjectMatch::Exact(p) => write!(f, "{p}/{}", self.service),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhoAmI {
    pub identity: Identity,
    pub container_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantedSecret {
    pub name: SecretName,
    pub version: u64,
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretList {
    pub secrets: Vec<GrantedSecret>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretInfo {
    pub name: SecretName,
    pub version: u64,
    pub ttl_ms: u64,
    pub grants: Vec<String>,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    pub updated_at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutResult {
    pub name: SecretName,
    pub version: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TtlRequest {
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    pub store: String,
    pub state_dir: String,
    pub admin_socket: String,
    pub agent_socket: String,
    pub access_log: String,
    pub secrets: usize,
    /// "ok (API x.y)" or what went wrong talking to Docker.
    pub docker: String,
    /// Watch streams open on the agent socket.
    #[serde(default)]
    pub watches: usize,
    /// How the agent socket's guard is doing (absent from older controllers).
    #[serde(default)]
    pub agent_socket_status: Option<AgentSocketStatus>,
    /// seg's firewall backend and Docker's (absent from older controllers).
    #[serde(default)]
    pub firewall: Option<FirewallStatus>,
    /// This node's cluster membership; `None` on one host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
}

/// A cluster node's name, endpoint and certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node: String,
    /// `HOST:PORT` of its cluster endpoint.
    pub endpoint: String,
    /// SHA-256 of the cluster CA's certificate.
    pub ca_fingerprint: String,
    /// When this node's certificate expires (renewed at two thirds of its life).
    pub cert_expires_at_ms: u64,
    /// Whether this node holds the CA key (joins and renewals come here).
    pub holds_ca: bool,
}

/// Which firewall backend seg writes with, and which one Docker uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallStatus {
    /// `iptables` or `nftables`.
    pub backend: String,
    /// Docker's own, detected in the kernel; `None`: not detected.
    pub docker_backend: Option<String>,
}

/// The agent socket's guard: is the socket the one the controller bound, and
/// is its directory read-only for containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSocketStatus {
    /// `ok`, or `repaired N time(s)`.
    pub state: String,
    /// Times the socket or its read-only mount was found broken and repaired.
    pub repairs: u64,
    /// The agent directory is a read-only mount (containers cannot change it).
    pub read_only_dir: bool,
    /// What the last repair fixed.
    #[serde(default)]
    pub last_problem: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable machine-readable code, e.g. `not_granted`, `bad_name`.
    pub code: String,
    /// What went wrong and what to do; never contains a secret value.
    pub error: String,
}

/// The short form of a container id (12 hex digits, as `docker ps` shows).
pub fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// The answer to remove, TTL, grant and revoke: whether anything changed
/// (a second grant of the same target, or revoking a missing one, do not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeResult {
    pub name: SecretName,
    pub changed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(p: Option<&str>, s: &str) -> Identity {
        Identity { project: p.map(str::to_owned), service: s.into() }
    }

    #[test]
    fn grant_targets_parse_and_match() {
        let exact = GrantTarget::parse("shop/app").unwrap();
        assert!(exact.matches(&id(Some("shop"), "app")));
        assert!(!exact.matches(&id(Some("other"), "app")));
        assert!(!exact.matches(&id(None, "app")));
        let any = GrantTarget::parse("*/app").unwrap();
        assert!(any.matches(&id(Some("x"), "app")) && any.matches(&id(None, "app")));
        let bare = GrantTarget::parse("app").unwrap();
        assert!(bare.matches(&id(None, "app")) && !bare.matches(&id(Some("x"), "app")));
        assert_eq!(any.to_string(), "*/app");
    }

    #[test]
    fn grant_targets_refuse_junk() {
        for bad in ["", "/", "a/", "/b", "a/b/c", "a b", "../x", "-a"] {
            assert!(GrantTarget::parse(bad).is_err(), "{bad:?}");
        }
    }
}
