//! Start-up and shut-down on the file system: directories with fixed modes,
//! a pid file that doubles as the one-controller lock, and socket binding
//! that only ever removes a stale *socket* (never any other file).

use super::NodeOptions;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::net::UnixListener;

#[derive(Debug, Clone)]
pub struct Paths {
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub agent_dir: PathBuf,
    pub admin_socket: PathBuf,
    pub agent_socket: PathBuf,
    pub pid_file: PathBuf,
    pub access_log: PathBuf,
}

impl Paths {
    pub fn new(opts: &NodeOptions) -> Paths {
        let agent_dir = opts.run_dir.join("agent");
        Paths {
            state_dir: opts.state_dir.clone(),
            admin_socket: opts.run_dir.join("admin.sock"),
            agent_socket: agent_dir.join("agent.sock"),
            agent_dir,
            pid_file: opts.run_dir.join("segctl.pid"),
            access_log: opts.access_log.clone().unwrap_or_else(|| opts.state_dir.join("access.log")),
            run_dir: opts.run_dir.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("segctl node run must run as root (it reads other processes' /proc entries and guards root-only secrets); you are uid {0}")]
    NotRoot(u32),
    // `err`, not `source`: the cause is said here once, not again by the
    // error chain the CLI prints.
    #[error("cannot {action} {path}: {err}")]
    Io { action: &'static str, path: PathBuf, err: io::Error },
    #[error("{0} exists but is not a directory (or is a symlink); move it away or pick another path")]
    NotADirectory(PathBuf),
    #[error("{0} exists but is not a socket; refusing to delete it. Move it away or pick another --run-dir")]
    NotASocket(PathBuf),
    #[error("cannot {action} {path}: {err} (the controller needs CAP_SYS_ADMIN to make the agent directory read-only)")]
    Mount { action: &'static str, path: PathBuf, err: io::Error },
    #[error("{0} has another file system mounted on it, hiding the directory seg binds agent.sock in; unmount it (`umount {0}`) and start again")]
    Shadowed(PathBuf),
    #[error("{0} was replaced by another directory while the controller ran; restart the controller so it binds the agent socket in the new one, then recreate the containers that mount it")]
    Recreated(PathBuf),
    #[error("another seg controller is already running ({what}); stop it first (`kill {pid}` or your service manager)")]
    AlreadyRunning { what: String, pid: String },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SetupError + 'a {
    move |err| SetupError::Io { action, path: path.to_owned(), err }
}

/// Raises the soft limit on open files to the hard limit (at most 1M).
/// Best effort: a failure only means fewer streams fit.
pub fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    let want = now.maximum.unwrap_or(1 << 20).min(1 << 20);
    if now.current.is_some_and(|c| c < want) {
        if let Err(e) = setrlimit(Resource::Nofile, Rlimit { current: Some(want), maximum: now.maximum }) {
            tracing::warn!("cannot raise the open-file limit to {want}: {e}; fewer watch streams will fit");
        }
    }
}

pub fn require_root() -> Result<(), SetupError> {
    let uid = rustix::process::geteuid();
    if uid.is_root() {
        Ok(())
    } else {
        Err(SetupError::NotRoot(uid.as_raw()))
    }
}

/// Creates (or re-modes) the state dir 0700, the run dir and `agent/` 0755.
/// `agent/` is never removed: compose bind-mounts it, and a mount of a
/// re-created directory would go stale across a controller restart.
pub fn prepare_dirs(paths: &Paths) -> Result<(), SetupError> {
    ensure_dir(&paths.state_dir, 0o700)?;
    ensure_dir(&paths.run_dir, 0o755)?;
    ensure_dir(&paths.agent_dir, 0o755)
}

fn ensure_dir(path: &Path, mode: u32) -> Result<(), SetupError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(SetupError::NotADirectory(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(path).map_err(io_err("create directory", path))?;
        }
        Err(e) => return Err(io_err("inspect", path)(e)),
    }
    // Only when needed: `agent/` is a read-only mount while (and after) a
    // controller runs; `AgentDir::secure` re-modes it through its handle.
    if fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o7777 == mode) {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", path))
}

/// Takes an exclusive `flock` on `<run>/segctl.pid` and writes our pid into
/// it. The lock lives as long as the returned file.
pub fn lock_pid_file(paths: &Paths) -> Result<File, SetupError> {
    let path = &paths.pid_file;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err("open", path))?;
    use rustix::fs::{flock, FlockOperation};
    if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
        if e == rustix::io::Errno::WOULDBLOCK {
            let pid = fs::read_to_string(path).unwrap_or_default().trim().to_owned();
            let what = format!("pid {pid} holds {}", path.display());
            return Err(SetupError::AlreadyRunning { what, pid });
        }
        return Err(io_err("lock", path)(e.into()));
    }
    file.set_len(0).map_err(io_err("truncate", path))?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes()).map_err(io_err("write", path))?;
    Ok(file)
}

/// Binds a listening socket at `path` with `mode`. A leftover socket that
/// nobody answers on is removed first; a live one means another controller.
pub fn bind_socket(path: &Path, mode: u32) -> Result<UnixListener, SetupError> {
    remove_stale_socket(path)?;
    let listener = UnixListener::bind(path).map_err(io_err("bind", path))?;
    // Before the first accept, so no client ever sees a looser mode.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", path))?;
    Ok(listener)
}

fn remove_stale_socket(path: &Path) -> Result<(), SetupError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("inspect", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(SetupError::NotASocket(path.to_owned()));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        let what = format!("it answers on {}", path.display());
        return Err(SetupError::AlreadyRunning { what, pid: "<pid>".into() });
    }
    fs::remove_file(path).map_err(io_err("remove stale socket", path))
}

/// Removes the admin socket and pid file on shutdown (never the `agent/`
/// dir; the agent socket is `AgentDir::shutdown`'s, through its handle).
pub fn cleanup(paths: &Paths) {
    let sock = &paths.admin_socket;
    if fs::symlink_metadata(sock).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = fs::remove_file(sock);
    }
    let _ = fs::remove_file(&paths.pid_file);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &Path) -> Paths {
        Paths::new(&NodeOptions {
            state_dir: dir.join("state"),
            run_dir: dir.join("run"),
            docker_socket: "/nonexistent".into(),
            access_log: None,
            access_log_options: Default::default(),
            watch_limits: Default::default(),
            conns_per_container: 64,
            resync_interval: std::time::Duration::from_secs(30),
            firewall: crate::firewall::select::Choice::Iptables,
            store: Default::default(),
            cluster_listen: None,
            metrics_addr: None,
        })
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn directories_get_their_modes() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        fs::create_dir_all(&p.state_dir).unwrap();
        fs::set_permissions(&p.state_dir, fs::Permissions::from_mode(0o755)).unwrap();
        prepare_dirs(&p).unwrap();
        assert_eq!(mode(&p.state_dir), 0o700);
        assert_eq!(mode(&p.run_dir), 0o755);
        assert_eq!(mode(&p.agent_dir), 0o755);
        assert_eq!(p.access_log, p.state_dir.join("access.log"));
    }

    #[test]
    fn a_file_where_a_directory_belongs_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        fs::write(&p.state_dir, b"x").unwrap();
        assert!(matches!(prepare_dirs(&p), Err(SetupError::NotADirectory(_))));
    }

    #[tokio::test]
    async fn stale_sockets_are_replaced_but_other_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("a.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        let live = bind_socket(&sock, 0o600).unwrap();
        assert_eq!(mode(&sock), 0o600);
        let err = bind_socket(&sock, 0o600).unwrap_err();
        assert!(matches!(err, SetupError::AlreadyRunning { .. }), "{err}");
        drop(live);
        let plain = dir.path().join("plain");
        fs::write(&plain, b"keep me").unwrap();
        let err = bind_socket(&plain, 0o600).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(fs::read(&plain).unwrap(), b"keep me");
    }

    #[test]
    fn only_one_pid_lock() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        prepare_dirs(&p).unwrap();
        let held = lock_pid_file(&p).unwrap();
        let err = lock_pid_file(&p).unwrap_err();
        assert!(err.to_string().contains(&format!("pid {}", std::process::id())), "{err}");
        drop(held);
        lock_pid_file(&p).unwrap();
    }
}
