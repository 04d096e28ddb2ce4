//! `segctl node run` on temporary state and run directories, driven by the
//! real `segctl` admin commands.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_segctl");

/// A running controller; killed on drop.
pub struct Node {
    child: Option<Child>,
    dir: tempfile::TempDir,
    docker: PathBuf,
    /// More `node run` flags (e.g. `--firewall nftables`).
    flags: Vec<String>,
}

impl Node {
    /// A controller whose Docker socket does not exist: the admin API works
    /// without Docker.
    pub fn start() -> Node {
        Node::start_with_docker(None)
    }

    pub fn start_with_docker(docker: Option<&str>) -> Node {
        Node::start_with(docker, &[])
    }

    /// [`Node::start_with_docker`] with more `node run` flags.
    pub fn start_with(docker: Option<&str>, flags: &[&str]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let docker = docker.map(PathBuf::from).unwrap_or_else(|| dir.path().join("no-docker.sock"));
        let flags = flags.iter().map(|f| f.to_string()).collect();
        let mut node = Node { child: None, dir, docker, flags };
        node.spawn();
        node
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn run_dir(&self) -> PathBuf {
        self.path("run")
    }

    /// Starts the controller (again) on the same directories.
    pub fn spawn(&mut self) {
        let log = std::fs::File::options().create(true).append(true).open(self.path("node.log")).unwrap();
        let child = Command::new(BIN)
            .args(["node", "run", "--log-level", "debug", "--state-dir"])
            .arg(self.path("state"))
            .arg("--run-dir")
            .arg(self.run_dir())
            .arg("--docker-socket")
            .arg(&self.docker)
            .args(&self.flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("controller exited early ({status}):\n{}", self.node_log());
            }
            // Ready means answering: Docker may be absent on purpose.
            if self.run_dir().join("admin.sock").exists()
                && self.cli(&["status", "--exit-zero"]).status.success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "controller not ready in 20 s:\n{}", self.node_log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn node_log(&self) -> String {
        std::fs::read_to_string(self.path("node.log")).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.path("state/access.log")).unwrap()
    }

    /// Stops the controller with SIGTERM and waits for a clean exit.
    pub fn stop(&mut self) {
        let mut child = self.child.take().unwrap();
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "controller exited with {status}:\n{}", self.node_log());
                return;
            }
            assert!(Instant::now() < deadline, "controller ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A clean stop, then a start on the same directories.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        segctl(&self.run_dir(), args, None)
    }

    pub fn cli_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        segctl(&self.run_dir(), args, Some(stdin))
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "segctl {args:?} failed: {}", text(&out.stderr));
        text(&out.stdout)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The controller keeps agent/ mounted read-only after it stops.
        segctl::node::agent_dir::release(&self.run_dir());
    }
}

/// `segctl ARGS --run-dir RUN_DIR`, with `stdin` fed to it if given.
pub fn segctl(run_dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).arg("--run-dir").arg(run_dir).env_remove("SEG_RUN_DIR");
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(bytes) = stdin {
        // A refused oversized value may close stdin early: ignore EPIPE.
        let _ = child.stdin.take().unwrap().write_all(bytes);
    }
    child.wait_with_output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
