//! Shared by the integration tests that drive the real Docker engine or the
//! real `segctl node run` (each test file has `mod support;`): the docker
//! CLI, a FROM-scratch busybox image, guards that remove what a test
//! created however it ends, and [`node::Node`], a controller on temp
//! directories.
//!
//! Nothing here skips: without Docker, busybox-static or root, the caller
//! fails with what to install or start.

// Each test binary compiles all of this and uses only its part.
#![allow(dead_code)]

pub mod host;
pub mod node;

use std::process::{Command, Output};

pub const SOCKET: &str = "/var/run/docker.sock";

/// A static busybox and its applets, nothing else: no registry is needed.
pub const BUSYBOX_DOCKERFILE: &str =
    "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";

/// Runs the docker CLI (legacy builder: there is no buildx here), whatever
/// the outcome.
pub fn docker(args: &[&str]) -> Output {
    try_docker(args)
        .unwrap_or_else(|e| panic!("cannot run `docker {}`: {e}; install the docker CLI", args.join(" ")))
}

fn try_docker(args: &[&str]) -> std::io::Result<Output> {
    Command::new("docker").args(args).env("DOCKER_BUILDKIT", "0").output()
}

/// Runs the docker CLI; panics with its stderr on failure. Returns the
/// trimmed stdout.
pub fn docker_cli(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "`docker {}` failed ({}): {}\nIs dockerd running? Start it: dockerd --host unix://{SOCKET} &",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Builds `tag` from `dockerfile`, with the host's /bin/busybox in the
/// context if `with_busybox`.
pub fn build_image(tag: &str, dockerfile: &str, with_busybox: bool) {
    let dir = tempfile::tempdir().expect("temp dir for the image build");
    if with_busybox {
        std::fs::copy("/bin/busybox", dir.path().join("busybox"))
            .expect("copy /bin/busybox into the build context: apt-get install -y busybox-static");
    }
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).expect("write the Dockerfile");
    docker_cli(&["build", "-q", "-t", tag, dir.path().to_str().expect("UTF-8 temp path")]);
}

/// A `FROM scratch` image holding only a static busybox, as `tag`.
pub fn build_busybox_image(tag: &str) {
    build_image(tag, BUSYBOX_DOCKERFILE, true);
}

/// Removes Docker objects however the test ends: containers (`rm -f`) or
/// networks (`network rm`), all in one command.
pub struct Guard {
    remove: &'static [&'static str],
    names: Vec<String>,
}

impl Guard {
    pub fn container(name_or_id: &str) -> Guard {
        let mut guard = Guard::containers();
        guard.push(name_or_id);
        guard
    }

    /// None yet: [`Guard::push`] adds them (before they are started).
    pub fn containers() -> Guard {
        Guard { remove: &["rm", "-f"], names: Vec::new() }
    }

    pub fn network(name: &str) -> Guard {
        Guard { remove: &["network", "rm"], names: vec![name.to_owned()] }
    }

    pub fn push(&mut self, name_or_id: &str) {
        self.names.push(name_or_id.to_owned());
    }

    /// The first name or id, as it was given.
    pub fn id(&self) -> &str {
        &self.names[0]
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.names.is_empty() {
            let names = self.names.iter().map(String::as_str);
            // Not `docker`: a panic while unwinding would abort the test run.
            let _ = try_docker(&self.remove.iter().copied().chain(names).collect::<Vec<_>>());
        }
    }
}
