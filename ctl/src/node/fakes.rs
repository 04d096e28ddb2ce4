//! Test doubles for the node handlers: an in-memory store, a fake
//! attestation, a fake Docker status and fake app containers, so handlers
//! are tested without sockets, Docker or /proc.

use super::access_log::AccessLog;
use super::admin::{Admin, DockerStatus, NodeInfo};
use super::agent::{Agent, Identify, IdentifyError};
use super::rotation_state::{AppContainer, Containers, ContainersError, RotationState};
use super::watch::{Hub, WatchLimits};
use crate::attest::{AttestError, Attested};
use crate::store::{check_ttl, check_value, SecretMeta, SecretStore, SecretVersion, StoreError};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::Full;
use hyper::Request;
use seg_common::api::{Hooks, Identity, DEFAULT_TTL_MS};
use seg_common::name::SecretName;
use seg_common::secret::SecretBytes;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Metadata of secret `name` at `version`, granted to `grants` (`PROJECT/SERVICE`).
pub fn secret_meta(name: &str, version: u64, grants: &[&str]) -> SecretMeta {
    SecretMeta {
        name: SecretName::parse(name).unwrap(),
        version,
        ttl_ms: 60_000,
        grants: grants.iter().map(|g| seg_common::api::GrantTarget::parse(g).unwrap()).collect(),
        hooks: Hooks::default(),
        created_at: 0,
        updated_at: 0,
    }
}

/// Like the real stores, keeps the current and the previous version.
#[derive(Default)]
pub struct FakeStore {
    secrets: Mutex<BTreeMap<SecretName, (SecretBytes, SecretMeta)>>,
    previous: Mutex<BTreeMap<SecretName, (u64, SecretBytes)>>,
}

fn missing(name: &SecretName) -> StoreError {
    StoreError::NotFound(name.clone())
}

impl SecretStore for FakeStore {
    fn put(&self, name: &SecretName, value: &SecretBytes, ttl_ms: Option<u64>) -> Result<u64, StoreError> {
        check_value(value)?;
        if let Some(t) = ttl_ms {
            check_ttl(t)?;
        }
        let mut map = self.secrets.lock().unwrap();
        let meta = match map.remove(name) {
            Some((old, mut m)) => {
                self.previous.lock().unwrap().insert(name.clone(), (m.version, old));
                m.version += 1;
                m.ttl_ms = ttl_ms.unwrap_or(m.ttl_ms);
                m
            }
            None => SecretMeta {
                name: name.clone(),
                version: 1,
                ttl_ms: ttl_ms.unwrap_or(DEFAULT_TTL_MS),
                grants: BTreeSet::new(),
                hooks: Hooks::default(),
                created_at: 1,
                updated_at: 1,
            },
        };
        let v = meta.version;
        map.insert(name.clone(), (value.duplicate(), meta));
        Ok(v)
    }
    fn get(&self, name: &SecretName) -> Result<SecretVersion, StoreError> {
        let map = self.secrets.lock().unwrap();
        let (v, m) = map.get(name).ok_or_else(|| missing(name))?;
        Ok(SecretVersion { value: v.duplicate(), version: m.version, ttl_ms: m.ttl_ms })
    }
    fn meta(&self, name: &SecretName) -> Result<SecretMeta, StoreError> {
        self.secrets.lock().unwrap().get(name).map(|(_, m)| m.clone()).ok_or_else(|| missing(name))
    }
    fn list(&self) -> Result<Vec<SecretMeta>, StoreError> {
        Ok(self.secrets.lock().unwrap().values().map(|(_, m)| m.clone()).collect())
    }
    fn remove(&self, name: &SecretName) -> Result<(), StoreError> {
        self.previous.lock().unwrap().remove(name);
        self.secrets.lock().unwrap().remove(name).map(|_| ()).ok_or_else(|| missing(name))
    }
    fn get_version(&self, name: &SecretName, version: u64) -> Result<Option<SecretVersion>, StoreError> {
        let current = self.get(name)?;
        if current.version == version {
            return Ok(Some(current));
        }
        let previous = self.previous.lock().unwrap();
        Ok(previous.get(name).filter(|(v, _)| *v == version).map(|(v, value)| SecretVersion {
            value: value.duplicate(),
            version: *v,
            ttl_ms: current.ttl_ms,
        }))
    }
    fn change_meta(
        &self,
        name: &SecretName,
        change: &mut dyn FnMut(&mut SecretMeta) -> bool,
    ) -> Result<bool, StoreError> {
        let mut map = self.secrets.lock().unwrap();
        Ok(change(&mut map.get_mut(name).ok_or_else(|| missing(name))?.1))
    }
    fn kind(&self) -> &'static str {
        "fake"
    }
}

/// PID 100 is `shop/app`, 101 another `shop/app` container, 200 is
/// `other/web`, 300 is Docker-down, 400 a container without identity
/// labels; anything else is a host process.
pub struct FakeIdentify;

impl Identify for FakeIdentify {
    fn identify<'a>(
        &'a self,
        peer: &'a crate::attest::PinnedPeer,
    ) -> BoxFuture<'a, Result<Attested, IdentifyError>> {
        let pid = peer.pid;
        let result = match pid {
            100 => Ok(attested("shop", "app", "aaaaaaaaaaaaaaaaaaaa")),
            101 => Ok(attested("shop", "app", "cccccccccccccccccccc")),
            200 => Ok(attested("other", "web", "bbbbbbbbbbbbbbbbbbbb")),
            300 => Err(IdentifyError::DockerUnavailable("connection refused".into())),
            400 => Err(IdentifyError::Attest(AttestError::NoIdentity {
                container_id: "dddddddddddddddd".into(),
            })),
            _ => Err(IdentifyError::Attest(AttestError::NotAContainer { pid })),
        };
        Box::pin(async move { result })
    }
}

pub fn attested(project: &str, service: &str, id: &str) -> Attested {
    Attested {
        identity: Identity { project: Some(project.into()), service: service.into() },
        container_id: id.into(),
        container_name: format!("{project}-{service}-1"),
    }
}

pub struct FakeDocker;

impl DockerStatus for FakeDocker {
    fn describe(&self) -> BoxFuture<'_, String> {
        Box::pin(async { "ok (fake)".to_owned() })
    }
}

/// One exec run: container, argv, stdin.
pub type ExecSeen = (String, Vec<String>, Vec<u8>);

/// App containers by identity; records the signals sent and the execs run.
#[derive(Default)]
pub struct FakeContainers {
    pub apps: Mutex<BTreeMap<Identity, Vec<AppContainer>>>,
    pub signals: Mutex<Vec<(String, String)>>,
    pub execs: Mutex<Vec<ExecSeen>>,
    /// What an exec in a container answers (default: exit 0, no output).
    pub exec_results: Mutex<BTreeMap<String, Result<crate::docker::ExecOutput, crate::docker::ExecError>>>,
}

impl FakeContainers {
    pub fn add(&self, project: &str, service: &str, id: &str, address: Option<std::net::IpAddr>) {
        self.add_notified_by(project, service, id, address, &[]);
    }

    /// Like `add`, with a `seg.notify-from` label naming `from`.
    pub fn add_notified_by(
        &self,
        project: &str,
        service: &str,
        id: &str,
        address: Option<std::net::IpAddr>,
        from: &[&str],
    ) {
        let who = Identity { project: Some(project.into()), service: service.into() };
        let c = AppContainer {
            id: id.into(),
            name: format!("{project}-{service}-1"),
            addresses: address.into_iter().collect(),
            notify_from: from.iter().map(|s| s.to_string()).collect(),
        };
        self.apps.lock().unwrap().entry(who).or_default().push(c);
    }
}

impl Containers for FakeContainers {
    fn find<'a>(&'a self, who: &'a Identity) -> BoxFuture<'a, Result<Vec<AppContainer>, ContainersError>> {
        let found = self.apps.lock().unwrap().get(who).cloned().unwrap_or_default();
        Box::pin(async move { Ok(found) })
    }
    fn signal<'a>(&'a self, id: &'a str, signal: &'a str) -> BoxFuture<'a, Result<(), ContainersError>> {
        self.signals.lock().unwrap().push((id.to_owned(), signal.to_owned()));
        Box::pin(async { Ok(()) })
    }
    fn exec<'a>(
        &'a self,
        run: crate::docker::ExecRun<'a>,
    ) -> BoxFuture<'a, Result<crate::docker::ExecOutput, ContainersError>> {
        let id = run.container.to_owned();
        self.execs.lock().unwrap().push((id.clone(), run.argv.to_vec(), run.stdin.to_vec()));
        let ok = crate::docker::ExecOutput { exit_code: Some(0), stdout: vec![], stderr: vec![] };
        let answer = self.exec_results.lock().unwrap().get(&id).cloned().unwrap_or(Ok(ok));
        Box::pin(async move { answer.map_err(ContainersError::Exec) })
    }
}

/// A fresh store, access log and both handlers over them.
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub store: Arc<FakeStore>,
    pub containers: Arc<FakeContainers>,
    pub admin: Admin,
    pub agent: Agent,
}

impl Rig {
    pub fn new() -> Rig {
        Rig::with_limits(WatchLimits::default())
    }

    pub fn with_limits(limits: WatchLimits) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(AccessLog::open(&dir.path().join("access.log")).unwrap());
        let store = Arc::new(FakeStore::default());
        let containers = Arc::new(FakeContainers::default());
        let rotation_state = RotationState::new(Hub::new(limits), containers.clone(), log.clone());
        let info = NodeInfo {
            state_dir: dir.path().into(),
            admin_socket: dir.path().join("admin.sock"),
            agent_socket: dir.path().join("agent.sock"),
            access_log: dir.path().join("access.log"),
            started: Instant::now(),
            agent_socket_health: None,
        };
        let docker = Arc::new(FakeDocker);
        let admin = Admin {
            store: store.clone(),
            log: log.clone(),
            docker,
            info,
            rotation_state: rotation_state.clone(),
            segregation: None,
            cluster: None,
        };
        let agent = Agent {
            store: store.clone(),
            log,
            identify: Arc::new(FakeIdentify),
            rotation_state: rotation_state.clone(),
        };
        Rig { dir, store, containers, admin, agent }
    }

    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap()
    }
}

pub fn req(method: &str, path: &str, body: &[u8]) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("content-length", body.len())
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap()
}

pub async fn body_of(resp: super::http::Resp) -> Vec<u8> {
    use http_body_util::BodyExt;
    resp.into_body().collect().await.unwrap().to_bytes().to_vec()
}
