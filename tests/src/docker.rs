//! The docker CLI, single containers, and the sweep of a killed run's leftovers.

use crate::process::{run, Out};
use crate::wait::wait_until;
use crate::{Controller, DOCKER_TIMEOUT, E2E_LABEL, SIDECAR_IMAGE};
use std::process::Command;
use std::time::Duration;

pub fn docker(args: &[&str]) -> Out {
    run(Command::new("docker").args(args), DOCKER_TIMEOUT)
}

/// `docker ARGS`, panicking with stderr on failure; returns trimmed stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.success(), "docker {} failed ({}): {}", args.join(" "), out.code(), out.stderr.trim());
    out.stdout_str().trim().to_owned()
}

/// Removes containers and volumes carrying [`E2E_LABEL`]: only leftovers of
/// a killed run can exist while we hold the serial lock.
pub(crate) fn sweep_leftovers() {
    let filter = format!("label={E2E_LABEL}");
    let ids = docker_ok(&["ps", "-aq", "--filter", &filter]);
    if !ids.is_empty() {
        eprintln!(
            "[e2e] removing {} leftover container(s) of an earlier run",
            ids.split_whitespace().count()
        );
    }
    remove_all(&["rm", "-f", "-v"], &ids);
    remove_all(&["volume", "rm", "-f"], &docker_ok(&["volume", "ls", "-q", "--filter", &filter]));
}

/// `docker COMMAND ID…` for the whitespace-separated `ids`, if there are any.
fn remove_all(command: &[&str], ids: &str) {
    let mut args = command.to_vec();
    args.extend(ids.split_whitespace());
    if args.len() > command.len() {
        docker(&args);
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

    /// The sidecar image fetching `secrets` (`SEG_SECRETS`) from `ctl`, run
    /// unprivileged, read-only, without network and with a private tmpfs at
    /// /run/secrets; `extra` adds flags (its labels, say: none by default).
    pub fn sidecar(ctl: &Controller, secrets: &str, extra: &[&str]) -> Container {
        let (agent, env) = (ctl.agent_volume(), format!("SEG_SECRETS={secrets}"));
        let mut args = vec!["--network", "none", "--user", "1000:1000", "--read-only"];
        args.extend(["--tmpfs", "/run/secrets:uid=1000,gid=1000,mode=0700", "-v", &agent]);
        args.extend(["-e", &env, "-e", "SEG_DIR=/run/secrets"]);
        args.extend_from_slice(extra);
        args.push(SIDECAR_IMAGE);
        Container::run(&args)
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
