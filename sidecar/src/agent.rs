//! Talking to the controller's agent socket (see `seg_common::api`).
//!
//! [`Source`] is the seam the renewal loop uses, so it can be tested with a
//! fake; [`Agent`] is the real thing over `seg_common::uds_http`, which reads
//! secret values straight into a [`SecretBytes`]. The watch stream
//! ([`Source::watch`]) carries names and versions only; values are always
//! fetched with [`Source::fetch`].

use seg_common::api::{
    self, AckRequest, ApiError, GrantedSecret, NotifyRequest, NotifyResult, SecretList, WatchEvent,
};
use seg_common::name::{SecretName, MAX_VALUE_LEN};
use seg_common::secret::SecretBytes;
use seg_common::uds_http::{self, ClientError, Request};
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// Largest non-secret (JSON) answer accepted: a list of many granted secrets.
const MAX_JSON_LEN: usize = 1024 * 1024;
/// Longest line of the watch stream (a hello listing many secrets).
const MAX_EVENT_LEN: usize = 1024 * 1024;

/// A secret value with its lease.
pub struct Fetched {
    pub value: SecretBytes,
    pub version: u64,
    pub ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent could not be reached or did not answer in time.
    #[error(transparent)]
    Unreachable(#[from] ClientError),
    /// A 4xx answer: the agent will not give this (e.g. `not_granted`,
    /// `not_found`, `not_a_container`). Files it covers must be wiped.
    #[error("the agent refused {what} ({status} {code}): {message}")]
    Refused { what: String, status: u16, code: String, message: String },
    /// A 5xx answer: the controller is in trouble; worth retrying.
    #[error("the agent failed on {what} ({status} {code}): {message}")]
    Failed { what: String, status: u16, code: String, message: String },
    /// A success answer we cannot use.
    #[error("unusable answer from the agent for {what}: {detail}")]
    Protocol { what: String, detail: String },
}

impl AgentError {
    /// The agent's error code when it refused, e.g. `not_granted`.
    pub fn refusal_code(&self) -> Option<&str> {
        match self {
            AgentError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status of a refusal or failure.
    pub fn status(&self) -> Option<u16> {
        match self {
            AgentError::Refused { status, .. } | AgentError::Failed { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The events of one open watch stream.
pub trait Events: Send + 'static {
    /// The next event; `None` when the controller ended the stream.
    fn next_event(&mut self) -> impl Future<Output = Result<Option<WatchEvent>, AgentError>> + Send;
}

/// Where secrets come from.
pub trait Source: Send + Sync + 'static {
    type Stream: Events;
    /// Opens the watch stream (`wants: None`: every granted secret).
    fn watch(
        &self,
        wants: Option<&[SecretName]>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Self::Stream, AgentError>> + Send;
    /// Reports the version of `name` now on disk.
    fn ack(
        &self,
        name: &SecretName,
        version: u64,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), AgentError>> + Send;
    /// Asks the controller to run the declared post-rotate action.
    fn notify(
        &self,
        req: &NotifyRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<NotifyResult, AgentError>> + Send;
    /// Secrets granted to this container.
    fn list(&self, timeout: Duration) -> impl Future<Output = Result<Vec<GrantedSecret>, AgentError>> + Send;
    /// One secret's value and lease.
    fn fetch(
        &self,
        name: &SecretName,
        timeout: Duration,
    ) -> impl Future<Output = Result<Fetched, AgentError>> + Send;
}

/// The controller's agent socket.
pub struct Agent {
    socket: PathBuf,
}

impl Agent {
    pub fn new(socket: PathBuf) -> Agent {
        Agent { socket }
    }
}

/// The watch stream of the real agent socket.
pub struct AgentEvents(uds_http::Stream);

impl Events for AgentEvents {
    async fn next_event(&mut self) -> Result<Option<WatchEvent>, AgentError> {
        loop {
            let Some(line) = self.0.next_line(MAX_EVENT_LEN).await? else { return Ok(None) };
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice(&line) {
                Ok(event) => return Ok(Some(event)),
                // A newer controller may send events this sidecar does not
                // know: skip them rather than drop the stream.
                Err(e) => tracing::debug!("skipping a watch event this sidecar does not understand: {e}"),
            }
        }
    }
}

impl Agent {
    /// A small JSON POST; answers the response for [`check_status`].
    async fn post(
        &self,
        path: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<uds_http::Response, ClientError> {
        let req = Request { method: "POST", path, content_type: "application/json", body };
        uds_http::send(&self.socket, &req, timeout, MAX_JSON_LEN).await
    }
}

impl Source for Agent {
    type Stream = AgentEvents;

    async fn watch(
        &self,
        wants: Option<&[SecretName]>,
        timeout: Duration,
    ) -> Result<AgentEvents, AgentError> {
        let path = match wants {
            Some(names) => {
                format!(
                    "/v1/watch?secrets={}",
                    names.iter().map(SecretName::as_str).collect::<Vec<_>>().join(",")
                )
            }
            None => "/v1/watch".to_owned(),
        };
        let mut stream = uds_http::open_stream(&self.socket, &Request::get(&path), timeout).await?;
        if stream.is_success() {
            return Ok(AgentEvents(stream));
        }
        let body = stream.read_to_end(64 * 1024).await.unwrap_or_default();
        Err(error_answer("the watch stream", stream.status, &body))
    }

    async fn ack(&self, name: &SecretName, version: u64, timeout: Duration) -> Result<(), AgentError> {
        let body = serde_json::to_vec(&AckRequest { name: name.clone(), version }).unwrap_or_default();
        let resp = self.post("/v1/ack", &body, timeout).await?;
        check_status(&resp, &format!("the acknowledgement of {name} v{version}"))
    }

    async fn notify(&self, req: &NotifyRequest, timeout: Duration) -> Result<NotifyResult, AgentError> {
        let what = "the post-rotate notification";
        let body = serde_json::to_vec(req).unwrap_or_default();
        let resp = self.post("/v1/notify", &body, timeout).await?;
        check_status(&resp, what)?;
        resp.json().map_err(|e| protocol(what, e.to_string()))
    }

    async fn list(&self, timeout: Duration) -> Result<Vec<GrantedSecret>, AgentError> {
        let what = "the list of granted secrets";
        let resp = uds_http::send(&self.socket, &Request::get("/v1/secrets"), timeout, MAX_JSON_LEN).await?;
        check_status(&resp, what)?;
        let list: SecretList = resp.json().map_err(|e| protocol(what, e.to_string()))?;
        Ok(list.secrets)
    }

    async fn fetch(&self, name: &SecretName, timeout: Duration) -> Result<Fetched, AgentError> {
        // SecretName's alphabet needs no percent-encoding.
        let path = format!("/v1/secrets/{name}");
        let resp = uds_http::send(&self.socket, &Request::get(&path), timeout, MAX_VALUE_LEN).await?;
        let what = || format!("secret {name}");
        check_status(&resp, &what())?;
        let version = header_u64(&resp, api::HDR_VERSION)
            .ok_or_else(|| protocol(&what(), format!("missing or bad {} header", api::HDR_VERSION)))?;
        let ttl_ms = header_u64(&resp, api::HDR_LEASE_MS)
            .ok_or_else(|| protocol(&what(), format!("missing or bad {} header", api::HDR_LEASE_MS)))?;
        // Trust the agent's lease only within the documented bounds.
        let ttl = Duration::from_millis(ttl_ms.clamp(api::MIN_TTL_MS, api::MAX_TTL_MS));
        Ok(Fetched { value: resp.body, version, ttl })
    }
}

fn protocol(what: &str, detail: String) -> AgentError {
    AgentError::Protocol { what: what.to_owned(), detail }
}

fn header_u64(resp: &uds_http::Response, name: &str) -> Option<u64> {
    resp.header(name)?.parse().ok()
}

/// Maps a non-2xx answer to an error. Only error bodies are parsed here,
/// never a secret value; the agent's message is shortened before it is
/// logged.
fn check_status(resp: &uds_http::Response, what: &str) -> Result<(), AgentError> {
    if resp.is_success() {
        return Ok(());
    }
    Err(error_answer(what, resp.status, resp.body.expose()))
}

/// The error a non-2xx answer with this (error) body means.
fn error_answer(what: &str, status: u16, body: &[u8]) -> AgentError {
    let (code, message) = match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => (e.code, e.error.chars().take(300).collect()),
        Err(_) => ("unknown".to_owned(), "(no error details in the answer)".to_owned()),
    };
    let what = what.to_owned();
    // 408/429 are "try again later", like 5xx.
    if (400..500).contains(&status) && status != 408 && status != 429 {
        AgentError::Refused { what, status, code, message }
    } else {
        AgentError::Failed { what, status, code, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixListener;

    /// Serves one canned answer on a fresh socket.
    async fn agent_answering(raw: &'static str) -> (tempfile::TempDir, Agent) {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            s.write_all(raw.as_bytes()).await.unwrap();
        });
        (dir, Agent::new(sock))
    }

    fn name(s: &str) -> SecretName {
        SecretName::parse(s).unwrap()
    }

    const T: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn fetch_reads_value_version_and_lease() {
        let (_d, agent) = agent_answering(
            "HTTP/1.1 200 OK\r\nseg-secret-version: 7\r\nseg-lease-ttl-ms: 2000\r\ncontent-length: 3\r\n\r\nabc",
        )
        .await;
        let f = agent.fetch(&name("db"), T).await.unwrap();
        assert_eq!((f.value.expose(), f.version, f.ttl), (&b"abc"[..], 7, Duration::from_secs(2)));
    }

    #[tokio::test]
    async fn fetch_clamps_absurd_leases() {
        let (_d, agent) = agent_answering(
            "HTTP/1.1 200 OK\r\nseg-secret-version: 1\r\nseg-lease-ttl-ms: 1\r\ncontent-length: 1\r\n\r\nx",
        )
        .await;
        assert_eq!(agent.fetch(&name("db"), T).await.unwrap().ttl, Duration::from_millis(api::MIN_TTL_MS));
    }

    #[tokio::test]
    async fn fetch_without_lease_header_is_a_protocol_error() {
        let (_d, agent) =
            agent_answering("HTTP/1.1 200 OK\r\nseg-secret-version: 1\r\ncontent-length: 1\r\n\r\nx").await;
        let err = agent.fetch(&name("db"), T).await.err().unwrap();
        assert!(matches!(err, AgentError::Protocol { .. }), "{err}");
        assert!(err.to_string().contains("seg-lease-ttl-ms"), "{err}");
    }

    #[tokio::test]
    async fn refusals_carry_the_agent_code() {
        let body = r#"{"code":"not_granted","error":"db is not granted to shop/app"}"#;
        let raw = format!("HTTP/1.1 403 Forbidden\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        let (_d, agent) = agent_answering(Box::leak(raw.into_boxed_str())).await;
        let err = agent.fetch(&name("db"), T).await.err().unwrap();
        assert_eq!(err.refusal_code(), Some("not_granted"));
        assert!(err.to_string().contains("secret db"), "{err}");
    }

    #[tokio::test]
    async fn server_errors_are_transient() {
        let (_d, agent) = agent_answering("HTTP/1.1 503 Busy\r\ncontent-length: 0\r\n\r\n").await;
        let err = agent.fetch(&name("db"), T).await.err().unwrap();
        assert!(matches!(err, AgentError::Failed { status: 503, .. }), "{err}");
        assert_eq!(err.refusal_code(), None);
    }

    #[tokio::test]
    async fn list_parses_granted_secrets() {
        let body = r#"{"secrets":[{"name":"db","version":2,"ttl_ms":60000}]}"#;
        let raw = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        let (_d, agent) = agent_answering(Box::leak(raw.into_boxed_str())).await;
        let list = agent.list(T).await.unwrap();
        assert_eq!(list, vec![GrantedSecret { name: name("db"), version: 2, ttl_ms: 60000 }]);
    }

    #[tokio::test]
    async fn the_watch_stream_yields_events_and_skips_unknown_ones() {
        let hello =
            r#"{"event":"hello","secrets":[{"name":"db","version":2,"ttl_ms":1000}],"ping_ms":15000}"#;
        let odd = r#"{"event":"from_the_future","x":1}"#;
        let version = r#"{"event":"version","name":"db","version":3,"ttl_ms":1000}"#;
        let body = format!("{hello}\n{odd}\n{version}\n");
        let raw = format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        );
        let (_d, agent) = agent_answering(Box::leak(raw.into_boxed_str())).await;
        let mut events = agent.watch(Some(&[name("db")]), T).await.unwrap();
        assert!(matches!(events.next_event().await.unwrap(), Some(WatchEvent::Hello { ping_ms: 15000, .. })));
        assert!(matches!(events.next_event().await.unwrap(), Some(WatchEvent::Version { version: 3, .. })));
        assert!(events.next_event().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_refused_watch_carries_its_status() {
        let body = r#"{"code":"too_many_watches","error":"limit"}"#;
        let raw = format!("HTTP/1.1 429 Too Many\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        let (_d, agent) = agent_answering(Box::leak(raw.into_boxed_str())).await;
        let err = agent.watch(None, T).await.err().unwrap();
        assert_eq!(err.status(), Some(429));
        assert!(err.to_string().contains("too_many_watches"), "{err}");
        let (_d, agent) = agent_answering("HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n").await;
        agent.ack(&name("db"), 3, T).await.unwrap();
    }

    #[tokio::test]
    async fn a_missing_socket_is_unreachable() {
        let agent = Agent::new("/nonexistent/seg/agent.sock".into());
        let err = agent.list(T).await.err().unwrap();
        assert!(matches!(err, AgentError::Unreachable(_)), "{err}");
        assert!(err.to_string().contains("/nonexistent/seg/agent.sock"), "{err}");
    }
}
