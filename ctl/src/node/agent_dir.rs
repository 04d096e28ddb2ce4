//! The agent directory guard: no container can delete or replace
//! `agent.sock`, and the controller repairs it if a host process does.
//!
//! Containers run as root by default and a bind mount is read-write unless
//! `:ro` is written, so a plain directory is not enough. Once the socket is
//! bound, the directory is bind-mounted read-only onto itself: every later
//! bind of it (`-v /run/seg/agent:/a`, or `-v /run:/r`, which takes
//! submounts along) inherits the read-only flag, and connecting to a socket
//! needs no write access. The mount is left in place when the controller
//! stops (fail closed: nobody can plant a fake socket while it is down).
//!
//! The controller itself writes through a private handle: the agent
//! directory opened in a detached, non-recursive clone of the run dir's
//! mount (`open_tree(OPEN_TREE_CLONE)`). That clone has no read-only mount
//! on `agent/`, so a restart rebinds the socket without ever unmounting the
//! read-only view — there is no moment at which the directory is writable
//! for containers, and containers that bound it earlier see the new socket
//! (it is the same directory inode).
//!
//! Repair is a stat every [`CHECK_EVERY`] rather than inotify: it also sees
//! the read-only mount being removed or something mounted over the
//! directory, which inotify does not report, and costs two syscalls per tick.

use super::setup::{Paths, SetupError};
use rustix::fs::{AtFlags, Mode, OFlags, StatVfsMountFlags, CWD};
use rustix::mount::{MountFlags, OpenTreeFlags, UnmountFlags};
use seg_common::api::AgentSocketStatus;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

/// How often the guard checks the socket and the mount.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);
const SOCKET_NAME: &str = "agent.sock";
/// The agent socket is open to every container: attestation decides access.
const SOCKET_MODE: u32 = 0o666;
/// Anyone may reach the socket in it; only root may change it.
const AGENT_DIR_MODE: u32 = 0o755;

/// What the guard found (for `segctl status`).
#[derive(Debug, Default)]
pub struct Health {
    repairs: AtomicU64,
    read_only: AtomicBool,
    last_problem: Mutex<Option<String>>,
}

impl Health {
    pub fn report(&self) -> AgentSocketStatus {
        let repairs = self.repairs.load(Ordering::Relaxed);
        AgentSocketStatus {
            state: if repairs == 0 { "ok".into() } else { format!("repaired {repairs} time(s)") },
            repairs,
            read_only_dir: self.read_only.load(Ordering::Relaxed),
            last_problem: self.last_problem.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    fn repaired(&self, problem: &Problem) {
        self.repairs.fetch_add(1, Ordering::Relaxed);
        *self.last_problem.lock().unwrap_or_else(|p| p.into_inner()) = Some(problem.to_string());
    }
}

/// Something wrong with the directory, found by [`AgentDir::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No socket at the path (removed).
    Missing,
    /// Another file than the socket we bound is there.
    Replaced,
    /// The directory is writable (the read-only mount was removed).
    Writable,
    /// Something is mounted over the directory: the path no longer shows it.
    Shadowed,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Problem::Missing => "the agent socket was removed",
            Problem::Replaced => "the agent socket was replaced by another file",
            Problem::Writable => "the agent directory was made writable (read-only mount removed)",
            Problem::Shadowed => "something was mounted over the agent directory",
        })
    }
}

/// (device, inode) of a file.
type FileId = (u64, u64);

pub struct AgentDir {
    dir: PathBuf,
    socket: PathBuf,
    /// Keeps the detached clone of the run dir's mount attached to its fd.
    _tree: OwnedFd,
    /// The agent directory inside that clone: writable, never read-only.
    rw: OwnedFd,
    bound: Mutex<FileId>,
    health: Arc<Health>,
}

impl AgentDir {
    /// Binds the agent socket and makes the directory read-only (order: the
    /// socket must exist before the directory stops being writable).
    pub fn secure(paths: &Paths) -> Result<(Arc<AgentDir>, UnixListener), SetupError> {
        let (tree, rw) = open_private_handle(&paths.run_dir, &paths.agent_dir)?;
        let mut me = AgentDir {
            dir: paths.agent_dir.clone(),
            socket: paths.agent_socket.clone(),
            _tree: tree,
            rw,
            bound: Mutex::new((0, 0)),
            health: Arc::default(),
        };
        me.remove_stale_socket()?;
        let (listener, id) = me.bind()?;
        *me.bound.get_mut().unwrap_or_else(|p| p.into_inner()) = id;
        // Before the read-only mount, which would otherwise land on top of
        // whatever hides the directory.
        if me.public_id() != Some(id) {
            let _ = me.unlink();
            return Err(SetupError::Shadowed(me.dir.clone()));
        }
        me.make_read_only()?;
        Ok((Arc::new(me), listener))
    }

    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// The socket through the private handle (`/proc/self/fd/N/agent.sock`):
    /// a path that resolves into the writable clone.
    fn rw_socket_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/{SOCKET_NAME}", self.rw.as_raw_fd()))
    }

    fn rw_id(&self) -> Option<(FileId, bool)> {
        let st = rustix::fs::statat(&self.rw, SOCKET_NAME, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        let is_socket = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Socket;
        Some(((st.st_dev, st.st_ino), is_socket))
    }

    /// What containers and host clients reach at the socket's path.
    fn public_id(&self) -> Option<FileId> {
        let st = rustix::fs::lstat(&self.socket).ok()?;
        Some((st.st_dev, st.st_ino))
    }

    /// A leftover socket nobody answers on is removed; a live one means
    /// another controller; any other file is kept and refused.
    fn remove_stale_socket(&self) -> Result<(), SetupError> {
        let Some((_, is_socket)) = self.rw_id() else { return Ok(()) };
        if !is_socket {
            return Err(SetupError::NotASocket(self.socket.clone()));
        }
        if std::os::unix::net::UnixStream::connect(self.rw_socket_path()).is_ok() {
            let what = format!("it answers on {}", self.socket.display());
            return Err(SetupError::AlreadyRunning { what, pid: "<pid>".into() });
        }
        self.unlink().map_err(|e| io_err("remove stale socket", &self.socket, e))
    }

    fn unlink(&self) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(&self.rw, SOCKET_NAME, AtFlags::empty())?)
    }

    fn bind(&self) -> Result<(UnixListener, FileId), SetupError> {
        let err = |action, e| io_err(action, &self.socket, e);
        let std =
            std::os::unix::net::UnixListener::bind(self.rw_socket_path()).map_err(|e| err("bind", e))?;
        // Before the first accept, so no client ever sees another mode.
        rustix::fs::chmodat(&self.rw, SOCKET_NAME, Mode::from_raw_mode(SOCKET_MODE), AtFlags::empty())
            .map_err(|e| err("chmod", e.into()))?;
        std.set_nonblocking(true).map_err(|e| err("configure", e))?;
        let listener = UnixListener::from_std(std).map_err(|e| err("listen on", e))?;
        let (id, _) = self.rw_id().ok_or_else(|| err("inspect", io::ErrorKind::NotFound.into()))?;
        Ok((listener, id))
    }

    fn is_read_only(&self) -> bool {
        rustix::fs::statvfs(&self.dir).is_ok_and(|s| s.f_flag.contains(StatVfsMountFlags::RDONLY))
    }

    /// Bind-mounts the directory read-only onto itself unless it already is
    /// read-only (a mount left by a previous run is kept, not stacked).
    fn make_read_only(&self) -> Result<(), SetupError> {
        if !self.is_read_only() {
            let err = |action, e: rustix::io::Errno| SetupError::Mount {
                action,
                path: self.dir.clone(),
                err: e.into(),
            };
            rustix::mount::mount_bind(&self.dir, &self.dir).map_err(|e| err("bind-mount", e))?;
            let flags = MountFlags::BIND
                | MountFlags::RDONLY
                | MountFlags::NOSUID
                | MountFlags::NODEV
                | MountFlags::NOEXEC;
            if let Err(e) = rustix::mount::mount_remount(&self.dir, flags, "") {
                // Never leave a writable extra mount behind.
                let _ = rustix::mount::unmount(&self.dir, UnmountFlags::DETACH);
                return Err(err("remount read-only", e));
            }
        }
        self.health.read_only.store(self.is_read_only(), Ordering::Relaxed);
        Ok(())
    }

    /// The first problem found, if any.
    pub fn check(&self) -> Option<Problem> {
        let bound = *self.bound.lock().unwrap_or_else(|p| p.into_inner());
        match self.rw_id() {
            None => return Some(Problem::Missing),
            Some((id, _)) if id != bound => return Some(Problem::Replaced),
            Some(_) => {}
        }
        if self.public_id() != Some(bound) {
            return Some(Problem::Shadowed);
        }
        (!self.is_read_only()).then_some(Problem::Writable)
    }

    /// Fixes `problem`; a new listener when the socket had to be rebound.
    /// Counted (for `segctl status`) once it worked.
    pub fn repair(&self, problem: &Problem) -> Result<Option<UnixListener>, SetupError> {
        let fixed = match problem {
            Problem::Missing | Problem::Replaced => {
                self.move_aside_intruder()?;
                let (listener, id) = self.bind()?;
                *self.bound.lock().unwrap_or_else(|p| p.into_inner()) = id;
                self.make_read_only()?;
                Some(listener)
            }
            Problem::Shadowed => {
                // Only the top mount hides the directory; ours lies beneath
                // (or is re-made by the next check).
                rustix::mount::unmount(&self.dir, UnmountFlags::DETACH).map_err(|e| match e {
                    // Nothing is mounted there: the path is another directory.
                    rustix::io::Errno::INVAL => SetupError::Recreated(self.dir.clone()),
                    e => SetupError::Mount {
                        action: "unmount what hides",
                        path: self.dir.clone(),
                        err: e.into(),
                    },
                })?;
                None
            }
            Problem::Writable => {
                self.make_read_only()?;
                None
            }
        };
        tracing::warn!("{problem} ({}); repaired", self.dir.display());
        self.health.repaired(problem);
        Ok(fixed)
    }

    /// A foreign socket is removed; any other file is renamed aside (kept,
    /// so nothing is lost), never followed.
    fn move_aside_intruder(&self) -> Result<(), SetupError> {
        let Some((_, is_socket)) = self.rw_id() else { return Ok(()) };
        let res = if is_socket {
            self.unlink()
        } else {
            let stamp =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let aside = format!("{SOCKET_NAME}.replaced-{stamp}");
            tracing::warn!("moving the file planted at {} to {aside}", self.socket.display());
            rustix::fs::renameat(&self.rw, SOCKET_NAME, &self.rw, aside.as_str()).map_err(io::Error::from)
        };
        res.map_err(|e| io_err("remove the file replacing", &self.socket, e))
    }

    /// Checks every [`CHECK_EVERY`] and repairs; `serve` starts serving a
    /// (re)bound listener. Aborting the returned task stops serving.
    pub fn spawn_guard<F>(self: &Arc<Self>, first: UnixListener, serve: F) -> JoinHandle<()>
    where
        F: Fn(UnixListener) -> JoinHandle<()> + Send + 'static,
    {
        let me = self.clone();
        tokio::spawn(async move {
            let mut serving = AbortOnDrop(serve(first));
            let mut tick = tokio::time::interval(CHECK_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // A failure that persists is logged once, not every tick.
            let mut last_failure = None;
            loop {
                tick.tick().await;
                let Some(problem) = me.check() else { continue };
                match me.repair(&problem) {
                    // Stops accepting on the old socket; open connections stay.
                    Ok(Some(listener)) => drop(std::mem::replace(&mut serving, AbortOnDrop(serve(listener)))),
                    Ok(None) => {}
                    Err(e) => {
                        let text = e.to_string();
                        if last_failure.as_ref() != Some(&text) {
                            tracing::error!("cannot repair the agent socket: {text}; retrying every 500 ms");
                        }
                        last_failure = Some(text);
                        continue;
                    }
                }
                last_failure = None;
            }
        })
    }

    /// On a clean stop: removes our socket, keeps the read-only mount.
    pub fn shutdown(&self) {
        let bound = *self.bound.lock().unwrap_or_else(|p| p.into_inner());
        if self.rw_id().is_some_and(|(id, _)| id == bound) {
            let _ = self.unlink();
        }
    }
}

/// Detaches the mounts on `<run_dir>/agent` that a stopped controller left
/// on purpose; how many. For tests' temp dirs and uninstalling (same as
/// `umount /run/seg/agent`); while a controller runs it would re-mount.
pub fn release(run_dir: &Path) -> usize {
    let dir = run_dir.join("agent");
    // Bounded: each call removes the top one; EINVAL once none is left.
    (0..16).take_while(|_| rustix::mount::unmount(&dir, UnmountFlags::DETACH).is_ok()).count()
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn io_err(action: &'static str, path: &Path, err: io::Error) -> SetupError {
    SetupError::Io { action, path: path.to_owned(), err }
}

/// The agent directory, opened in a detached non-recursive clone of the run
/// dir's mount: mounts on `agent/` (our read-only one) are not in the clone.
fn open_private_handle(run_dir: &Path, agent_dir: &Path) -> Result<(OwnedFd, OwnedFd), SetupError> {
    let flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    let tree = rustix::mount::open_tree(CWD, run_dir, flags).map_err(|e| SetupError::Mount {
        action: "clone the mount of",
        path: run_dir.to_owned(),
        err: e.into(),
    })?;
    let oflags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let rw = rustix::fs::openat(&tree, "agent", oflags, Mode::empty())
        .map_err(|e| io_err("open", agent_dir, e.into()))?;
    // Through the clone: the public path may already be read-only.
    rustix::fs::chmodat(&tree, "agent", Mode::from_raw_mode(AGENT_DIR_MODE), AtFlags::empty())
        .map_err(|e| io_err("chmod", agent_dir, e.into()))?;
    Ok((tree, rw))
}

#[cfg(test)]
#[path = "agent_dir_tests.rs"]
mod tests;
