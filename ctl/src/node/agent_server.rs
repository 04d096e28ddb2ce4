//! The agent socket's accept loop. Per connection, in this order:
//!
//! 1. **pin** the peer ([`PinnedPeer`]: its pidfd) — the identity can only
//!    ever be that of the process that connected;
//! 2. **identify** it, once, with a short deadline, inside the small
//!    identifying budget ([`Gate`]);
//! 3. a caller that could not be identified gets one answer and is hung up
//!    on (its connection is never identified again);
//! 4. an identified caller takes a slot of its container's budget and is
//!    served until it closes, the process that connected exits (its pidfd
//!    polls readable), or its container dies ([`Gate::cut_container`]).
//!
//! The accept loop itself does no work per connection but `accept`, so a
//! connection storm cannot fill the listen backlog behind a slow loop.

use super::agent::{Agent, AgentConn};
use super::gate::{Full, Gate};
use super::hangup::Hangup;
use super::server::{builder, next_connection, refuse_busy, AGENT_MAX_OPEN};
use crate::attest::{PinError, PinnedPeer};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

/// Listen backlog: a burst of connects must queue, not fail with EAGAIN,
/// while the loop drains it (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

const BUSY_IDENTIFYING: &str =
    r#"{"code":"busy","error":"too many connections are being identified; retry shortly"}"#;
const BUSY_CONTAINER: &str =
    r#"{"code":"busy","error":"too many connections from this container; close some and retry"}"#;
const SLOW_IDENTIFY: &str =
    r#"{"code":"busy","error":"identifying the caller took too long (is Docker slow?); retry shortly"}"#;

/// Accepts connections forever. Cancel by aborting the task.
pub async fn serve(listener: UnixListener, agent: Arc<Agent>, gate: Arc<Gate>) {
    if let Err(err) = rustix::net::listen(&listener, BACKLOG) {
        tracing::warn!("agent socket: cannot raise the listen backlog to {BACKLOG}: {err}");
    }
    let open = Arc::new(Semaphore::new(AGENT_MAX_OPEN));
    loop {
        let (stream, permit) = next_connection(&listener, "agent", &open).await;
        let (agent, gate) = (agent.clone(), gate.clone());
        tokio::spawn(async move {
            let _open = permit;
            connection(stream, agent, gate).await;
        });
    }
}

async fn connection(stream: UnixStream, agent: Arc<Agent>, gate: Arc<Gate>) {
    let peer = match PinnedPeer::pin(&stream, &gate.proc_root) {
        Ok(peer) => peer,
        // The connecting process is already gone: whoever holds the socket
        // now is not who connected. Nothing to say to it.
        Err(PinError::Gone) => return,
        Err(err) => {
            tracing::debug!("agent socket: cannot pin a caller: {err}");
            return;
        }
    };
    let key = gate.key_of(peer.pid, peer.uid);
    if gate.flooding(&key) {
        // Refused over and over just now: close without a word (cheap).
        return;
    }
    let identifying = match gate.identifying(&key).await {
        Ok(slot) => slot,
        Err(_) => return refuse_busy(stream, BUSY_IDENTIFYING).await,
    };
    let conn = Arc::new(AgentConn::pinned(peer, Hangup::default()));
    let began = std::time::Instant::now();
    let decided = tokio::time::timeout(gate.limits.identify_deadline, agent.identify_conn(&conn)).await;
    drop(identifying);
    tracing::debug!(pid = conn.pid(), took = ?began.elapsed(), ok = matches!(decided, Ok(Ok(_))), "agent socket: identification decided");
    let container = match decided {
        Err(_) => return refuse_busy(stream, SLOW_IDENTIFY).await,
        Ok(Ok(who)) => who.container_id.clone(),
        Ok(Err(_)) => {
            gate.note_refusal(&key);
            return serve_refused(stream, agent, conn, gate.limits.refused_deadline).await;
        }
    };
    let _slot = match gate.identified(&container) {
        Ok(slot) => slot,
        Err(Full::Container | Full::Identifying) => return refuse_busy(stream, BUSY_CONTAINER).await,
    };
    let _registration = gate.register(&container, conn.hangup.clone());
    serve_identified(stream, agent, conn).await;
}

/// One answer (the refusal), then the connection is closed — or dropped at
/// the deadline if the caller sends nothing.
async fn serve_refused(stream: UnixStream, agent: Arc<Agent>, conn: Arc<AgentConn>, deadline: Duration) {
    let service = service(agent, conn);
    let _ = tokio::time::timeout(deadline, builder().serve_connection(TokioIo::new(stream), service)).await;
}

async fn serve_identified(stream: UnixStream, agent: Arc<Agent>, conn: Arc<AgentConn>) {
    let service = service(agent, conn.clone());
    let pid = conn.pid();
    tokio::select! {
        done = builder().serve_connection(TokioIo::new(stream), service) => if let Err(err) = done {
            tracing::debug!("agent socket: connection from pid {pid} ended: {err}");
        },
        () = conn.hangup.wait() => tracing::debug!("agent socket: hung up on pid {pid}"),
        () = conn.peer_exited() => {
            tracing::debug!("agent socket: pid {pid} exited; its connection is closed with it");
        }
    }
}

fn service(
    agent: Arc<Agent>,
    conn: Arc<AgentConn>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = super::http::Resp,
    Error = Infallible,
    Future = impl Send,
> {
    service_fn(move |req| {
        let (agent, conn) = (agent.clone(), conn.clone());
        async move { Ok::<_, Infallible>(agent.handle(&conn, req).await) }
    })
}
