//! Test doubles for the sidecar's loops: an agent whose secrets, uptime,
//! watch streams, acknowledgements and notifications the test controls, and
//! a sink that records writes and wipes.

use crate::agent::{AgentError, Events, Fetched, Source};
use crate::writer::{SecretSink, Stored, WriteError};
use seg_common::api::{GrantedSecret, NotifyRequest, NotifyResult, WatchEvent};
use seg_common::name::SecretName;
use seg_common::secret::SecretBytes;
use seg_common::uds_http::ClientError;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Default)]
pub struct AgentState {
    up: bool,
    /// Requests hang until their timeout.
    hang: bool,
    /// name → (value, version, ttl_ms); absent = not granted.
    secrets: BTreeMap<String, (Vec<u8>, u64, u64)>,
    fetches: u32,
    /// The watch route exists.
    pub watchable: bool,
    /// Fetches take this long (then succeed).
    pub slow: Option<Duration>,
    /// Open watch streams.
    streams: Vec<mpsc::UnboundedSender<WatchEvent>>,
    /// `name vN` per acknowledgement, in order.
    pub acks: Vec<String>,
    /// Every notification received.
    pub notified: Vec<NotifyRequest>,
    /// Errors the next acknowledgements fail with, in order.
    pub ack_errors: VecDeque<AgentError>,
    /// Errors the next notifications fail with, in order.
    pub notify_errors: VecDeque<AgentError>,
    /// Acknowledgements and notifications asked for, failed or not.
    pub ack_attempts: u32,
    pub notify_attempts: u32,
}

/// A connect that failed as on a full listen backlog.
pub fn eagain() -> AgentError {
    connect_error(std::io::ErrorKind::WouldBlock)
}

/// An answer with this status (a refusal for 4xx but 408/429).
pub fn answer(status: u16) -> AgentError {
    let (what, code, message) = ("test".to_owned(), "test".to_owned(), "scripted".to_owned());
    if (400..500).contains(&status) && status != 408 && status != 429 {
        AgentError::Refused { what, status, code, message }
    } else {
        AgentError::Failed { what, status, code, message }
    }
}

fn connect_error(kind: std::io::ErrorKind) -> AgentError {
    let cause = std::io::Error::from(kind);
    AgentError::Unreachable(ClientError::Connect { path: "fake/agent.sock".into(), cause })
}

#[derive(Clone, Default)]
pub struct FakeAgent(pub Arc<Mutex<AgentState>>);

impl FakeAgent {
    pub fn with(secrets: &[(&str, &[u8], u64, u64)]) -> FakeAgent {
        let agent = FakeAgent::default();
        {
            let mut s = agent.0.lock().unwrap();
            s.up = true;
            for (n, v, ver, ttl) in secrets {
                s.secrets.insert(n.to_string(), (v.to_vec(), *ver, *ttl));
            }
        }
        agent
    }
    pub fn set_up(&self, up: bool) {
        self.0.lock().unwrap().up = up;
    }
    pub fn set_hang(&self, hang: bool) {
        self.0.lock().unwrap().hang = hang;
    }
    pub fn set(&self, name: &str, value: &[u8], version: u64, ttl_ms: u64) {
        self.0.lock().unwrap().secrets.insert(name.into(), (value.to_vec(), version, ttl_ms));
    }
    pub fn revoke(&self, name: &str) {
        self.0.lock().unwrap().secrets.remove(name);
    }
    pub fn fetches(&self) -> u32 {
        self.0.lock().unwrap().fetches
    }
}

impl FakeAgent {
    /// Sends `event` on every open watch stream.
    pub fn push(&self, event: WatchEvent) {
        self.0.lock().unwrap().streams.retain(|s| s.send(event.clone()).is_ok());
    }

    /// Ends every open watch stream (a controller that went away).
    pub fn close_streams(&self) {
        self.0.lock().unwrap().streams.clear();
    }

    pub fn open_streams(&self) -> usize {
        let mut s = self.0.lock().unwrap();
        s.streams.retain(|t| !t.is_closed());
        s.streams.len()
    }

    pub fn acks(&self) -> Vec<String> {
        self.0.lock().unwrap().acks.clone()
    }

    pub fn notified(&self) -> Vec<NotifyRequest> {
        self.0.lock().unwrap().notified.clone()
    }

    fn granted(s: &AgentState) -> Vec<GrantedSecret> {
        s.secrets
            .iter()
            .map(|(n, (_, version, ttl_ms))| GrantedSecret {
                name: SecretName::parse(n).unwrap(),
                version: *version,
                ttl_ms: *ttl_ms,
            })
            .collect()
    }
}

pub struct FakeEvents(mpsc::UnboundedReceiver<WatchEvent>);

impl Events for FakeEvents {
    async fn next_event(&mut self) -> Result<Option<WatchEvent>, AgentError> {
        Ok(self.0.recv().await)
    }
}

/// The controller is not running: its socket is gone.
fn down() -> AgentError {
    connect_error(std::io::ErrorKind::NotFound)
}

impl Source for FakeAgent {
    type Stream = FakeEvents;

    async fn watch(
        &self,
        _wants: Option<&[SecretName]>,
        _timeout: Duration,
    ) -> Result<FakeEvents, AgentError> {
        let mut s = self.0.lock().unwrap();
        if !s.up {
            return Err(down());
        }
        if !s.watchable {
            return Err(answer(404));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(WatchEvent::Hello { secrets: FakeAgent::granted(&s), ping_ms: 15_000 }).unwrap();
        s.streams.push(tx);
        Ok(FakeEvents(rx))
    }

    async fn ack(&self, name: &SecretName, version: u64, _timeout: Duration) -> Result<(), AgentError> {
        let mut s = self.0.lock().unwrap();
        s.ack_attempts += 1;
        if !s.up {
            return Err(down());
        }
        if let Some(e) = s.ack_errors.pop_front() {
            return Err(e);
        }
        s.acks.push(format!("{name} v{version}"));
        Ok(())
    }

    async fn notify(&self, req: &NotifyRequest, _timeout: Duration) -> Result<NotifyResult, AgentError> {
        let mut s = self.0.lock().unwrap();
        s.notify_attempts += 1;
        if let Some(e) = s.notify_errors.pop_front() {
            return Err(e);
        }
        s.notified.push(req.clone());
        Ok(NotifyResult { action: req.action.clone(), targets: vec!["container app1".into()] })
    }

    async fn list(&self, _timeout: Duration) -> Result<Vec<GrantedSecret>, AgentError> {
        let s = self.0.lock().unwrap();
        if !s.up {
            return Err(down());
        }
        Ok(FakeAgent::granted(&s))
    }

    async fn fetch(&self, name: &SecretName, timeout: Duration) -> Result<Fetched, AgentError> {
        let slow = self.0.lock().unwrap().slow;
        if let Some(d) = slow {
            tokio::time::sleep(d).await;
        }
        let hang = self.0.lock().unwrap().hang;
        if hang {
            tokio::time::sleep(timeout).await;
            return Err(down());
        }
        let mut s = self.0.lock().unwrap();
        s.fetches += 1;
        if !s.up {
            return Err(down());
        }
        match s.secrets.get(name.as_str()) {
            Some((value, version, ttl)) => Ok(Fetched {
                value: SecretBytes::from_slice(value),
                version: *version,
                ttl: Duration::from_millis(*ttl),
            }),
            None => Err(AgentError::Refused {
                what: name.to_string(),
                status: 403,
                code: "not_granted".into(),
                message: "not granted".into(),
            }),
        }
    }
}

#[derive(Default)]
pub struct SinkState {
    /// name → (version, value) of what is "on disk".
    files: BTreeMap<SecretName, (u64, Vec<u8>)>,
    /// Writes and wipes, in order.
    log: Vec<String>,
}

#[derive(Clone, Default)]
pub struct FakeSink(pub Arc<Mutex<SinkState>>);

impl FakeSink {
    pub fn on_disk(&self, name: &str) -> Option<(u64, Vec<u8>)> {
        self.0.lock().unwrap().files.get(&SecretName::parse(name).unwrap()).cloned()
    }
    pub fn log(&self) -> Vec<String> {
        self.0.lock().unwrap().log.clone()
    }
}

impl SecretSink for FakeSink {
    fn store(&mut self, name: &SecretName, version: u64, value: &SecretBytes) -> Result<Stored, WriteError> {
        let mut g = self.0.lock().unwrap();
        if g.files.get(name).is_some_and(|(_, v)| v == value.expose()) {
            return Ok(Stored::Unchanged);
        }
        g.files.insert(name.clone(), (version, value.expose().to_vec()));
        g.log.push(format!("write {name} v{version}"));
        Ok(Stored::Written)
    }
    fn wipe(&mut self, name: &SecretName) -> Result<bool, WriteError> {
        let mut g = self.0.lock().unwrap();
        let had = g.files.remove(name).is_some();
        if had {
            g.log.push(format!("wipe {name}"));
        }
        Ok(had)
    }
    fn is_on_disk(&self, name: &SecretName) -> bool {
        self.0.lock().unwrap().files.contains_key(name)
    }
    fn written(&self) -> Vec<SecretName> {
        self.0.lock().unwrap().files.keys().cloned().collect()
    }
    fn describe(&self, name: &SecretName) -> String {
        format!("fake/{name}")
    }
}
