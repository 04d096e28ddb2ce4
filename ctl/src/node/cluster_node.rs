//! This node as a member of a cluster: its files, the CA (on the node that
//! holds its key), the allow list of certificates, and the operations
//! behind the cluster routes — join, renew, token, admin-cert, ls, remove.
//! Every operation is blocking (etcd): call it on the blocking pool.

use crate::cluster::api::{
    AdminCertAnswer, AdminCertRequest, JoinAnswer, JoinRequest, NodeList, NodeRow, RenewAnswer,
};
use crate::cluster::ca::{millis, ClusterCa, PeerCert, Role, Subject};
use crate::cluster::directory::{ClusterMeta, Directory, Member, TokenRecord};
use crate::cluster::files::{self, ClusterConfig};
use crate::cluster::tls::NodeCert;
use crate::cluster::token::JoinToken;
use crate::cluster::ClusterError;
use crate::store::{ClusterKv, NodeRegistry};
use base64::Engine;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// Who is calling on the cluster endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No client certificate: may only join.
    Anonymous,
    Member {
        role: Role,
        name: String,
    },
    /// A certificate of this CA that no member record honours (removed, or
    /// replaced long ago).
    Revoked {
        name: String,
    },
}

pub struct ClusterNode {
    pub kv: Arc<dyn ClusterKv>,
    pub registry: Option<Arc<dyn NodeRegistry>>,
    pub state_dir: PathBuf,
    pub config: ClusterConfig,
    pub meta: ClusterMeta,
    /// Only on the node where `cluster init` ran.
    pub ca: Option<ClusterCa>,
    pub cert: Arc<NodeCert>,
    /// Serial → (role, name) of every honoured certificate.
    allowed: RwLock<HashMap<String, (Role, String)>>,
    /// When an unknown certificate last made the endpoint look again.
    looked_again: std::sync::Mutex<Option<std::time::Instant>>,
}

impl ClusterNode {
    /// Reads `<state>/cluster/` and the cluster's metadata; refuses a node
    /// that is no longer a member.
    pub fn open(
        state_dir: PathBuf,
        kv: Arc<dyn ClusterKv>,
        registry: Option<Arc<dyn NodeRegistry>>,
    ) -> Result<ClusterNode, ClusterError> {
        let config = files::load_config(&state_dir)?;
        let ca_cert = files::ca_cert(&state_dir)?;
        let cert = Arc::new(NodeCert::new(&files::node_pem(&state_dir)?, &ca_cert)?);
        let ca = match files::ca_key(&state_dir)? {
            Some(key) => Some(ClusterCa::load(&ca_cert, &key)?),
            None => None,
        };
        let meta = Directory { kv: kv.as_ref() }.meta()?.ok_or_else(|| ClusterError::Corrupt {
            key: "cluster/meta".into(),
            cause: "it is missing: the cluster's records are gone from etcd (another --prefix?)".into(),
        })?;
        let node = ClusterNode {
            kv,
            registry,
            state_dir,
            config,
            meta,
            ca,
            cert,
            allowed: RwLock::default(),
            looked_again: Default::default(),
        };
        node.refresh()?;
        if !node.is_member() {
            return Err(ClusterError::BadRequest(format!(
                "node {} was removed from the cluster (`segctl cluster remove`): it serves no secrets; \
                 to join again, move {} away and run `segctl cluster join` with a new token",
                node.config.node_name,
                files::dir(&node.state_dir).display()
            )));
        }
        Ok(node)
    }

    fn dir(&self) -> Directory<'_> {
        Directory { kv: self.kv.as_ref() }
    }

    /// Re-reads the allow list from etcd.
    pub fn refresh(&self) -> Result<(), ClusterError> {
        let mut allowed = HashMap::new();
        for m in self.dir().members()? {
            for c in &m.certs {
                allowed.insert(c.serial.clone(), (m.role, m.name.clone()));
            }
        }
        *self.allowed.write().unwrap_or_else(|p| p.into_inner()) = allowed;
        Ok(())
    }

    /// Whether an unknown certificate may make the endpoint re-read the
    /// allow list now: at most every 200 ms, so a client with a removed
    /// certificate cannot make this node hammer etcd.
    pub fn may_refresh_now(&self) -> bool {
        let mut last = self.looked_again.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|at| at.elapsed() >= Duration::from_millis(200));
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    }

    /// For `segctl status`.
    pub fn status(&self) -> seg_common::api::ClusterStatus {
        let cert = self.cert.current().cert.first().and_then(|c| PeerCert::parse(c).ok());
        seg_common::api::ClusterStatus {
            node: self.config.node_name.clone(),
            endpoint: self.config.advertise.clone(),
            ca_fingerprint: self.meta.ca_fingerprint.clone(),
            cert_expires_at_ms: cert.map_or(0, |c| c.not_after_ms),
            holds_ca: self.ca.is_some(),
        }
    }

    /// Whether this node's own certificate is still honoured.
    pub fn is_member(&self) -> bool {
        let Some(cert) = self.cert.current().cert.first().cloned() else { return false };
        PeerCert::parse(&cert).is_ok_and(|p| self.honours(&p))
    }

    fn honours(&self, peer: &PeerCert) -> bool {
        let allowed = self.allowed.read().unwrap_or_else(|p| p.into_inner());
        allowed.get(&peer.serial).is_some_and(|(role, name)| *role == peer.role && *name == peer.name)
    }

    /// Who the (CA-verified) certificate `der` is; `None`: no certificate.
    pub fn caller(&self, der: Option<&[u8]>) -> Caller {
        let Some(der) = der else { return Caller::Anonymous };
        match PeerCert::parse(der) {
            Ok(peer) if self.honours(&peer) => Caller::Member { role: peer.role, name: peer.name },
            Ok(peer) => Caller::Revoked { name: peer.name },
            Err(_) => Caller::Revoked { name: "(unreadable certificate)".into() },
        }
    }

    fn ca(&self) -> Result<&ClusterCa, ClusterError> {
        self.ca.as_ref().ok_or_else(|| {
            ClusterError::BadRequest(format!(
                "node {} does not hold the cluster CA's key; send this to the CA node, {}",
                self.config.node_name, self.meta.ca_url
            ))
        })
    }

    fn lifetime(&self) -> Duration {
        Duration::from_millis(self.meta.cert_ttl_ms)
    }

    /// A new node: the token is used up, its certificate signed, it becomes a member.
    pub fn join(&self, req: JoinRequest) -> Result<JoinAnswer, ClusterError> {
        let ca = self.ca()?;
        let token = JoinToken::parse(&req.token)?;
        token.check_cluster(ca.fingerprint())?;
        crate::cluster::check_name(&req.name)?;
        let host = crate::cluster::host_of(&req.advertise)?;
        if self.dir().member(Role::Node, &req.name)?.is_some() {
            return Err(ClusterError::BadRequest(format!(
                "a node named {} is in the cluster already: remove it first (`segctl cluster remove {}`) or \
                 join with another --node-name",
                req.name, req.name
            )));
        }
        let now = millis(SystemTime::now());
        self.dir().redeem(&token, now)?;
        let subject = Subject { role: Role::Node, name: req.name.clone(), hosts: vec![host] };
        let cert = ca.issue(&req.csr, &subject, self.lifetime())?;
        let member = Member {
            name: req.name.clone(),
            role: Role::Node,
            address: req.advertise.clone(),
            certs: vec![cert.clone()],
            joined_at_ms: now,
            version: env!("CARGO_PKG_VERSION").into(),
        };
        if !self.dir().add_member(&member)? {
            return Err(ClusterError::BadRequest(format!("a node named {} joined meanwhile", req.name)));
        }
        self.refresh()?;
        let kek = files::read_private(&files::kek_path(&self.state_dir))?;
        tracing::info!(node = %req.name, address = %req.advertise, serial = %cert.serial, "a node joined the cluster");
        Ok(JoinAnswer {
            cert,
            ca_cert: ca.cert_pem().to_owned(),
            kek_b64: base64::engine::general_purpose::STANDARD.encode(kek.expose()),
            etcd_endpoints: self.config.etcd_endpoints.clone(),
            etcd_prefix: self.config.etcd_prefix.clone(),
            etcd_ca: std::fs::read_to_string(files::etcd_ca_path(&self.state_dir)).map_err(|e| {
                ClusterError::Files {
                    action: "reading",
                    path: files::etcd_ca_path(&self.state_dir),
                    cause: e.to_string(),
                }
            })?,
            ca_url: self.meta.ca_url.clone(),
        })
    }

    /// A member's new certificate for a new key; the old one stays honoured until it expires.
    pub fn renew(&self, role: Role, name: &str, csr: &str) -> Result<RenewAnswer, ClusterError> {
        let ca = self.ca()?;
        let member = self.dir().member(role, name)?.ok_or_else(|| {
            ClusterError::BadRequest(format!("{name} is not a member of the cluster (removed?)"))
        })?;
        let hosts = match role {
            Role::Node => vec![crate::cluster::host_of(&member.address)?],
            Role::Admin => vec![],
        };
        let cert = ca.issue(csr, &Subject { role, name: name.into(), hosts }, self.lifetime())?;
        self.dir().put_member(&member.renewed(cert.clone(), millis(SystemTime::now())))?;
        self.refresh()?;
        tracing::info!(%name, serial = %cert.serial, "renewed a certificate");
        Ok(RenewAnswer { cert })
    }

    /// A join token valid for `ttl`; returns it (shown once) with its expiry.
    pub fn token(&self, ttl: Duration) -> Result<(JoinToken, u64), ClusterError> {
        let token = JoinToken::generate(&self.meta.ca_fingerprint);
        let now = millis(SystemTime::now());
        let expires_at_ms = now + ttl.as_millis() as u64;
        let record =
            TokenRecord { expires_at_ms, created_at_ms: now, created_on: self.config.node_name.clone() };
        self.dir().add_token(&token, &record)?;
        Ok((token, expires_at_ms))
    }

    pub fn admin_cert(&self, req: &AdminCertRequest) -> Result<AdminCertAnswer, ClusterError> {
        let ca = self.ca()?;
        crate::cluster::check_name(&req.name)?;
        let subject = Subject { role: Role::Admin, name: req.name.clone(), hosts: vec![] };
        let cert = ca.issue(&req.csr, &subject, Duration::from_millis(req.ttl_ms))?;
        let now = millis(SystemTime::now());
        let member = match self.dir().member(Role::Admin, &req.name)? {
            Some(existing) => existing.renewed(cert.clone(), now),
            None => Member {
                name: req.name.clone(),
                role: Role::Admin,
                address: String::new(),
                certs: vec![cert.clone()],
                joined_at_ms: now,
                version: env!("CARGO_PKG_VERSION").into(),
            },
        };
        self.dir().put_member(&member)?;
        self.refresh()?;
        Ok(AdminCertAnswer { cert, ca_cert: ca.cert_pem().to_owned() })
    }

    pub fn nodes(&self) -> Result<NodeList, ClusterError> {
        let reports = self.registry.as_ref().map(|r| r.reports()).unwrap_or_default();
        let seen = |name: &str| {
            let raw = reports.get(name)?;
            let report: crate::node::peers::NodeReport = serde_json::from_slice(raw).ok()?;
            Some(report.at_ms).filter(|at| *at > 0)
        };
        let nodes = self
            .dir()
            .members()?
            .into_iter()
            .map(|m| NodeRow {
                last_seen_ms: if m.role == Role::Node { seen(&m.name) } else { None },
                name: m.name.clone(),
                role: m.role.name().into(),
                address: m.address.clone(),
                cert_expires_at_ms: m.not_after_ms(),
                version: m.version.clone(),
                joined_at_ms: m.joined_at_ms,
            })
            .collect();
        Ok(NodeList { cluster_ca: self.meta.ca_fingerprint.clone(), nodes })
    }

    /// Removes a member (a node, or with `role` Admin an admin): its
    /// certificates are refused by every endpoint at its next refresh.
    pub fn remove(&self, role: Role, name: &str) -> Result<Member, ClusterError> {
        let gone = self.dir().remove(role, name)?.ok_or_else(|| {
            ClusterError::BadRequest(format!(
                "no {} named {name} in the cluster (see `segctl cluster ls`)",
                role.name()
            ))
        })?;
        self.refresh()?;
        tracing::info!(%name, role = role.name(), "removed from the cluster");
        Ok(gone)
    }
}

#[cfg(test)]
#[path = "cluster_node_tests.rs"]
mod tests;
