//! Harness for seg's end-to-end tests: they run the real `segctl` controller
//! and the real `seg-sidecar:dev` image against the real Docker engine.
//!
//! - [`begin`] checks the prerequisites (root, Docker, docker-compose, the
//!   images, the `segctl` binary) and serializes the tests, across threads and
//!   processes, with a lock file; it also removes leftovers of killed runs.
//! - [`Controller`] runs `segctl node run` with a temporary state dir and run
//!   dir (never `/var/lib/seg` or `/run/seg`, so a demo can run alongside).
//! - [`Project`] is a compose project with a unique name, generated from
//!   `examples/secrets/docker-compose.yml` with the agent mount pointed at the
//!   test controller; dropping it runs `docker-compose down -v`.
//!
//! Nothing here skips: a missing prerequisite is a loud failure.

use serde_yaml::{Mapping, Value};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use serde_json;
pub use serde_yaml;

pub const SIDECAR_IMAGE: &str = "seg-sidecar:dev";
pub const BUSYBOX_IMAGE: &str = "seg-busybox:dev";
/// The example the tests bring up (relative to the workspace root).
pub const EXAMPLE: &str = "examples/secrets/docker-compose.yml";
/// Label put on every container and volume the tests create (for the sweep).
pub const E2E_LABEL: &str = "seg.e2e";
/// Where the example mounts the agent directory inside its containers.
pub const AGENT_MOUNT: &str = "/run/seg/agent";

/// Generous bound for one docker / docker-compose command.
pub const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound for one segctl admin command.
pub const SEGCTL_TIMEOUT: Duration = Duration::from_secs(30);

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_owned()
}

// ---------------------------------------------------------------- prerequisites

/// Held by every test for its whole run: one e2e test at a time, even when
/// the test binaries are run in parallel or with several threads.
pub struct Serial {
    _thread: MutexGuard<'static, ()>,
    _file: File,
}

static THREAD_LOCK: Mutex<()> = Mutex::new(());

/// Checks every prerequisite (panicking with what to do), takes the serial
/// lock and removes containers/volumes left by an e2e run that was killed.
pub fn begin() -> Serial {
    let thread = THREAD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let path = Path::new("/tmp/seg-e2e.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own; blocks until the lock is ours.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock {}: {}", path.display(), std::io::Error::last_os_error());
    check_prerequisites();
    sweep_leftovers();
    Serial { _thread: thread, _file: file }
}

fn check_prerequisites() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the end-to-end tests must run as root (they run segctl node run and drive Docker); \
         use `sudo scripts/test`"
    );
    let info = run(Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]), DOCKER_TIMEOUT);
    assert!(
        info.success(),
        "Docker is not answering (`docker info`: {}); run `sudo scripts/setup`",
        info.stderr.trim()
    );
    let compose = run(Command::new("docker-compose").arg("version").arg("--short"), DOCKER_TIMEOUT);
    assert!(compose.success(), "docker-compose is missing: run `sudo scripts/setup`");
    for image in [SIDECAR_IMAGE, BUSYBOX_IMAGE] {
        let out = run(
            Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", image]),
            DOCKER_TIMEOUT,
        );
        assert!(out.success(), "image {image} is missing: run `sudo scripts/build-images`");
    }
    let bin = segctl_bin();
    assert!(bin.is_file(), "{} is missing: run `cargo build -p segctl` (or set SEG_BIN_DIR)", bin.display());
}

/// Removes containers and volumes carrying [`E2E_LABEL`]: only leftovers of
/// a killed run can exist while we hold the serial lock.
fn sweep_leftovers() {
    let filter = format!("label={E2E_LABEL}");
    let ids = docker_ok(&["ps", "-aq", "--filter", &filter]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        eprintln!("[e2e] removing {} leftover container(s) of an earlier run", ids.len());
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(ids);
        docker(&args);
    }
    let vols = docker_ok(&["volume", "ls", "-q", "--filter", &filter]);
    let vols: Vec<&str> = vols.split_whitespace().collect();
    if !vols.is_empty() {
        let mut args = vec!["volume", "rm", "-f"];
        args.extend(vols);
        docker(&args);
    }
}

/// The `segctl` under test: `$SEG_BIN_DIR/segctl` (relative to the workspace
/// root unless absolute), else the newest of
/// `<target>/debug/segctl` and `<target>/release/segctl`.
pub fn segctl_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("SEG_BIN_DIR") {
        // Relative to the workspace root (cargo runs tests from tests/).
        return workspace_root().join(dir).join("segctl");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let candidates = [target.join("debug/segctl"), target.join("release/segctl")];
    let newest = candidates
        .iter()
        .filter_map(|p| Some((fs::metadata(p).ok()?.modified().ok()?, p)))
        .max_by_key(|(t, _)| *t)
        .map(|(_, p)| p.clone());
    newest.unwrap_or_else(|| candidates[0].clone())
}

// ---------------------------------------------------------------- processes

/// What a finished command printed.
#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Out {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stdout and stderr together, for assertions on messages.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout_str(), self.stderr)
    }

    /// Exit code, or 128+signal.
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or_else(|| 128 + self.status.signal().unwrap_or(0))
    }
}

/// Runs `cmd` to completion within `timeout` (killing it past that, and
/// panicking). stdout/stderr go through temp files, so no pipe can fill up.
pub fn run(cmd: &mut Command, timeout: Duration) -> Out {
    run_with_stdin(cmd, None, timeout)
}

pub fn run_with_stdin(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Out {
    let mut out_file = tempfile::tempfile().expect("temp file");
    let mut err_file = tempfile::tempfile().expect("temp file");
    cmd.stdout(out_file.try_clone().expect("dup")).stderr(err_file.try_clone().expect("dup"));
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let shown = format!("{cmd:?}");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        })
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{shown} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let read_all = |f: &mut File| {
        use std::io::Seek;
        let mut buf = Vec::new();
        f.rewind().expect("rewind");
        f.read_to_end(&mut buf).expect("read output");
        buf
    };
    let stdout = read_all(&mut out_file);
    let stderr = String::from_utf8_lossy(&read_all(&mut err_file)).into_owned();
    Out { status, stdout, stderr }
}

pub fn docker(args: &[&str]) -> Out {
    run(Command::new("docker").args(args), DOCKER_TIMEOUT)
}

/// `docker ARGS`, panicking with stderr on failure; returns trimmed stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.success(), "docker {} failed ({}): {}", args.join(" "), out.code(), out.stderr.trim());
    out.stdout_str().trim().to_owned()
}

/// Polls `f` every 100 ms until it returns `Some` or `timeout` passes
/// (then panics naming `what`).
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a future to completion on a fresh single-threaded runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime").block_on(f)
}

/// `n` random bytes, printable (`[A-Za-z0-9]`) so they are easy to grep for.
pub fn random_text(n: usize) -> Vec<u8> {
    (0..n).map(|_| fastrand::alphanumeric() as u8).collect()
}

/// `n` random bytes of any value (binary-safety checks).
pub fn random_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|_| fastrand::u8(..)).collect()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call, lowercase alphanumeric (what
/// docker-compose 1.29 keeps of a project name).
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}{}", std::process::id(), fastrand::u32(..) % 1000)
}

// ---------------------------------------------------------------- controller

/// A `segctl node run` with its own temporary state and run directories.
/// Dropping it kills the process (and prints its log if the test failed).
pub struct Controller {
    child: Option<Child>,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    log_path: PathBuf,
    dir: tempfile::TempDir,
}

impl Controller {
    /// Starts a controller and waits until `segctl status` answers.
    pub fn start() -> Controller {
        let dir = tempfile::Builder::new().prefix("seg-e2e-").tempdir().expect("temp dir");
        let mut ctl = Controller {
            child: None,
            state_dir: dir.path().join("state"),
            run_dir: dir.path().join("run"),
            log_path: dir.path().join("controller.log"),
            dir,
        };
        ctl.spawn();
        ctl
    }

    /// The directory holding state/, run/ and the controller log.
    pub fn base_dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "controller already running");
        let log =
            fs::OpenOptions::new().create(true).append(true).open(&self.log_path).expect("controller log");
        let mut cmd = Command::new(segctl_bin());
        cmd.arg("node")
            .arg("run")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--run-dir")
            .arg(&self.run_dir)
            .arg("--log-level")
            .arg(std::env::var("SEG_E2E_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; the controller dies with us
        // even if the test process is killed.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child =
            Some(cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", segctl_bin().display())));
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("wait")) {
                self.child = None;
                panic!("segctl node run exited ({status}) before answering:\n{}", self.log_tail(40));
            }
            let out = self.segctl(&["status"]);
            if out.success() {
                return;
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!(
                    "segctl status did not succeed within 30 s: {}\ncontroller log:\n{}",
                    out.text().trim(),
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().expect("wait").is_none(),
            None => false,
        }
    }

    /// SIGTERM, then waits up to 10 s (SIGKILL and panic past that).
    /// Returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("controller is not running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("segctl node run did not exit within 10 s of SIGTERM:\n{}", self.log_tail(30));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts it again on the same directories.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn();
    }

    /// Starts a stopped controller again on the same directories.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    pub fn agent_dir(&self) -> PathBuf {
        self.run_dir.join("agent")
    }

    pub fn agent_socket(&self) -> PathBuf {
        self.agent_dir().join("agent.sock")
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.run_dir.join("admin.sock")
    }

    pub fn access_log_path(&self) -> PathBuf {
        self.state_dir.join("access.log")
    }

    /// The last `n` lines of the controller's stdout/stderr.
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `segctl ARGS` with `SEG_RUN_DIR` pointing at ours.
    pub fn segctl(&self, args: &[&str]) -> Out {
        self.segctl_stdin(args, None)
    }

    pub fn segctl_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Out {
        let mut cmd = Command::new(segctl_bin());
        cmd.env("SEG_RUN_DIR", &self.run_dir).args(args);
        run_with_stdin(&mut cmd, stdin, SEGCTL_TIMEOUT)
    }

    /// Like [`Controller::segctl`], panicking (with the controller log) on failure.
    pub fn segctl_ok(&self, args: &[&str]) -> String {
        let out = self.segctl(args);
        assert!(
            out.success(),
            "segctl {} failed ({}): {}\ncontroller log:\n{}",
            args.join(" "),
            out.code(),
            out.text().trim(),
            self.log_tail(20)
        );
        out.stdout_str()
    }

    /// `secret put NAME --from-file <tmp> EXTRA…` with `value`.
    pub fn put(&self, name: &str, value: &[u8], extra: &[&str]) {
        let file = self.dir.path().join(format!("value-{}", fastrand::u64(..)));
        write_private(&file, value);
        let path = file.to_str().expect("utf-8 path");
        let mut args = vec!["secret", "put", name, "--from-file", path];
        args.extend_from_slice(extra);
        let out = self.segctl(&args);
        let _ = fs::remove_file(&file);
        assert!(
            out.success(),
            "segctl secret put {name} failed ({}): {}\ncontroller log:\n{}",
            out.code(),
            out.text().trim(),
            self.log_tail(20)
        );
    }

    pub fn grant(&self, name: &str, to: &str) {
        self.segctl_ok(&["secret", "grant", name, "--to", to]);
    }

    /// `secret ls -o json`, parsed.
    pub fn list(&self) -> Vec<serde_json::Value> {
        let text = self.segctl_ok(&["secret", "ls", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("`segctl secret ls -o json` printed invalid JSON ({e}): {text}"));
        match v {
            serde_json::Value::Array(items) => items,
            serde_json::Value::Object(ref o) if o.get("secrets").is_some_and(|s| s.is_array()) => {
                o["secrets"].as_array().cloned().unwrap_or_default()
            }
            other => panic!("`segctl secret ls -o json` is not a list: {other}"),
        }
    }

    /// The current value, read back over the admin socket.
    pub fn admin_get(&self, name: &str) -> (u16, Vec<u8>) {
        let path = format!("/v1/secrets/{name}");
        let resp = agent_get(&self.admin_socket(), &path);
        (resp.0, resp.1)
    }

    /// Every access-log entry so far.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        let text = fs::read_to_string(self.access_log_path()).unwrap_or_default();
        text.lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("access log line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// Waits for an access-log entry matching `pred`.
    pub fn wait_access(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            if let Some(e) = self.access_log().into_iter().find(|e| pred(e)) {
                return e;
            }
            if start.elapsed() > timeout {
                panic!(
                    "no access-log entry for {what} within {timeout:?}; the log has:\n{}",
                    fs::read_to_string(self.access_log_path()).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- controller log (last 40 lines) ----\n{}", self.log_tail(40));
        }
    }
}

/// Writes `bytes` to a new 0600 file.
pub fn write_private(path: &Path, bytes: &[u8]) {
    let mut f = fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(bytes).expect("write");
}

/// `GET path` on a controller socket: status and body bytes.
pub fn agent_get(socket: &Path, path: &str) -> (u16, Vec<u8>) {
    use seg_common::uds_http::{send, Request};
    let resp = block_on(send(socket, &Request::get(path), Duration::from_secs(10), 1 << 20))
        .unwrap_or_else(|e| panic!("GET {path} on {}: {e}", socket.display()));
    (resp.status, resp.body.expose().to_vec())
}

/// The `code` of an API error body (empty if it is not one).
pub fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_owned))
        .unwrap_or_default()
}

// ---------------------------------------------------------------- compose

/// A compose project with a unique name, written to a temp dir. Dropping it
/// runs `docker-compose down -v` (printing every service's logs first if the
/// test failed).
pub struct Project {
    pub name: String,
    file: PathBuf,
    dir: tempfile::TempDir,
}

/// The example compose file, parsed, with the agent bind mount pointed at
/// `ctl`'s agent dir and every service and volume labelled [`E2E_LABEL`].
pub fn example_yaml(ctl: &Controller) -> Value {
    let path = workspace_root().join(EXAMPLE);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut doc: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let agent = ctl.agent_dir();
    let mut rewritten = 0;
    for (_, svc) in services_mut(&mut doc) {
        if let Some(Value::Sequence(vols)) = svc.get_mut("volumes") {
            for v in vols.iter_mut() {
                if let Value::String(s) = v {
                    if s.starts_with(&format!("{AGENT_MOUNT}:")) {
                        *s = format!("{}:{AGENT_MOUNT}:ro", agent.display());
                        rewritten += 1;
                    }
                }
            }
        }
    }
    assert_eq!(rewritten, 1, "{EXAMPLE} should bind-mount {AGENT_MOUNT} exactly once");
    doc
}

/// The services of a compose document, mutable.
pub fn services_mut(doc: &mut Value) -> Vec<(String, &mut Mapping)> {
    let services =
        doc.get_mut("services").and_then(Value::as_mapping_mut).expect("compose file has services");
    services
        .iter_mut()
        .map(|(k, v)| {
            (k.as_str().unwrap_or_default().to_owned(), v.as_mapping_mut().expect("service is a map"))
        })
        .collect()
}

/// One service of a compose document, mutable.
pub fn service_mut<'a>(doc: &'a mut Value, name: &str) -> &'a mut Mapping {
    doc.get_mut("services")
        .and_then(|s| s.get_mut(name))
        .and_then(Value::as_mapping_mut)
        .unwrap_or_else(|| panic!("no service {name}"))
}

/// Adds a service from YAML text.
pub fn add_service(doc: &mut Value, name: &str, yaml: &str) {
    let svc: Value = serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("service {name}: {e}\n{yaml}"));
    doc.get_mut("services").and_then(Value::as_mapping_mut).expect("services").insert(name.into(), svc);
}

/// Adds a tmpfs volume owned by 1000:1000 (like the example's).
pub fn add_tmpfs_volume(doc: &mut Value, name: &str) {
    let vol: Value = serde_yaml::from_str(
        "driver_opts: {type: tmpfs, device: tmpfs, o: \"size=1m,uid=1000,gid=1000,mode=0700\"}",
    )
    .expect("yaml");
    let root = doc.as_mapping_mut().expect("compose file is a map");
    let vols = root.entry("volumes".into()).or_insert_with(|| Value::Mapping(Mapping::new()));
    vols.as_mapping_mut().expect("volumes is a map").insert(name.into(), vol);
}

fn label_everything(doc: &mut Value) {
    for (_, svc) in services_mut(doc) {
        let labels = svc.entry("labels".into()).or_insert_with(|| Value::Mapping(Mapping::new()));
        match labels {
            Value::Mapping(m) => {
                m.insert(E2E_LABEL.into(), "1".into());
            }
            Value::Sequence(s) => s.push(format!("{E2E_LABEL}=1").into()),
            _ => panic!("labels must be a map or a list"),
        }
    }
    if let Some(Value::Mapping(vols)) = doc.get_mut("volumes") {
        for (_, v) in vols.iter_mut() {
            if v.is_null() {
                *v = Value::Mapping(Mapping::new());
            }
            let m = v.as_mapping_mut().expect("volume is a map");
            let labels = m.entry("labels".into()).or_insert_with(|| Value::Mapping(Mapping::new()));
            labels.as_mapping_mut().expect("volume labels map").insert(E2E_LABEL.into(), "1".into());
        }
    }
}

impl Project {
    /// Writes `doc` (labelled for the sweep) as a project with a unique name.
    pub fn new(mut doc: Value) -> Project {
        label_everything(&mut doc);
        let name = unique_name("sege2e");
        let dir = tempfile::Builder::new().prefix("seg-e2e-compose-").tempdir().expect("temp dir");
        let file = dir.path().join("docker-compose.yml");
        fs::write(&file, serde_yaml::to_string(&doc).expect("yaml")).expect("write compose file");
        Project { name, file, dir }
    }

    /// The example, pointed at `ctl`.
    pub fn example(ctl: &Controller) -> Project {
        Project::new(example_yaml(ctl))
    }

    /// The grant target for one of its services: `PROJECT/SERVICE`.
    pub fn target(&self, service: &str) -> String {
        format!("{}/{service}", self.name)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn compose(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new("docker-compose");
        cmd.arg("--ansi").arg("never").arg("-p").arg(&self.name).arg("-f").arg(&self.file).args(args);
        run(&mut cmd, DOCKER_TIMEOUT)
    }

    /// `up -d`; panics with every service's logs on failure.
    pub fn up(&self) {
        let out = self.compose(&["up", "-d"]);
        assert!(
            out.success(),
            "docker-compose up failed ({}): {}\n{}",
            out.code(),
            out.text(),
            self.all_logs()
        );
    }

    /// The container id of a service's (first) container.
    pub fn container(&self, service: &str) -> String {
        let out = self.compose(&["ps", "-a", "-q", service]);
        let id = out.stdout_str().split_whitespace().next().unwrap_or_default().to_owned();
        assert!(!id.is_empty(), "service {service} has no container: {}", out.text());
        id
    }

    /// `docker exec` in a service's container (as its configured user).
    pub fn exec(&self, service: &str, cmd: &[&str]) -> Out {
        let id = self.container(service);
        let mut args = vec!["exec", id.as_str()];
        args.extend_from_slice(cmd);
        docker(&args)
    }

    /// `exec`, panicking on failure; returns stdout bytes.
    pub fn exec_ok(&self, service: &str, cmd: &[&str]) -> Vec<u8> {
        let out = self.exec(service, cmd);
        assert!(out.success(), "exec {cmd:?} in {service} failed ({}): {}", out.code(), out.text());
        out.stdout
    }

    /// The bytes of a file as a service sees it, if it can read it.
    pub fn read_file(&self, service: &str, path: &str) -> Option<Vec<u8>> {
        let out = self.exec(service, &["cat", path]);
        out.success().then_some(out.stdout)
    }

    pub fn logs(&self, service: &str) -> String {
        self.compose(&["logs", "--no-color", service]).text()
    }

    pub fn all_logs(&self) -> String {
        self.compose(&["logs", "--no-color"]).text()
    }

    /// `{{.State.Status}}` and health of a service's container.
    pub fn state(&self, service: &str) -> String {
        let id = self.container(service);
        docker_ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}} exit={{.State.ExitCode}}",
            &id,
        ])
    }

    /// Waits until `service` sees exactly `value` at `path`.
    pub fn wait_for_file(&self, service: &str, path: &str, value: &[u8], timeout: Duration) {
        let start = Instant::now();
        loop {
            let seen = self.read_file(service, path);
            if seen.as_deref() == Some(value) {
                return;
            }
            if start.elapsed() > timeout {
                let what = match seen {
                    None => "no readable file".to_owned(),
                    Some(b) => format!("{} bytes that differ from the {} expected", b.len(), value.len()),
                };
                panic!(
                    "{service} did not see the expected value at {path} within {timeout:?} ({what})\n{}",
                    self.all_logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `path` does not exist for `service`; returns how long it took.
    pub fn wait_for_absence(&self, service: &str, path: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let out = self.exec(service, &["test", "-e", path]);
            // 1 from `test` itself; docker exec failing also exits 1, but says why.
            if out.code() == 1 && out.stderr.trim().is_empty() {
                return start.elapsed();
            }
            if start.elapsed() > timeout {
                panic!("{path} still exists for {service} after {timeout:?}\n{}", self.all_logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn down(&self) {
        let out = self.compose(&["down", "-v", "--remove-orphans", "-t", "2"]);
        if !out.success() {
            eprintln!("docker-compose down failed: {}", out.text());
        }
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- logs of compose project {} ----\n{}", self.name, self.all_logs());
        }
        self.down();
    }
}

/// A container started with `docker run -d`, removed on drop.
pub struct Container {
    pub id: String,
}

impl Container {
    pub fn run(args: &[&str]) -> Container {
        let mut all = vec!["run", "-d", "--label", "seg.e2e=1"];
        all.extend_from_slice(args);
        Container { id: docker_ok(&all) }
    }

    pub fn logs(&self) -> String {
        docker(&["logs", &self.id]).text()
    }

    /// Waits for it to exit; returns the exit code.
    pub fn wait_exit(&self, timeout: Duration) -> i64 {
        wait_until(timeout, "the container to exit", || {
            let s = docker_ok(&["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", &self.id]);
            let (status, code) = s.split_once(' ')?;
            (status == "exited" || status == "dead").then(|| code.parse().unwrap_or(-1))
        })
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- logs of container {} ----\n{}", self.id, self.logs());
        }
        docker(&["rm", "-f", "-v", &self.id]);
    }
}

/// The mode bits of a path on the host.
pub fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).permissions().mode()
        & 0o7777
}
