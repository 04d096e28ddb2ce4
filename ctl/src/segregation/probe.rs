//! Probing a real flow from inside a container's network namespace: a
//! short-lived thread `setns()`es into `/proc/<pid>/ns/net` (only that
//! thread moves; it ends after the probe) and opens a TCP connection with a
//! short timeout. A SYN-ACK or an RST means the packet got through the
//! firewall (nothing needs to listen); a timeout means it was dropped.

use super::api::Reach;
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

/// How many probes run at once.
pub const PARALLEL: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The network namespace to probe from (`/proc/<pid>/ns/net`).
    pub netns: PathBuf,
    pub addr: SocketAddr,
}

impl Target {
    pub fn from_pid(pid: u32, addr: SocketAddr) -> Target {
        Target { netns: PathBuf::from(format!("/proc/{pid}/ns/net")), addr }
    }
}

/// One probe, on its own thread; blocks for at most about `timeout`.
pub fn probe(target: &Target, timeout: Duration) -> (Reach, String) {
    let t = target.clone();
    let handle = std::thread::Builder::new().name("seg-probe".into()).spawn(move || probe_here(&t, timeout));
    match handle.map(|h| h.join()) {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => (Reach::Unknown, "the probe thread panicked".into()),
        Err(e) => (Reach::Unknown, format!("cannot start a probe thread: {e}")),
    }
}

/// Many probes, [`PARALLEL`] at a time; results in input order.
pub fn probe_all(targets: &[Target], timeout: Duration) -> Vec<(Reach, String)> {
    let mut out = Vec::with_capacity(targets.len());
    for chunk in targets.chunks(PARALLEL) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|t| {
                let t = t.clone();
                std::thread::Builder::new().name("seg-probe".into()).spawn(move || probe_here(&t, timeout))
            })
            .collect();
        for h in handles {
            out.push(match h.map(|h| h.join()) {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => (Reach::Unknown, "the probe thread panicked".into()),
                Err(e) => (Reach::Unknown, format!("cannot start a probe thread: {e}")),
            });
        }
    }
    out
}

/// Runs on a dedicated thread: enters the namespace, connects.
fn probe_here(t: &Target, timeout: Duration) -> (Reach, String) {
    let ns = match std::fs::File::open(&t.netns) {
        Ok(f) => f,
        Err(e) => return (Reach::Unknown, format!("cannot open {}: {e}", t.netns.display())),
    };
    if let Err(e) = move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network)) {
        return (Reach::Unknown, format!("cannot enter {}: {e}", t.netns.display()));
    }
    classify(TcpStream::connect_timeout(&t.addr, timeout).map(drop))
}

/// What a connect attempt says about the path.
pub fn classify(result: std::io::Result<()>) -> (Reach, String) {
    match result {
        Ok(()) => (Reach::Reachable, "connected".into()),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            (Reach::Reachable, "refused (RST): not listening".into())
        }
        Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            (Reach::Blocked, "timeout".into())
        }
        Err(e) if matches!(e.kind(), ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable) => {
            (Reach::Blocked, format!("unreachable: {e}"))
        }
        Err(e) => (Reach::Unknown, format!("connect failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn outcomes_are_classified() {
        assert_eq!(classify(Ok(())).0, Reach::Reachable);
        assert_eq!(classify(Err(ErrorKind::ConnectionRefused.into())).0, Reach::Reachable);
        assert_eq!(classify(Err(ErrorKind::TimedOut.into())).0, Reach::Blocked);
        assert_eq!(classify(Err(ErrorKind::HostUnreachable.into())).0, Reach::Blocked);
        assert_eq!(classify(Err(ErrorKind::PermissionDenied.into())).0, Reach::Unknown);
    }

    #[test]
    fn probes_from_our_own_namespace() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        drop(listener);
        let listener = TcpListener::bind(open).unwrap();
        let own = format!("/proc/{}/ns/net", std::process::id());
        let target = |addr| Target { netns: own.clone().into(), addr };
        let results = probe_all(&[target(open)], Duration::from_millis(500));
        assert_eq!(results[0].0, Reach::Reachable, "{results:?}");
        drop(listener);
        assert_eq!(probe(&target(open), Duration::from_millis(500)).1, "refused (RST): not listening");
        let missing = Target { netns: "/proc/0/ns/net".into(), addr: open };
        assert_eq!(probe(&missing, Duration::from_millis(100)).0, Reach::Unknown);
    }
}
