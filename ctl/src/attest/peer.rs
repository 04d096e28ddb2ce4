//! A caller pinned when its connection is accepted.
//!
//! `SO_PEERCRED` only gives a PID *number*, taken when the peer called
//! `connect`. The number outlives the process: a caller can connect, hand
//! the socket to a helper (`SCM_RIGHTS`) and exit, and when a process of a
//! granted container later gets the same number, a lookup by number finds
//! that container. So the peer is pinned by a **pidfd** (`SO_PEERPIDFD`,
//! Linux 6.5+): it names the process that connected, never a successor.
//!
//! With a pidfd, a `/proc/<pid>` read is trusted only if the process is
//! still running *after* the read (its pidfd does not poll readable): a PID
//! number is only freed once its process has exited and been reaped, so a
//! running process proves the number was not reused in between. Without pidfds (older kernels) the start time of `/proc/<pid>/stat`
//! is compared before and after instead — weaker (a reuse within one clock
//! tick is invisible), which is why pidfds are preferred.
//!
//! The pidfd also becomes readable when the process exits: the agent server
//! waits on it and hangs up every connection of a caller that is gone, so a
//! connection passed on to an accomplice dies with the process that made it.

use super::procfs;
use nix::sys::socket::{getsockopt, sockopt};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use tokio::io::unix::AsyncFd;

/// How the peer is held.
enum Pin {
    /// A pidfd for the connecting process (readable once it exited).
    Pidfd(AsyncFd<OwnedFd>),
    /// No pidfd support: the process's start time at accept.
    StartTime(u64),
    /// Unit tests: a caller that is always alive.
    #[cfg(test)]
    Fixture,
}

/// The peer of an accepted connection: its PID (host PID namespace, as the
/// kernel reported it at connect time), its uid, and how it is pinned.
pub struct PinnedPeer {
    pub pid: i32,
    pub uid: u32,
    pin: Pin,
    proc_root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The process that connected has exited (or was never visible).
    #[error("the process that opened this connection has exited; connect from the process that makes the requests")]
    Gone,
    #[error("the caller's PID is not visible to the controller (it runs in another PID namespace); run the controller in the host PID namespace")]
    Invisible,
    #[error("cannot read the caller's credentials: {0}")]
    Credentials(io::Error),
}

impl std::fmt::Debug for PinnedPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pin = match self.pin {
            Pin::Pidfd(_) => "pidfd",
            Pin::StartTime(_) => "start-time",
            #[cfg(test)]
            Pin::Fixture => "fixture",
        };
        f.debug_struct("PinnedPeer").field("pid", &self.pid).field("uid", &self.uid).field("pin", &pin).finish()
    }
}

impl PinnedPeer {
    /// Pins the peer of `stream` (call right after `accept`; must run inside
    /// a tokio runtime, which watches the pidfd).
    pub fn pin(stream: &impl AsFd, proc_root: &Path) -> Result<PinnedPeer, PinError> {
        let cred = getsockopt(stream, sockopt::PeerCredentials)
            .map_err(|e| PinError::Credentials(io::Error::from(e)))?;
        let (pid, uid) = (cred.pid(), cred.uid());
        // SO_PEERCRED reports 0 for a peer outside our PID namespace.
        if pid <= 0 {
            return Err(PinError::Invisible);
        }
        let proc_root = proc_root.to_owned();
        let pin = match getsockopt(stream, sockopt::PeerPidfd) {
            Ok(fd) => Pin::Pidfd(seg_common::sys::watch_owned_fd(fd).map_err(PinError::Credentials)?),
            // Kernels before 6.5 do not know the option.
            Err(nix::errno::Errno::ENOPROTOOPT) => match procfs::read_start_time(&proc_root, pid) {
                Ok(started) => Pin::StartTime(started),
                Err(_) => return Err(PinError::Gone),
            },
            // The peer exited before we asked (ESRCH / EINVAL): nothing to pin.
            Err(_) => return Err(PinError::Gone),
        };
        let peer = PinnedPeer { pid, uid, pin, proc_root };
        if !peer.is_alive() {
            return Err(PinError::Gone);
        }
        Ok(peer)
    }

    /// Pins process `pid` itself (`pidfd_open`), for a caller known by PID
    /// rather than by a socket.
    pub fn open(pid: i32, uid: u32, proc_root: &Path) -> Result<PinnedPeer, PinError> {
        let raw = rustix::process::Pid::from_raw(pid).ok_or(PinError::Invisible)?;
        let fd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())
            .map_err(|_| PinError::Gone)?;
        let fd = seg_common::sys::watch_owned_fd(fd).map_err(PinError::Credentials)?;
        Ok(PinnedPeer { pid, uid, pin: Pin::Pidfd(fd), proc_root: proc_root.to_owned() })
    }

    /// Whether the process that connected is still alive — so its PID still
    /// names it. Call after reading `/proc/<pid>`: a `true` proves the read
    /// was of this process.
    /// One `poll` with a zero timeout: cheap enough for every request.
    pub fn is_alive(&self) -> bool {
        match &self.pin {
            Pin::Pidfd(fd) => !polls_readable(fd.get_ref()),
            Pin::StartTime(started) => {
                procfs::read_start_time(&self.proc_root, self.pid).is_ok_and(|now| now == *started)
            }
            #[cfg(test)]
            Pin::Fixture => true,
        }
    }

    /// A caller of the unit tests' fake identities (always alive).
    #[cfg(test)]
    pub fn fixture(pid: i32, uid: u32) -> PinnedPeer {
        PinnedPeer { pid, uid, pin: Pin::Fixture, proc_root: PathBuf::from("/nonexistent") }
    }

    /// A caller pinned by start time in a fixture proc tree (unit tests).
    #[cfg(test)]
    pub fn fixture_in(proc_root: &Path, pid: i32) -> Result<PinnedPeer, PinError> {
        let started = procfs::read_start_time(proc_root, pid).map_err(|_| PinError::Gone)?;
        Ok(PinnedPeer { pid, uid: 0, pin: Pin::StartTime(started), proc_root: proc_root.to_owned() })
    }

    /// Whether the peer is pinned by a pidfd (else by its start time).
    pub fn has_pidfd(&self) -> bool {
        matches!(self.pin, Pin::Pidfd(_))
    }

    /// Resolves when the process that connected has exited. Without a pidfd
    /// it never resolves (Docker's die events cut such connections instead).
    pub async fn exited(&self) {
        match &self.pin {
            Pin::Pidfd(fd) => {
                // A pidfd polls readable once the process has exited; it
                // stays readable, so no readiness is lost.
                let _ = fd.readable().await;
            }
            Pin::StartTime(_) => std::future::pending().await,
            #[cfg(test)]
            Pin::Fixture => std::future::pending().await,
        }
    }
}

/// Whether a pidfd polls readable, i.e. its process has exited. A poll
/// error counts as exited: refusing is the safe answer.
fn polls_readable(fd: &OwnedFd) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let now = Timespec { tv_sec: 0, tv_nsec: 0 };
    !matches!(poll(&mut fds, Some(&now)), Ok(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[tokio::test]
    async fn a_live_peer_is_pinned_by_pidfd_and_stays_alive() {
        let (a, _b) = UnixStream::pair().unwrap();
        let peer = PinnedPeer::pin(&a, Path::new("/proc")).unwrap();
        assert_eq!(peer.pid, std::process::id() as i32);
        assert!(peer.has_pidfd(), "this kernel has SO_PEERPIDFD");
        assert!(peer.is_alive());
        assert!(!format!("{peer:?}").is_empty());
    }

    /// A python3 child that connects to `path`, waits `secs` and exits.
    fn child_connecting(path: &Path, secs: f32) -> std::process::Child {
        let script = format!(
            "import socket,time; s=socket.socket(socket.AF_UNIX); s.connect({:?}); time.sleep({secs})",
            path.to_str().unwrap()
        );
        std::process::Command::new("python3")
            .args(["-c", &script])
            .spawn()
            .expect("python3 is needed by this test (Debian: apt-get install python3)")
    }

    #[tokio::test]
    async fn the_exit_of_the_connecting_process_is_seen_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mut child = child_connecting(&path, 0.5);
        let (server, _) = listener.accept().unwrap();
        let peer = PinnedPeer::pin(&server, Path::new("/proc")).unwrap();
        assert_eq!(peer.pid as u32, child.id());
        assert!(peer.is_alive());
        let exited = tokio::time::timeout(std::time::Duration::from_secs(5), peer.exited()).await;
        assert!(exited.is_ok(), "the exit was not seen");
        let _ = child.wait();
        assert!(!peer.is_alive(), "a reaped peer must not count as alive");
    }

    #[tokio::test]
    async fn a_peer_that_exited_before_accept_cannot_be_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mut child = child_connecting(&path, 0.0);
        child.wait().unwrap();
        let (server, _) = listener.accept().unwrap();
        let err = PinnedPeer::pin(&server, Path::new("/proc")).unwrap_err();
        assert!(matches!(err, PinError::Gone), "{err}");
    }
}
