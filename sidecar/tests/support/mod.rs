//! Test helpers: a fake agent socket that can go down and come back, and the
//! real `seg-sidecar` binary as a child process.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

pub const BIN: &str = env!("CARGO_BIN_EXE_seg-sidecar");

#[derive(Default)]
struct State {
    /// name → (value, version, ttl_ms); absent = not granted.
    secrets: BTreeMap<String, (Vec<u8>, u64, u64)>,
    fetches: BTreeMap<String, u32>,
}

/// Serves the agent API on a unix socket from its own thread and runtime.
pub struct FakeAgent {
    pub socket: PathBuf,
    state: Arc<Mutex<State>>,
    server: Option<(std::thread::JoinHandle<()>, tokio::sync::oneshot::Sender<()>)>,
}

impl FakeAgent {
    /// A stopped agent whose socket will be `dir/agent.sock`.
    pub fn new(dir: &Path) -> FakeAgent {
        FakeAgent { socket: dir.join("agent.sock"), state: Arc::default(), server: None }
    }

    pub fn set(&self, name: &str, value: &[u8], version: u64, ttl_ms: u64) {
        self.state.lock().unwrap().secrets.insert(name.into(), (value.to_vec(), version, ttl_ms));
    }

    pub fn revoke(&self, name: &str) {
        self.state.lock().unwrap().secrets.remove(name);
    }

    pub fn fetches(&self, name: &str) -> u32 {
        self.state.lock().unwrap().fetches.get(name).copied().unwrap_or(0)
    }

    pub fn start(&mut self) {
        assert!(self.server.is_none(), "already started");
        let _ = std::fs::remove_file(&self.socket);
        let std_listener = std::os::unix::net::UnixListener::bind(&self.socket).unwrap();
        // Like the controller's agent.sock: anyone may connect.
        std::fs::set_permissions(&self.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let state = self.state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = UnixListener::from_std(std_listener).unwrap();
                serve(listener, state, stopped).await;
            });
        });
        self.server = Some((thread, stop));
    }

    /// Stops serving and removes the socket, like a controller that died.
    pub fn stop(&mut self) {
        if let Some((thread, stop)) = self.server.take() {
            let _ = stop.send(());
            // A panic in the server thread shows in the test output already.
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(
    listener: UnixListener,
    state: Arc<Mutex<State>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            conn = listener.accept() => {
                let (stream, _) = conn.unwrap();
                tokio::spawn(answer(stream, state.clone()));
            }
        }
    }
}

async fn answer(mut stream: UnixStream, state: Arc<Mutex<State>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
    let response = route(&path, &state);
    let _ = stream.write_all(&response).await;
}

fn route(path: &str, state: &Mutex<State>) -> Vec<u8> {
    let mut s = state.lock().unwrap();
    if path == "/v1/secrets" {
        let list: Vec<_> = s
            .secrets
            .iter()
            .map(|(n, (_, v, t))| serde_json::json!({"name": n, "version": v, "ttl_ms": t}))
            .collect();
        return http(200, &[], serde_json::json!({ "secrets": list }).to_string().as_bytes());
    }
    let Some(name) = path.strip_prefix("/v1/secrets/") else {
        return error(404, "not_found", "no such route");
    };
    *s.fetches.entry(name.to_owned()).or_default() += 1;
    match s.secrets.get(name) {
        Some((value, version, ttl)) => http(
            200,
            &[("seg-secret-version", version.to_string()), ("seg-lease-ttl-ms", ttl.to_string())],
            value,
        ),
        None => error(403, "not_granted", "not granted to this container"),
    }
}

fn error(status: u16, code: &str, msg: &str) -> Vec<u8> {
    http(status, &[], serde_json::json!({"code": code, "error": msg}).to_string().as_bytes())
}

fn http(status: u16, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A directory on tmpfs (/dev/shm), removed on drop.
pub fn shm_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("seg-sidecar-it-").tempdir_in("/dev/shm").unwrap()
}

/// A directory for sockets, traversable by any user (for the unprivileged run).
pub fn socket_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix("seg-agent-it-").tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// The real binary, with its stderr collected.
pub struct Sidecar {
    child: Child,
    pub health_socket: String,
    stderr: Arc<Mutex<String>>,
}

pub struct Launch<'a> {
    pub dir: &'a Path,
    pub agent: &'a Path,
    pub env: Vec<(&'a str, String)>,
    pub uid: Option<u32>,
}

impl Sidecar {
    pub fn spawn(l: Launch<'_>) -> Sidecar {
        let health_socket = format!("seg-sidecar-it-{}-{:x}", std::process::id(), fastrand::u64(..));
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("SEG_DIR", l.dir)
            .env("SEG_AGENT_SOCKET", l.agent)
            .env("SEG_HEALTH_SOCKET", &health_socket)
            .env("SEG_LOG", "debug")
            .envs(l.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(uid) = l.uid {
            cmd.uid(uid).gid(uid);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (mut pipe, sink) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Sidecar { child, health_socket, stderr }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Runs `seg-sidecar health` against this sidecar: (exit code, line).
    pub fn health(&self) -> (i32, String) {
        let out =
            Command::new(BIN).arg("health").env("SEG_HEALTH_SOCKET", &self.health_socket).output().unwrap();
        (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Waits until the health socket answers, then returns its answer.
    pub fn health_when_up(&self) -> (i32, String) {
        let mut last = (1, String::new());
        wait_for(Duration::from_secs(5), "the health socket to answer", || {
            last = self.health();
            !last.1.starts_with("not running")
        });
        last
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), sig).unwrap();
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the stderr thread drain the pipe.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            assert!(Instant::now() < deadline, "seg-sidecar did not exit; stderr:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every 10 ms until it holds, or panics after `within`.
pub fn wait_for(within: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Names in `dir`, sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}
