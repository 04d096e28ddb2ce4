//! The accept loop shared by both sockets: one task per connection, a cap
//! on concurrent connections (overall and, on the agent socket, per
//! container), and hyper's HTTP/1 limits so a slow or malformed client only
//! ever ties up its own task. A handler can [`Hangup`] its own connection,
//! which drops it even while a write to a client that does not read is
//! pending (how stalled watch streams are cut off).

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::hangup::Hangup;
use super::http::Resp;

/// Largest request head (request line + headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// A request head must arrive within this time; it also bounds how long an
/// idle keep-alive connection is kept.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Concurrent connections on the admin socket; more are answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 1024;
/// Open sockets on the agent socket, whatever their state: a bound on file
/// descriptors (identified connections have their own, smaller budgets).
pub const AGENT_MAX_OPEN: usize = 8192;
/// Concurrent agent connections from one container.
pub const DEFAULT_CONNS_PER_CONTAINER: usize = 512;

/// Who is on the other end of a connection (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: Option<i32>,
    pub uid: u32,
}

pub(super) const BUSY: &str =
    r#"{"code":"busy","error":"too many connections to this socket; retry shortly"}"#;

/// Accepts connections forever; `make` builds the per-connection service
/// from the peer's credentials and the connection's [`Hangup`]. Cancel by
/// aborting the task.
pub async fn serve<M, S>(listener: UnixListener, socket: &'static str, max_conns: usize, make: M)
where
    M: Fn(Peer, Hangup) -> S,
    S: Service<Request<Incoming>, Response = Resp, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_conns));
    loop {
        let (stream, permit) = next_connection(&listener, socket, &slots).await;
        let peer = match stream.peer_cred() {
            Ok(cred) => Peer { pid: cred.pid(), uid: cred.uid() },
            Err(err) => {
                tracing::warn!("{socket} socket: cannot read peer credentials: {err}; closing");
                continue;
            }
        };
        let hangup = Hangup::default();
        let service = make(peer, hangup.clone());
        tokio::spawn(async move {
            let _slot = permit;
            tokio::select! {
                done = builder().serve_connection(TokioIo::new(stream), service) => if let Err(err) = done {
                    tracing::debug!("{socket} socket: connection from pid {:?} ended: {err}", peer.pid);
                },
                () = hangup.wait() => tracing::debug!("{socket} socket: hung up on pid {:?}", peer.pid),
            }
        });
    }
}

/// The next connection that gets one of `slots`. Connections over the cap
/// are answered `503 busy` and closed without a log line each (a storm must
/// not fill the log); accept errors (usually EMFILE) back off instead of
/// spinning.
pub(super) async fn next_connection(
    listener: &UnixListener,
    socket: &str,
    slots: &Arc<Semaphore>,
) -> (UnixStream, OwnedSemaphorePermit) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!("{socket} socket: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => return (stream, permit),
            Err(_) => drop(tokio::spawn(refuse_busy(stream, BUSY))),
        }
    }
}

pub(super) fn builder() -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .keep_alive(true)
        // Queue body buffers instead of copying them into hyper's header
        // buffer: secret values then stay in their own wiped allocation.
        .writev(true);
    b
}

pub(super) async fn refuse_busy(mut stream: UnixStream, body: &'static str) {
    let msg = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(msg.as_bytes())).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::http::{json, Failure};
    use hyper::service::service_fn;
    use hyper::StatusCode;
    use tokio::io::AsyncReadExt;

    async fn start(max: usize) -> (tempfile::TempDir, std::path::PathBuf, tokio::task::JoinHandle<()>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let task = tokio::spawn(serve(listener, "test", max, |peer: Peer, _hangup| {
            service_fn(move |req: Request<Incoming>| async move {
                let resp = if req.uri().path() == "/peer" {
                    json(StatusCode::OK, &serde_json::json!({"uid": peer.uid, "pid": peer.pid}))
                } else {
                    Failure::bad_request("x").into_response()
                };
                Ok::<_, Infallible>(resp)
            })
        }));
        (dir, path, task)
    }

    async fn raw(path: &std::path::Path, req: &[u8]) -> String {
        let mut s = UnixStream::connect(path).await.unwrap();
        s.write_all(req).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn passes_peer_credentials() {
        let (_d, path, task) = start(4).await;
        let out = raw(&path, b"GET /peer HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains(&format!("\"pid\":{}", std::process::id())), "{out}");
        task.abort();
    }

    #[tokio::test]
    async fn malformed_and_oversized_heads_are_refused() {
        let (_d, path, task) = start(4).await;
        let out = raw(&path, b"this is not http\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        let mut big = b"GET /peer HTTP/1.1\r\nx-pad: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD + 100));
        big.extend(b"\r\n\r\n");
        let out = raw(&path, &big).await;
        assert!(out.starts_with("HTTP/1.1 431"), "{out}");
        task.abort();
    }

    #[tokio::test]
    async fn a_silent_client_does_not_block_others_and_is_dropped() {
        let (_d, path, task) = start(4).await;
        let mut silent = UnixStream::connect(&path).await.unwrap();
        silent.write_all(b"GET /peer HTTP/1.1\r\n").await.unwrap();
        let out = raw(&path, b"GET /peer HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        let mut rest = Vec::new();
        let started = std::time::Instant::now();
        let _ = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut rest)).await;
        assert!(started.elapsed() < Duration::from_secs(8), "slow client kept for {:?}", started.elapsed());
        task.abort();
    }

    #[tokio::test]
    async fn a_handler_that_hangs_up_closes_its_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let task = tokio::spawn(serve(listener, "test", 16, |_peer, hangup: Hangup| {
            service_fn(move |req: Request<Incoming>| {
                let hangup = hangup.clone();
                async move {
                    if req.uri().path() == "/hangup" {
                        hangup.hang_up();
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, Infallible>(json(StatusCode::OK, &"ok"))
                }
            })
        }));
        // A handler that hangs up closes its connection without answering.
        let started = std::time::Instant::now();
        let out = raw(&path, b"GET /hangup HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert!(out.is_empty() && started.elapsed() < Duration::from_secs(2), "{out}");
        task.abort();
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_told_to_retry() {
        let (_d, path, task) = start(1).await;
        let _held = UnixStream::connect(&path).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let out = raw(&path, b"GET /peer HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 503") && out.contains("\"busy\""), "{out}");
        task.abort();
    }
}
