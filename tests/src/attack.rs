//! What the security tests need to play the attacker: the static
//! `seg-attack` binary (built by `scripts/build-images`), a drop socket that
//! receives a connection handed over with `SCM_RIGHTS`, and raw HTTP on it.

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The static `seg-attack` (runs on the host and in FROM-scratch containers).
pub fn attack_bin() -> PathBuf {
    let dir = std::env::var_os("SEG_STATIC_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target/static"));
    let bin = dir.join("x86_64-unknown-linux-gnu/release/seg-attack");
    assert!(bin.is_file(), "{} is missing: run scripts/build-images", bin.display());
    bin
}

/// A unix socket anyone may connect to, where handed-over connections arrive.
pub struct DropSocket {
    pub dir: tempfile::TempDir,
    listener: UnixListener,
}

impl Default for DropSocket {
    fn default() -> Self {
        DropSocket::new()
    }
}

impl DropSocket {
    pub fn new() -> DropSocket {
        let dir = tempfile::Builder::new().prefix("seg-e2e-drop-").tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let listener = UnixListener::bind(dir.path().join("drop.sock")).expect("bind the drop socket");
        std::fs::set_permissions(dir.path().join("drop.sock"), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        DropSocket { dir, listener }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("drop.sock")
    }

    /// The next connection handed over (waits at most `within`).
    pub fn receive(&self, within: Duration) -> UnixStream {
        self.listener.set_nonblocking(true).expect("nonblocking");
        let started = std::time::Instant::now();
        let courier = loop {
            match self.listener.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(started.elapsed() < within, "nothing was handed over within {within:?}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept on the drop socket: {e}"),
            }
        };
        courier.set_nonblocking(false).expect("blocking");
        courier.set_read_timeout(Some(within)).expect("timeout");
        let mut buf = [0u8; 16];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(courier.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())
            .expect("recvmsg on the drop socket");
        for cmsg in msg.cmsgs().expect("control messages") {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                let fd = fds[0];
                // unsafe_code is denied workspace-wide; allowed here: taking ownership of a descriptor received over SCM_RIGHTS.
                #[allow(unsafe_code)]
                // The kernel just gave us this descriptor; nobody else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                return UnixStream::from(owned);
            }
        }
        panic!("the courier sent no descriptor");
    }
}

/// `GET path` on an open connection (kept alive): status and body, or why
/// there was no answer (the controller closed the connection, say).
pub fn get_on(conn: &mut UnixStream, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(conn, "GET {path} HTTP/1.1\r\nhost: seg\r\n\r\n")?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed by the controller"));
        }
        got.extend_from_slice(&buf[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while got.len() < end + 4 + len {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        return Ok((status, got[end + 4..].to_vec()));
    }
}

/// Whether `pid`'s cgroup names container `id`.
pub fn pid_in_container(pid: u32, id: &str) -> bool {
    std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("cgroup"))
        .is_ok_and(|c| c.contains(id))
}
