//! One applied policy as stored, and the ICC setting's record: the same
//! on disk (`store.rs`) and in etcd (`store_cluster.rs`).

use super::api::{DeclaredGrant, PolicySource};
use crate::policy::{self, Policy, PolicyError};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

/// The name of the policy for standalone containers (no project): it
/// cannot be a project name, which must start with a letter or digit.
pub const STANDALONE: &str = "_standalone";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} {path}: {cause}")]
    Io { action: &'static str, path: PathBuf, cause: io::Error },
    #[error("{path} is damaged ({reason}); move it away and re-apply that policy")]
    Damaged { path: PathBuf, reason: String },
    #[error("stored policy {path} no longer reads cleanly: {cause}; move it away and re-apply it")]
    Invalid { path: PathBuf, cause: PolicyError },
}

/// One applied policy as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    pub source: PolicySource,
    /// Unix seconds.
    pub applied_at: u64,
    /// The grants this policy's `x-seg.secrets` made (and so may revoke).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<DeclaredGrant>,
}

impl Record {
    pub fn parse(&self) -> Result<Policy, PolicyError> {
        let s = &self.source;
        policy::parse_source(&s.text, &s.file, s.dir_project.as_deref())
    }
}

/// The name a policy is stored and addressed under.
pub fn name_of(policy: &Policy) -> String {
    policy.project().unwrap_or(STANDALONE).to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct IccFile {
    pub(super) docker0_icc: bool,
}

/// A stored record and its policy; `path` names it in errors.
pub(super) fn parse_record(path: &Path, bytes: &[u8]) -> Result<(Record, Policy), StoreError> {
    let record: Record = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Damaged { path: path.to_owned(), reason: e.to_string() })?;
    let policy = record.parse().map_err(|cause| StoreError::Invalid { path: path.to_owned(), cause })?;
    if name_of(&policy) != record.name {
        let reason = format!("it names policy `{}` but holds `{}`", record.name, name_of(&policy));
        return Err(StoreError::Damaged { path: path.to_owned(), reason });
    }
    Ok((record, policy))
}
