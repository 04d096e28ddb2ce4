//! One e2e test at a time, and only once every prerequisite is there.

use crate::docker::sweep_leftovers;
use crate::process::run;
use crate::{workspace_root, BUSYBOX_IMAGE, DOCKER_TIMEOUT, SIDECAR_IMAGE};
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

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
    // unsafe_code is denied workspace-wide; allowed here: flock(2) has no safe wrapper among our dependencies.
    #[allow(unsafe_code)]
    // SAFETY: flock on a file descriptor we own; blocks until the lock is ours.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock {}: {}", path.display(), std::io::Error::last_os_error());
    check_prerequisites();
    sweep_leftovers();
    crate::controller::sweep_stale_mounts();
    Serial { _thread: thread, _file: file }
}

fn check_prerequisites() {
    // unsafe_code is denied workspace-wide; allowed here: geteuid(2) through libc, as the harness does elsewhere.
    #[allow(unsafe_code)]
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
