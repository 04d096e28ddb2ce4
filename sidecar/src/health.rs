//! Health reporting over an abstract unix socket.
//!
//! Abstract sockets live in the network namespace, not the filesystem: they
//! need no writable path on a read-only rootfs, and `docker exec … health`
//! runs in the container's namespace, so it works with `network_mode: none`.
//! The server writes one line and closes; it never reads from the client.

use crate::lease::{Lease, Phase};
use seg_common::name::SecretName;
use std::io::{self, Read};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener as StdListener, UnixStream as StdStream};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio::time::Instant;

pub const DEFAULT_SOCKET: &str = "seg-sidecar.health";

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("cannot listen on the abstract health socket @{name}: {cause}; another sidecar in this network namespace may hold it — set a distinct --health-socket (SEG_HEALTH_SOCKET)")]
    Bind { name: String, cause: io::Error },
    #[error("not running: cannot connect to the health socket @{name}: {cause}")]
    Connect { name: String, cause: io::Error },
    #[error("no answer on the health socket @{name}: {cause}")]
    Read { name: String, cause: io::Error },
}

/// Binds the abstract socket `name`. Must run inside a tokio runtime.
pub fn bind(name: &str) -> Result<UnixListener, HealthError> {
    let err = |cause| HealthError::Bind { name: name.to_owned(), cause };
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).map_err(err)?;
    let std = StdListener::bind_addr(&addr).map_err(err)?;
    std.set_nonblocking(true).map_err(err)?;
    UnixListener::from_std(std).map_err(err)
}

/// Answers every connection with the current status line.
pub async fn serve(listener: UnixListener, status: impl Fn() -> String) {
    loop {
        let mut stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // E.g. EMFILE: do not spin.
                tracing::warn!("health socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let line = format!("{}\n", status());
        // One short line fits in the socket buffer; never wait long on a
        // client that does not read.
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(line.as_bytes())).await;
    }
}

/// Asks a running sidecar for its status line. Returns (healthy, line).
pub fn query(name: &str, timeout: Duration) -> Result<(bool, String), HealthError> {
    let addr = SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|cause| HealthError::Connect { name: name.to_owned(), cause })?;
    let stream = StdStream::connect_addr(&addr)
        .map_err(|cause| HealthError::Connect { name: name.to_owned(), cause })?;
    let read_err = |cause| HealthError::Read { name: name.to_owned(), cause };
    stream.set_read_timeout(Some(timeout)).map_err(read_err)?;
    let mut raw = Vec::with_capacity(256);
    stream.take(4096).read_to_end(&mut raw).map_err(read_err)?;
    let line = String::from_utf8_lossy(&raw).lines().next().unwrap_or("").trim().to_owned();
    if line.is_empty() {
        return Err(read_err(io::Error::new(io::ErrorKind::UnexpectedEof, "empty answer")));
    }
    Ok((is_ok(&line), line))
}

pub fn is_ok(line: &str) -> bool {
    line == "ok" || line.starts_with("ok:")
}

/// How far discovery of granted secrets has got (when no list was given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// Secrets were named on the command line.
    Off,
    /// `GET /v1/secrets` has not succeeded yet.
    NotYet,
    Done,
}

/// One secret as health sees it.
pub struct Entry<'a> {
    pub name: &'a SecretName,
    pub lease: &'a Lease,
    pub on_disk: bool,
}

/// The status line: `ok: …` when every requested secret is on disk within
/// its lease, else what is missing, e.g. `waiting: db not fetched yet`.
pub fn summarize(discovery: Discovery, entries: &[Entry<'_>], now: Instant) -> String {
    if discovery == Discovery::NotYet {
        return "waiting: the list of granted secrets was not fetched yet".to_owned();
    }
    if entries.is_empty() {
        return match discovery {
            Discovery::Off => "waiting: no secrets requested".to_owned(),
            _ => "waiting: no secrets are granted to this container".to_owned(),
        };
    }
    let problems: Vec<String> = entries.iter().filter_map(|e| problem(e, now)).collect();
    if problems.is_empty() {
        let n = entries.len();
        format!("ok: {n} secret{} on disk", if n == 1 { "" } else { "s" })
    } else {
        problems.join("; ")
    }
}

fn problem(e: &Entry<'_>, now: Instant) -> Option<String> {
    let name = e.name;
    match &e.lease.phase {
        Phase::Pending => Some(format!("waiting: {name} not fetched yet")),
        Phase::Expired => Some(format!("expired: {name} (lease ran out, agent unreachable)")),
        Phase::Refused(code) => Some(format!("refused: {name} ({code})")),
        Phase::Live if e.lease.valid_until(now).is_none() => Some(format!("expired: {name}")),
        Phase::Live if !e.on_disk => Some(format!("missing: {name} was removed from disk")),
        Phase::Live => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(now: Instant) -> Lease {
        let mut l = Lease::default();
        l.renewed(now, 1, Duration::from_secs(60), &mut fastrand::Rng::with_seed(1));
        l
    }

    #[test]
    fn summary_lines() {
        let now = Instant::now();
        let (a, b) = (SecretName::parse("a").unwrap(), SecretName::parse("b").unwrap());
        let (ok, pending) = (live(now), Lease::default());
        let e = |name, lease, on_disk| Entry { name, lease, on_disk };
        assert_eq!(summarize(Discovery::Done, &[e(&a, &ok, true)], now), "ok: 1 secret on disk");
        assert_eq!(
            summarize(Discovery::NotYet, &[], now),
            "waiting: the list of granted secrets was not fetched yet"
        );
        assert!(summarize(Discovery::Done, &[], now).starts_with("waiting: no secrets"));
        let line = summarize(Discovery::Off, &[e(&a, &ok, true), e(&b, &pending, false)], now);
        assert_eq!(line, "waiting: b not fetched yet");
        assert!(!is_ok(&line));
        let late = now + Duration::from_secs(61);
        assert_eq!(summarize(Discovery::Off, &[e(&a, &ok, true)], late), "expired: a");
        assert!(summarize(Discovery::Off, &[e(&a, &ok, false)], now).starts_with("missing: a"));
        let mut refused = Lease::default();
        refused.refused(now, "not_granted");
        assert_eq!(summarize(Discovery::Off, &[e(&a, &refused, false)], now), "refused: a (not_granted)");
    }

    #[tokio::test]
    async fn query_reads_the_served_line() {
        let name = format!("seg-sidecar-test-{}-{}", std::process::id(), fastrand::u64(..));
        let listener = bind(&name).unwrap();
        assert!(matches!(bind(&name), Err(HealthError::Bind { .. })), "a second bind succeeded");
        tokio::spawn(serve(listener, || "ok: 2 secrets on disk".to_owned()));
        let q = name.clone();
        let got = tokio::task::spawn_blocking(move || query(&q, Duration::from_secs(2))).await.unwrap();
        assert_eq!(got.unwrap(), (true, "ok: 2 secrets on disk".to_owned()));
        let err = query(&format!("{name}-absent"), Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().starts_with("not running"), "{err}");
    }
}
