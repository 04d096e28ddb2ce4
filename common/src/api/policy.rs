//! The admin API of network segregation, as JSON types shared by the
//! controller and `segctl policy|icc`.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /v1/policies` | [`PolicySummary`] list |
//! | `POST /v1/policies` | apply a [`PolicySource`] → [`ApplyResult`] |
//! | `POST /v1/policies/diff` | the rule changes a [`PolicySource`] would make → [`DiffResult`] |
//! | `GET /v1/policies/check?from=A&to=B&port=5432/tcp` | → [`CheckResult`] |
//! | `GET /v1/policies/verify[?name=NAME]` | probe real flows → [`VerifyReport`] |
//! | `GET /v1/policies/NAME` | → [`PolicyDetail`] |
//! | `DELETE /v1/policies/NAME` | → [`RemoveResult`] (and the grants the policy made revoked) |
//! | `GET /v1/icc[?daemon_json=PATH]` | → [`IccStatus`] |
//! | `PUT /v1/icc` | [`IccRequest`] → [`IccStatus`] |

use crate::api::GrantTarget;
use crate::name::SecretName;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A policy as `segctl` read it: the file's text, parsed by the controller
/// (so both agree on every error's line and column).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySource {
    /// The file as the user named it (used in messages only).
    pub file: String,
    pub text: String,
    /// The file's directory name: the project of an `x-seg:` without one.
    #[serde(default)]
    pub dir_project: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySummary {
    /// The project, or `_standalone` for containers labelled `seg.service` only.
    pub name: String,
    pub origin: String,
    pub services: Vec<String>,
    pub networks: Vec<String>,
    /// Unix seconds.
    pub applied_at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyDetail {
    pub summary: PolicySummary,
    /// The policy normalized (every default spelled out).
    pub policy: serde_json::Value,
    /// The text it was applied from.
    pub source: String,
}

/// What one network-attachment or network-creation step did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkReport {
    pub created: Vec<String>,
    /// "connect shop_api_1 to shop_backend", …
    pub attachments: Vec<String>,
    /// Declared networks that exist with other settings, and other things
    /// the operator should know (nothing was refused for them).
    pub warnings: Vec<String>,
}

/// What a firewall update wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesReport {
    pub chains_written: usize,
    pub rules_written: usize,
    pub chains_removed: usize,
    /// Rules seg holds now (both families).
    pub rules_total: usize,
}

/// A grant a policy's `x-seg.secrets` declares: `db-password` to `shop/app`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeclaredGrant {
    pub secret: SecretName,
    pub to: GrantTarget,
}

impl fmt::Display for DeclaredGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} to {}", self.secret, self.to)
    }
}

/// The grants an apply, diff or remove makes and takes back. Only grants
/// a policy made itself are ever revoked: one made by hand stays.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantChanges {
    pub granted: Vec<DeclaredGrant>,
    pub revoked: Vec<DeclaredGrant>,
}

impl GrantChanges {
    pub fn is_empty(&self) -> bool {
        self.granted.is_empty() && self.revoked.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResult {
    pub name: String,
    /// `false`: the same policy was already applied and the rules were in place.
    pub changed: bool,
    pub networks: NetworkReport,
    pub rules: RulesReport,
    #[serde(default)]
    pub grants: GrantChanges,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveResult {
    pub name: String,
    pub rules: RulesReport,
    #[serde(default)]
    pub grants: GrantChanges,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffResult {
    pub name: String,
    /// `iptables-restore --noflush` input against the live rules; empty: no change.
    pub v4: String,
    pub v6: String,
    /// Why the diff may differ from what `apply` will do (networks to create, …).
    pub notes: Vec<String>,
    /// The grants `apply` would make and revoke.
    #[serde(default)]
    pub grants: GrantChanges,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub from: String,
    pub to: String,
    /// `5432/tcp`.
    pub port: String,
    pub allowed: bool,
    /// The deciding rule (`shop.yaml: services.db.ingress[0]`).
    pub rule: String,
}

/// One probe of `policy verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRow {
    pub from: String,
    pub from_container: String,
    pub to: String,
    pub to_container: String,
    /// `172.20.0.3:5432/tcp`.
    pub target: String,
    pub expected: Reach,
    /// Why that is expected (a rule, or "no shared network").
    pub because: String,
    pub observed: Reach,
    /// What the probe saw: `connected`, `refused (RST)`, `timeout`, …
    pub detail: String,
}

impl VerifyRow {
    pub fn ok(&self) -> bool {
        self.expected == self.observed
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reach {
    Reachable,
    Blocked,
    /// The probe itself failed (container gone, no namespace): a mismatch.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub rows: Vec<VerifyRow>,
    /// Flows that were not probed, and why.
    pub skipped: Vec<String>,
    pub timeout_ms: u64,
}

impl VerifyReport {
    pub fn mismatches(&self) -> usize {
        self.rows.iter().filter(|r| !r.ok()).count()
    }
}

/// Where dockerd reads its configuration, unless told otherwise.
pub const DEFAULT_DAEMON_JSON: &str = "/etc/docker/daemon.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IccRequest {
    /// `false`: containers on docker0 reach each other only where a policy allows.
    pub enabled: bool,
    /// Also write `"icc": <enabled>` into daemon.json (effective at dockerd's next start).
    #[serde(default)]
    pub persist: bool,
    /// daemon.json to edit with `persist` (default `/etc/docker/daemon.json`).
    #[serde(default)]
    pub daemon_json: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IccStatus {
    /// The controller's setting: `false` = the docker0 ICC rule is in its ruleset.
    pub enabled: bool,
    /// The controller's rules are in the kernel (a resync put them there).
    pub rule_live: bool,
    /// Docker's own setting on the `bridge` network (`enable_icc`), if known.
    pub docker_bridge_icc: Option<bool>,
    /// What `persist` did, when asked.
    #[serde(default)]
    pub daemon_json: Option<String>,
    /// What daemon.json says (dockerd's setting from its next start), read
    /// by the controller: `segctl` reads no host files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_json_file: Option<DaemonJsonIcc>,
}

/// The `"icc"` key of a daemon.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonJsonIcc {
    pub path: String,
    /// `None`: no `"icc"` key (dockerd's default: on), or unreadable.
    pub icc: Option<bool>,
    /// Why the file could not be read.
    pub error: Option<String>,
}
