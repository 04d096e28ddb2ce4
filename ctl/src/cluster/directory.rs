//! The cluster's records in etcd, under `<prefix>/cluster/`:
//!
//! | key | value |
//! |---|---|
//! | `meta` | [`ClusterMeta`]: the CA certificate and its fingerprint, where the CA node listens, certificate lifetime |
//! | `tokens/<sha256 of the secret>` | [`TokenRecord`]: expiry (deleted when used) |
//! | `members/<name>` | [`Member`]: a node, its address and the serials of its certificates |
//! | `admins/<name>` | [`Member`]: an admin certificate's holder |
//!
//! A certificate is honoured only while a member record lists its serial:
//! removing the record revokes it (an allow list, so a record lost or
//! never written refuses rather than admits).

use super::ca::{Issued, Role};
use super::token::{JoinToken, TokenError};
use super::ClusterError;
use crate::store::ClusterKv;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    pub format: u32,
    pub ca_cert: String,
    pub ca_fingerprint: String,
    /// `https://HOST:PORT` of the node that holds the CA key (joins and
    /// renewals go there).
    pub ca_url: String,
    pub cert_ttl_ms: u64,
    pub created_at_ms: u64,
    pub created_on: String,
    /// The KEK's id (a fingerprint, not key material): a node that joins
    /// checks that the KEK it got is this cluster's.
    pub kek_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub expires_at_ms: u64,
    pub created_at_ms: u64,
    pub created_on: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub role: Role,
    /// Where the node's endpoint listens (`HOST:PORT`); empty for an admin.
    pub address: String,
    /// Serials honoured: the current certificate first, then the one it
    /// replaced (kept until it expires, so a renewal never cuts a
    /// connection made just before it).
    pub certs: Vec<Issued>,
    pub joined_at_ms: u64,
    pub version: String,
}

impl Member {
    pub fn not_after_ms(&self) -> u64 {
        self.certs.first().map_or(0, |c| c.not_after_ms)
    }

    pub fn honours(&self, serial: &str) -> bool {
        self.certs.iter().any(|c| c.serial == serial)
    }

    /// `issued` becomes current; expired ones are dropped, at most two kept.
    pub fn renewed(mut self, issued: Issued, now_ms: u64) -> Member {
        self.certs.retain(|c| c.not_after_ms > now_ms);
        self.certs.insert(0, issued);
        self.certs.truncate(2);
        for c in &mut self.certs {
            c.pem.clear();
        }
        self
    }
}

fn member_key(role: Role, name: &str) -> String {
    match role {
        Role::Node => format!("members/{name}"),
        Role::Admin => format!("admins/{name}"),
    }
}

/// The records, over the narrow etcd seam.
pub struct Directory<'a> {
    pub kv: &'a dyn ClusterKv,
}

impl Directory<'_> {
    pub fn meta(&self) -> Result<Option<ClusterMeta>, ClusterError> {
        self.read("meta")
    }

    /// Writes the cluster's metadata unless a cluster exists under this prefix.
    pub fn create(&self, meta: &ClusterMeta) -> Result<(), ClusterError> {
        if self.kv.create("meta", encode(meta))? {
            return Ok(());
        }
        let existing = self.meta()?;
        Err(ClusterError::Exists {
            created_on: existing.as_ref().map_or_else(|| "?".into(), |m| m.created_on.clone()),
        })
    }

    pub fn add_token(&self, token: &JoinToken, record: &TokenRecord) -> Result<(), ClusterError> {
        self.kv.put(&format!("tokens/{}", token.id()), encode(record))?;
        Ok(())
    }

    /// Uses `token` up: it is deleted whether it is still valid or expired.
    pub fn redeem(&self, token: &JoinToken, now_ms: u64) -> Result<(), ClusterError> {
        let raw = self.kv.take(&format!("tokens/{}", token.id()))?.ok_or(TokenError::Unknown)?;
        let record: TokenRecord = decode("tokens/…", &raw)?;
        if record.expires_at_ms <= now_ms {
            return Err(TokenError::Expired { ago_s: (now_ms - record.expires_at_ms) / 1000 }.into());
        }
        Ok(())
    }

    pub fn member(&self, role: Role, name: &str) -> Result<Option<Member>, ClusterError> {
        self.read(&member_key(role, name))
    }

    pub fn put_member(&self, member: &Member) -> Result<(), ClusterError> {
        let mut stored = member.clone();
        stored.certs.iter_mut().for_each(|c| c.pem.clear());
        self.kv.put(&member_key(member.role, &member.name), encode(&stored))?;
        Ok(())
    }

    /// Writes `member` only if no member of that name exists.
    pub fn add_member(&self, member: &Member) -> Result<bool, ClusterError> {
        let mut stored = member.clone();
        stored.certs.iter_mut().for_each(|c| c.pem.clear());
        Ok(self.kv.create(&member_key(member.role, &member.name), encode(&stored))?)
    }

    /// Removes a member: its certificates are refused from then on.
    pub fn remove(&self, role: Role, name: &str) -> Result<Option<Member>, ClusterError> {
        let key = member_key(role, name);
        self.kv.take(&key)?.map(|raw| decode(&key, &raw)).transpose()
    }

    /// Every node and admin.
    pub fn members(&self) -> Result<Vec<Member>, ClusterError> {
        let mut out = Vec::new();
        for prefix in ["members/", "admins/"] {
            for (key, raw) in self.kv.list(prefix)? {
                out.push(decode(&key, &raw)?);
            }
        }
        Ok(out)
    }

    fn read<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ClusterError> {
        self.kv.get(key)?.map(|raw| decode(key, &raw)).transpose()
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

fn decode<T: DeserializeOwned>(key: &str, raw: &[u8]) -> Result<T, ClusterError> {
    serde_json::from_slice(raw)
        .map_err(|e| ClusterError::Corrupt { key: format!("cluster/{key}"), cause: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory_kv::MemoryKv;

    const FP: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn issued(serial: &str, not_after_ms: u64) -> Issued {
        Issued { pem: "PEM".into(), serial: serial.into(), not_after_ms }
    }

    #[test]
    fn a_token_works_once_and_not_after_it_expires() {
        let kv = MemoryKv::default();
        let dir = Directory { kv: &kv };
        let record = |expires_at_ms| TokenRecord { expires_at_ms, created_at_ms: 0, created_on: "a".into() };
        let token = JoinToken::generate(FP);
        dir.add_token(&token, &record(1_000)).unwrap();
        dir.redeem(&token, 500).unwrap();
        let again = dir.redeem(&token, 500).unwrap_err().to_string();
        assert!(again.contains("used already"), "{again}");
        let late = JoinToken::generate(FP);
        dir.add_token(&late, &record(1_000)).unwrap();
        let expired = dir.redeem(&late, 4_000).unwrap_err().to_string();
        assert!(expired.contains("expired 3 s ago"), "{expired}");
        assert!(kv.list("tokens/").unwrap().is_empty(), "an expired token is deleted too");
    }

    #[test]
    fn members_are_kept_without_certificates_and_renewals_keep_the_previous_serial() {
        let kv = MemoryKv::default();
        let dir = Directory { kv: &kv };
        let member = Member {
            name: "n1".into(),
            role: Role::Node,
            address: "10.0.0.1:7443".into(),
            certs: vec![issued("aa", 10_000)],
            joined_at_ms: 1,
            version: "0.1.0".into(),
        };
        assert!(dir.add_member(&member).unwrap());
        assert!(!dir.add_member(&member).unwrap(), "a name is taken once");
        let stored = dir.member(Role::Node, "n1").unwrap().unwrap();
        assert_eq!(stored.certs[0].pem, "", "no certificate text in etcd, serials only");
        let renewed = stored.renewed(issued("bb", 20_000), 5_000).renewed(issued("cc", 30_000), 12_000);
        let serials: Vec<&str> = renewed.certs.iter().map(|c| c.serial.as_str()).collect();
        assert_eq!(serials, ["cc", "bb"]);
        dir.put_member(&renewed).unwrap();
        assert!(dir.members().unwrap()[0].honours("bb"));
        assert!(dir.remove(Role::Node, "n1").unwrap().is_some());
        assert!(dir.members().unwrap().is_empty() && dir.remove(Role::Node, "n1").unwrap().is_none());
    }

    #[test]
    fn a_second_cluster_under_one_prefix_is_refused() {
        let kv = MemoryKv::default();
        let dir = Directory { kv: &kv };
        let meta = ClusterMeta {
            format: 1,
            ca_cert: "PEM".into(),
            ca_fingerprint: FP.into(),
            ca_url: "https://a:7443".into(),
            cert_ttl_ms: 1,
            created_at_ms: 1,
            created_on: "a".into(),
            kek_id: "k".into(),
        };
        dir.create(&meta).unwrap();
        let err = dir.create(&meta).unwrap_err().to_string();
        assert!(err.contains("already") && err.contains("created on a"), "{err}");
        kv.put("members/bad", b"{".to_vec()).unwrap();
        let corrupt = dir.members().unwrap_err().to_string();
        assert!(corrupt.contains("cluster/members/bad"), "{corrupt}");
    }
}
