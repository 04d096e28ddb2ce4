//! A `segctl node run` of the test's own, and what the tests ask of it.

use crate::process::{run_with_stdin, Out};
use crate::util::{block_on, write_private};
use crate::wait::poll;
use crate::{segctl_bin, AGENT_MOUNT, SEGCTL_TIMEOUT};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// A `segctl node run` with its own temporary state and run directories.
/// Dropping it kills the process (and prints its log if the test failed).
pub struct Controller {
    child: Option<Child>,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    log_path: PathBuf,
    dir: tempfile::TempDir,
    /// Added to `segctl node run` (see [`Controller::start_with`]).
    extra_args: Vec<String>,
    /// The network namespace it runs in (`None`: this process's).
    netns: Option<String>,
}

impl Controller {
    /// Starts a controller and waits until `segctl status` answers.
    pub fn start() -> Controller {
        Controller::start_with(&[])
    }

    /// Like [`Controller::start`], with `extra` flags for `segctl node run`.
    pub fn start_with(extra: &[&str]) -> Controller {
        let mut ctl = Controller::prepared(extra);
        ctl.spawn();
        ctl
    }

    /// A controller's directories, not started yet (e.g. to run `segctl
    /// cluster init` on its state directory first): start it with
    /// [`Controller::start_again`].
    pub fn prepared(extra: &[&str]) -> Controller {
        let dir = tempfile::Builder::new().prefix("seg-e2e-").tempdir().expect("temp dir");
        Controller {
            child: None,
            state_dir: dir.path().join("state"),
            run_dir: dir.path().join("run"),
            log_path: dir.path().join("controller.log"),
            dir,
            extra_args: extra.iter().map(|a| a.to_string()).collect(),
            netns: None,
        }
    }

    /// [`Controller::prepared`], to run in the network namespace `ns` (a
    /// node of its own host: `PrivateDocker`).
    pub fn prepared_in(ns: &str, extra: &[&str]) -> Controller {
        let mut ctl = Controller::prepared(extra);
        ctl.netns = Some(ns.to_owned());
        ctl
    }

    /// Waits up to `timeout` for the controller to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = poll(timeout, Duration::from_millis(20), || child.try_wait().expect("wait"))?;
        self.child = None;
        Some(status)
    }

    /// The directory holding state/, run/ and the controller log.
    pub fn base_dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "controller already running");
        let log =
            fs::OpenOptions::new().create(true).append(true).open(&self.log_path).expect("controller log");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(segctl_bin());
                c
            }
            None => Command::new(segctl_bin()),
        };
        cmd.arg("node")
            .arg("run")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--run-dir")
            .arg(&self.run_dir)
            .arg("--log-level")
            .arg(std::env::var("SEG_E2E_LOG").unwrap_or_else(|_| "info".into()))
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log);
        // unsafe_code is denied workspace-wide; allowed here: pre_exec is unsafe by signature; prctl in the child is async-signal-safe.
        #[allow(unsafe_code)]
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
        let mut last = None;
        let ready = poll(Duration::from_secs(30), Duration::from_millis(100), || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("wait")) {
                self.child = None;
                panic!("segctl node run exited ({status}) before answering:\n{}", self.log_tail(40));
            }
            let out = self.segctl(&["status"]);
            let ok = out.success();
            last = Some(out);
            ok.then_some(())
        });
        if ready.is_none() {
            panic!(
                "segctl status did not succeed within 30 s: {}\ncontroller log:\n{}",
                last.map(|o| o.text()).unwrap_or_default().trim(),
                self.log_tail(40)
            );
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
        let exited = terminate(&mut child, Duration::from_secs(10), |c| c.try_wait().expect("wait"));
        exited.unwrap_or_else(|| {
            panic!("segctl node run did not exit within 10 s of SIGTERM:\n{}", self.log_tail(30))
        })
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

    /// The `-v` / compose volume mounting the agent dir read-only where
    /// the sidecar looks for it.
    pub fn agent_volume(&self) -> String {
        format!("{}:{AGENT_MOUNT}:ro", self.agent_dir().display())
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
        self.assert_ok(&out, &format!("segctl {}", args.join(" ")));
        out.stdout_str()
    }

    fn assert_ok(&self, out: &Out, what: &str) {
        assert!(
            out.success(),
            "{what} failed ({}): {}\ncontroller log:\n{}",
            out.code(),
            out.text().trim(),
            self.log_tail(20)
        );
    }

    /// `segctl ARGS… --from-file <tmp> EXTRA…`, `<tmp>` a private file
    /// holding `value` (so it is never in argv), removed afterwards.
    pub fn segctl_value(&self, args: &[&str], value: &[u8], extra: &[&str]) -> Out {
        let file = self.dir.path().join(format!("value-{}", fastrand::u64(..)));
        write_private(&file, value);
        let path = file.to_str().expect("utf-8 path");
        let all = [args, &["--from-file", path], extra].concat();
        let out = self.segctl(&all);
        let _ = fs::remove_file(&file);
        out
    }

    /// `secret put NAME --from-file <tmp> EXTRA…` with `value`.
    pub fn put(&self, name: &str, value: &[u8], extra: &[&str]) {
        let out = self.segctl_value(&["secret", "put", name], value, extra);
        self.assert_ok(&out, &format!("segctl secret put {name}"));
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
        agent_get(&self.admin_socket(), &format!("/v1/secrets/{name}"))
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
        let found = poll(timeout, Duration::from_millis(100), || self.access_log().into_iter().find(&pred));
        found.unwrap_or_else(|| {
            panic!(
                "no access-log entry for {what} within {timeout:?}; the log has:\n{}",
                fs::read_to_string(self.access_log_path()).unwrap_or_default()
            )
        })
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(5), |c| c.try_wait().ok().flatten());
        }
        if std::thread::panicking() {
            eprintln!("---- controller log (last 40 lines) ----\n{}", self.log_tail(40));
        }
        // The controller leaves its agent dir mounted read-only on purpose
        // (fail closed); the temp dir can only be removed without it.
        detach_mounts_under(self.dir.path());
    }
}

/// Detaches every mount at or under `dir`, deepest first; how many.
pub fn detach_mounts_under(dir: &Path) -> usize {
    let base = dir.to_string_lossy().trim_end_matches('/').to_owned();
    detach_mounts(|m| m == base || m.starts_with(&format!("{base}/")))
}

/// Mounts left by killed e2e runs: under `$TMPDIR/seg-e2e-*` (swept by
/// `begin()`, which holds the serial lock, so no test's controller is live).
pub(crate) fn sweep_stale_mounts() {
    let prefix = std::env::temp_dir().join("seg-e2e-").to_string_lossy().into_owned();
    let n = detach_mounts(|m| m.starts_with(&prefix));
    if n > 0 {
        eprintln!("[e2e] detached {n} mount(s) left under {prefix}* by an earlier run");
    }
}

// unsafe_code is denied workspace-wide; allowed here: umount2(2) through libc on mount points read from mountinfo.
#[allow(unsafe_code)]
fn detach_mounts(pick: impl Fn(&str) -> bool) -> usize {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    // Field 5 is the mount point; later lines are mounted on top of earlier ones.
    let points: Vec<&str> = info.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| pick(m)).collect();
    let mut n = 0;
    for point in points.iter().rev() {
        let c = std::ffi::CString::new(*point).expect("mount point without NUL");
        // SAFETY: umount2 with a valid NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            n += 1;
        }
    }
    n
}

// unsafe_code is denied workspace-wide; allowed here: kill(2) through libc on our own child.
#[allow(unsafe_code)]
/// SIGTERM, then polls `exited` every 20 ms for up to `grace`; past that,
/// SIGKILL (and `None`).
fn terminate(
    child: &mut Child,
    grace: Duration,
    mut exited: impl FnMut(&mut Child) -> Option<ExitStatus>,
) -> Option<ExitStatus> {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = poll(grace, Duration::from_millis(20), || exited(child));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
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
