//! The on-disk form of one secret, `secrets/<name>.json`:
//!
//! ```json
//! {"format": 1, "name": "db", "version": 3, "ttl_ms": 300000,
//!  "grants": ["shop/app", "*/worker"], "created_at": 1700000000, "updated_at": 1700000100,
//!  "key_id": "0f3c…", "versions": [
//!    {"version": 3, "sealed": "<base64 nonce||ciphertext||tag>", "created_at": 1700000100},
//!    {"version": 2, "sealed": "…", "created_at": 1700000050}]}
//! ```
//!
//! `versions` is newest first and holds the current and the previous
//! version. An optional `hooks` object holds the pre- and post-rotate
//! commands (`{"pre_rotate": {"command": "…", "timeout_ms": 30000}}`); files
//! without it read as "no hooks", and it is left out when there are none,
//! so format 1 stays readable both ways. `key_id` is the fingerprint of the master key that sealed them.
//! Nothing in the file is secret.

use super::{SecretMeta, KEPT_VERSIONS};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use seg_common::api::{BadLabel, GrantTarget, Hooks};
use seg_common::name::SecretName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

const FORMAT: u32 = 1;

/// Why a secret file does not decode; the reason of `StoreError::Corrupt`.
/// Each variant quotes its cause (none is a `source`).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("it is not a valid secret file: {0}")]
    NotJson(serde_json::Error),
    #[error("it has format {found}, this segctl reads format {FORMAT}")]
    Format { found: u32 },
    #[error("it holds secret {holds} but is named after {file_name}")]
    Misnamed { holds: SecretName, file_name: SecretName },
    #[error(
        "it was sealed under master key id {found} but master.key has id {expected}: the master key does not \
         match; restore the master.key these secrets were sealed with"
    )]
    KeyMismatch { found: String, expected: String },
    #[error("{0}")]
    Meta(super::StoreError),
    #[error("it lists {0} versions; 1 to {KEPT_VERSIONS} are expected")]
    VersionCount(usize),
    #[error("its current version {0} is not the first one listed")]
    CurrentNotFirst(u64),
    #[error("version {0} is listed out of order")]
    OutOfOrder(u64),
    #[error("version {version} is not valid base64: {cause}")]
    Base64 { version: u64, cause: base64::DecodeError },
    #[error("version {0} is too short to be a sealed value")]
    TooShort(u64),
    #[error("grant {grant:?}: {cause}")]
    Grant { grant: String, cause: BadLabel },
}
/// Two 512 KiB versions in base64 plus metadata fit easily.
pub(super) const MAX_FILE_LEN: u64 = 4 << 20;

/// One secret as the embedded store keeps it in memory: metadata plus the
/// sealed blobs, never plaintext.
#[derive(Clone, Debug)]
pub(super) struct Record {
    pub meta: SecretMeta,
    /// Newest first; `versions[0].version == meta.version`.
    pub versions: Vec<SealedVersion>,
}

#[derive(Clone, Debug)]
pub(super) struct SealedVersion {
    pub version: u64,
    pub blob: Vec<u8>,
    pub created_at: u64,
}

#[derive(Serialize, Deserialize)]
struct FileV1 {
    format: u32,
    name: SecretName,
    version: u64,
    ttl_ms: u64,
    grants: Vec<String>,
    created_at: u64,
    updated_at: u64,
    key_id: String,
    versions: Vec<VersionV1>,
    #[serde(default, skip_serializing_if = "Hooks::is_empty")]
    hooks: Hooks,
}

#[derive(Serialize, Deserialize)]
struct VersionV1 {
    version: u64,
    sealed: String,
    created_at: u64,
}

impl Record {
    /// A secret with no version yet; it becomes valid with its first
    /// [`Record::push_version`].
    pub fn new(name: &SecretName, ttl_ms: u64, now: u64) -> Record {
        let meta = SecretMeta {
            name: name.clone(),
            version: 0,
            ttl_ms,
            grants: BTreeSet::new(),
            hooks: Hooks::default(),
            created_at: now,
            updated_at: now,
        };
        Record { meta, versions: Vec::new() }
    }

    /// Makes `v` current and drops versions beyond [`KEPT_VERSIONS`].
    pub fn push_version(&mut self, v: SealedVersion) {
        self.meta.version = v.version;
        self.meta.updated_at = v.created_at;
        self.versions.insert(0, v);
        self.versions.truncate(KEPT_VERSIONS);
    }

    pub fn find(&self, version: u64) -> Option<&SealedVersion> {
        self.versions.iter().find(|v| v.version == version)
    }

    pub fn encode(&self, key_id: &str) -> Vec<u8> {
        let file = FileV1 {
            format: FORMAT,
            name: self.meta.name.clone(),
            version: self.meta.version,
            ttl_ms: self.meta.ttl_ms,
            grants: self.meta.grants.iter().map(ToString::to_string).collect(),
            created_at: self.meta.created_at,
            updated_at: self.meta.updated_at,
            key_id: key_id.to_owned(),
            versions: self
                .versions
                .iter()
                .map(|v| VersionV1 {
                    version: v.version,
                    sealed: B64.encode(&v.blob),
                    created_at: v.created_at,
                })
                .collect(),
            hooks: self.meta.hooks.clone(),
        };
        serde_json::to_vec_pretty(&file).expect("plain data always serializes")
    }

    /// Parses and checks a file read from `secrets/<file_name>.json`.
    /// The error is the reason, for `StoreError::Corrupt`.
    pub fn decode(bytes: &[u8], file_name: &SecretName, key_id: &str) -> Result<Record, RecordError> {
        let file: FileV1 = serde_json::from_slice(bytes).map_err(RecordError::NotJson)?;
        if file.format != FORMAT {
            return Err(RecordError::Format { found: file.format });
        }
        if &file.name != file_name {
            return Err(RecordError::Misnamed { holds: file.name, file_name: file_name.clone() });
        }
        if file.key_id != key_id {
            return Err(RecordError::KeyMismatch { found: file.key_id, expected: key_id.to_owned() });
        }
        super::check_ttl(file.ttl_ms).map_err(RecordError::Meta)?;
        super::check_hooks(&file.hooks).map_err(RecordError::Meta)?;
        let versions = decode_versions(&file)?;
        let grants = file
            .grants
            .iter()
            .map(|g| GrantTarget::parse(g).map_err(|cause| RecordError::Grant { grant: g.clone(), cause }))
            .collect::<Result<BTreeSet<_>, _>>()?;
        let meta = SecretMeta {
            name: file.name,
            version: file.version,
            ttl_ms: file.ttl_ms,
            grants,
            hooks: file.hooks,
            created_at: file.created_at,
            updated_at: file.updated_at,
        };
        Ok(Record { meta, versions })
    }
}

/// Versions must be strictly decreasing, start with the current one, and
/// number at most [`KEPT_VERSIONS`].
fn decode_versions(file: &FileV1) -> Result<Vec<SealedVersion>, RecordError> {
    if file.versions.is_empty() || file.versions.len() > KEPT_VERSIONS {
        return Err(RecordError::VersionCount(file.versions.len()));
    }
    if file.versions[0].version != file.version || file.version == 0 {
        return Err(RecordError::CurrentNotFirst(file.version));
    }
    let mut out: Vec<SealedVersion> = Vec::with_capacity(file.versions.len());
    for v in &file.versions {
        if out.last().is_some_and(|prev| prev.version <= v.version) {
            return Err(RecordError::OutOfOrder(v.version));
        }
        let blob =
            B64.decode(&v.sealed).map_err(|cause| RecordError::Base64 { version: v.version, cause })?;
        if blob.len() < super::seal::SEAL_OVERHEAD {
            return Err(RecordError::TooShort(v.version));
        }
        out.push(SealedVersion { version: v.version, blob, created_at: v.created_at });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        let name = SecretName::parse("db").unwrap();
        let mut r = Record::new(&name, 60_000, 10);
        for v in 1..=3 {
            r.push_version(SealedVersion { version: v, blob: vec![v as u8; 40], created_at: 10 + v });
        }
        r.meta.grants.insert(GrantTarget::parse("*/app").unwrap());
        r
    }

    #[test]
    fn encode_decode_roundtrip_keeps_two_versions() {
        let r = sample();
        assert_eq!(r.versions.iter().map(|v| v.version).collect::<Vec<_>>(), [3, 2]);
        let back = Record::decode(&r.encode("k1"), &r.meta.name, "k1").unwrap();
        assert_eq!(back.meta, r.meta);
        assert_eq!(back.find(2).unwrap().blob, vec![2u8; 40]);
        assert!(back.find(1).is_none());
    }

    #[test]
    fn decode_names_what_is_wrong() {
        let r = sample();
        let json = r.encode("k1");
        let other = SecretName::parse("other").unwrap();
        assert!(Record::decode(&json, &other, "k1").unwrap_err().to_string().contains("named after"));
        assert!(Record::decode(&json, &r.meta.name, "k2")
            .unwrap_err()
            .to_string()
            .contains("does not match"));
        assert!(Record::decode(&json[..json.len() / 2], &r.meta.name, "k1")
            .unwrap_err()
            .to_string()
            .contains("not a valid"));
        let text = String::from_utf8(json).unwrap().replace("\"*/app\"", "\"a/b/c\"");
        assert!(Record::decode(text.as_bytes(), &r.meta.name, "k1")
            .unwrap_err()
            .to_string()
            .contains("grant"));
    }
}
