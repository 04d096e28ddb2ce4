//! A deliberately small HTTP/1.1 client over unix sockets, one request per
//! connection.
//!
//! Why not hyper's client: hyper reads responses into its own growable
//! buffers, which are freed without being wiped. Secret values must only
//! ever land in a [`SecretBytes`] of exactly the announced length, so this
//! client reads the head into a bounded scratch buffer (wiped), requires a
//! `Content-Length`, and reads the body in place. It only has to speak to
//! seg's own controller (hyper on the server side).
//!
//! [`stream::open`] is the other mode: a long-lived response (the agent's
//! watch stream, chunked) read line by line as it arrives. It carries names
//! and versions only, never values.

mod framing;
pub mod stream;

pub use stream::{open as open_stream, Stream};

use crate::secret::SecretBytes;
use std::io;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use zeroize::Zeroizing;

const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}: {cause}")]
    Connect { path: String, cause: io::Error },
    #[error("talking to {path}: {cause}")]
    Io { path: String, cause: io::Error },
    #[error("{path} did not answer within {0:?}", .timeout)]
    Timeout { path: String, timeout: Duration },
    #[error("malformed response from {path}: {what}")]
    Malformed { path: String, what: &'static str },
    #[error("response body from {path} is {len} bytes; the limit is {limit}")]
    TooLarge { path: String, len: usize, limit: usize },
}

pub struct Response {
    pub status: u16,
    headers: Vec<(String, String)>,
    pub body: SecretBytes,
}

impl Response {
    /// Header value by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Parses a JSON body. Only for non-secret responses.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(self.body.expose())
    }
}

pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub content_type: &'a str,
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    pub fn get(path: &'a str) -> Self {
        Request { method: "GET", path, content_type: "application/json", body: &[] }
    }
}

/// Sends one request and reads the whole response, bounded by `timeout`
/// overall and by `max_body` bytes of body.
pub async fn send(
    socket: &Path,
    req: &Request<'_>,
    timeout: Duration,
    max_body: usize,
) -> Result<Response, ClientError> {
    let shown = socket.display().to_string();
    match tokio::time::timeout(timeout, exchange(socket, req, max_body)).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Timeout { path: shown, timeout }),
    }
}

async fn exchange(socket: &Path, req: &Request<'_>, max_body: usize) -> Result<Response, ClientError> {
    let path = socket.display().to_string();
    let mut stream = connect_and_send(socket, req, &path).await?;
    read_response(&mut stream, &path, max_body).await
}

/// [`send`] over a stream the caller connected (e.g. TLS over TCP to a
/// node's cluster endpoint); `label` names the peer in errors.
pub async fn send_on<S>(
    mut stream: S,
    label: &str,
    req: &Request<'_>,
    timeout: Duration,
    max_body: usize,
) -> Result<Response, ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let exchange = async {
        write_request(&mut stream, req, label).await?;
        read_response(&mut stream, label, max_body).await
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Timeout { path: label.to_owned(), timeout }),
    }
}

/// Connects to `socket` (shown as `path` in errors) and writes `req`,
/// head and body; the response is left to the caller.
pub(crate) async fn connect_and_send(
    socket: &Path,
    req: &Request<'_>,
    path: &str,
) -> Result<UnixStream, ClientError> {
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|cause| ClientError::Connect { path: path.to_owned(), cause })?;
    write_request(&mut stream, req, path).await?;
    Ok(stream)
}

async fn write_request<S>(stream: &mut S, req: &Request<'_>, path: &str) -> Result<(), ClientError>
where
    S: tokio::io::AsyncWrite + Unpin,
{
    let io_err = |cause| ClientError::Io { path: path.to_owned(), cause };
    let head = format!(
        "{} {} HTTP/1.1\r\nHost: seg\r\nConnection: close\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
        req.method,
        req.path,
        req.content_type,
        req.body.len()
    );
    stream.write_all(head.as_bytes()).await.map_err(io_err)?;
    stream.write_all(req.body).await.map_err(io_err)?;
    stream.flush().await.map_err(io_err)
}

async fn read_response<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    path: &str,
    max_body: usize,
) -> Result<Response, ClientError> {
    let malformed = |what| ClientError::Malformed { path: path.to_owned(), what };
    // Wiped on every return: the head buffer may also hold the first body bytes.
    let mut scratch = Zeroizing::new(vec![0u8; MAX_HEAD]);
    let mut filled = 0;
    let (status, headers, body_start) = loop {
        let head_end = read_head(stream, &mut scratch, &mut filled, path).await?;
        let (status, headers) = parse_head(&scratch[..head_end]).map_err(malformed)?;
        let body_start = head_end + 4;
        match interim(status) {
            Interim::Final => break (status, headers, body_start),
            Interim::Switch => return Err(malformed("the server switched protocols")),
            Interim::Skip => {
                scratch.copy_within(body_start..filled, 0);
                filled -= body_start;
            }
        }
    };
    let len = if has_no_body(status) { 0 } else { content_length(&headers).map_err(malformed)? };
    if len > max_body {
        return Err(ClientError::TooLarge { path: path.to_owned(), len, limit: max_body });
    }
    let mut body = SecretBytes::zeroed(len);
    let already = (filled - body_start).min(len);
    body.as_mut_bytes()[..already].copy_from_slice(&scratch[body_start..body_start + already]);
    drop(scratch);
    stream
        .read_exact(&mut body.as_mut_bytes()[already..])
        .await
        .map_err(|cause| ClientError::Io { path: path.to_owned(), cause })?;
    Ok(Response { status, headers, body })
}

/// Reads into `scratch` (`filled` bytes already there) until it holds a
/// whole response head; returns where the head's blank line starts.
async fn read_head<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    scratch: &mut [u8],
    filled: &mut usize,
    path: &str,
) -> Result<usize, ClientError> {
    let malformed = |what| ClientError::Malformed { path: path.to_owned(), what };
    loop {
        if let Some(pos) = find_head_end(&scratch[..*filled]) {
            return Ok(pos);
        }
        if *filled == scratch.len() {
            return Err(malformed("response head larger than 16 KiB"));
        }
        let n = stream
            .read(&mut scratch[*filled..])
            .await
            .map_err(|cause| ClientError::Io { path: path.to_owned(), cause })?;
        if n == 0 {
            return Err(malformed("connection closed before the end of the response head"));
        }
        *filled += n;
    }
}

/// What a response head with this status is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Interim {
    /// The answer to the request.
    Final,
    /// A 1xx interim answer (e.g. `100 Continue`): the real one follows.
    Skip,
    /// `101 Switching Protocols`: never asked for, so never accepted.
    Switch,
}

pub(crate) fn interim(status: u16) -> Interim {
    match status {
        101 => Interim::Switch,
        100..=199 => Interim::Skip,
        _ => Interim::Final,
    }
}

/// Answers that end at their head whatever their headers say (RFC 9112
/// §6.3): hyper sends a `204` with neither `Content-Length` nor
/// `Transfer-Encoding`, so requiring a length there would refuse every
/// acknowledgement the controller accepted.
pub(crate) fn has_no_body(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

pub(crate) fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

type Head = (u16, Vec<(String, String)>);

pub(crate) fn parse_head(head: &[u8]) -> Result<Head, &'static str> {
    let text = std::str::from_utf8(head).map_err(|_| "response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().ok_or("empty response")?;
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err("not an HTTP/1.x response");
    }
    let status = parts.next().and_then(|s| s.parse().ok()).ok_or("bad status code")?;
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line.split_once(':').ok_or("header line without ':'")?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    Ok((status, headers))
}

fn content_length(headers: &[(String, String)]) -> Result<usize, &'static str> {
    if headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding")) {
        return Err("chunked responses are not accepted here");
    }
    let value = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v)
        .ok_or("response has no Content-Length")?;
    value.parse().map_err(|_| "bad Content-Length")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    async fn serve_once(raw: &'static [u8]) -> (tempdir::Dir, std::path::PathBuf) {
        let dir = tempdir::Dir::new();
        let sock = dir.path().join("s.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            s.write_all(raw).await.unwrap();
        });
        (dir, sock)
    }

    mod tempdir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let p = std::env::temp_dir().join(format!("seg-uds-{}-{}", std::process::id(), fastrand()));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        fn fastrand() -> u64 {
            use std::sync::atomic::{AtomicU64, Ordering};
            static N: AtomicU64 = AtomicU64::new(0);
            N.fetch_add(1, Ordering::Relaxed)
        }
    }

    #[tokio::test]
    async fn reads_body_and_headers() {
        let (_d, sock) =
            serve_once(b"HTTP/1.1 200 OK\r\nseg-secret-version: 3\r\ncontent-length: 5\r\n\r\nhello").await;
        let r = send(&sock, &Request::get("/v1/x"), Duration::from_secs(2), 100).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Seg-Secret-Version"), Some("3"));
        assert_eq!(r.body.expose(), b"hello");
    }

    #[tokio::test]
    async fn refuses_bodies_over_the_limit() {
        let (_d, sock) = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n").await;
        let err = send(&sock, &Request::get("/"), Duration::from_secs(2), 10).await.err().unwrap();
        assert!(matches!(err, ClientError::TooLarge { len: 500, .. }), "{err}");
    }

    /// Byte for byte what hyper 1.x (the controller) answers to an
    /// acknowledgement: a 204 with no Content-Length, no body.
    const HYPER_204: &[u8] =
        b"HTTP/1.1 204 No Content\r\nconnection: close\r\ndate: Tue, 01 Dec 2026 19:42:52 GMT\r\n\r\n";

    #[tokio::test]
    async fn a_204_without_length_is_an_empty_answer() {
        let (_d, sock) = serve_once(HYPER_204).await;
        let r = send(&sock, &Request::get("/v1/ack"), Duration::from_secs(2), 10).await.unwrap();
        assert_eq!((r.status, r.body.expose()), (204, &b""[..]));
        assert!(r.is_success());
        // A 304 ends at its head too, whatever length it announces.
        let (_d, sock) = serve_once(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 99\r\n\r\n").await;
        let r = send(&sock, &Request::get("/"), Duration::from_secs(2), 10).await.unwrap();
        assert_eq!((r.status, r.body.expose().len()), (304, 0));
    }

    #[tokio::test]
    async fn interim_answers_are_skipped_and_a_protocol_switch_refused() {
        let (_d, sock) =
            serve_once(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        let r = send(&sock, &Request::get("/"), Duration::from_secs(2), 10).await.unwrap();
        assert_eq!((r.status, r.body.expose()), (200, &b"ok"[..]));
        let (_d, sock) = serve_once(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n").await;
        let err = send(&sock, &Request::get("/"), Duration::from_secs(2), 10).await.err().unwrap();
        assert!(err.to_string().contains("switched protocols"), "{err}");
    }

    #[tokio::test]
    async fn refuses_responses_without_length() {
        let (_d, sock) = serve_once(b"HTTP/1.1 200 OK\r\n\r\nabc").await;
        assert!(send(&sock, &Request::get("/"), Duration::from_secs(2), 10).await.is_err());
    }
}
