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
use zeroize::Zeroize;

const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}: {source}")]
    Connect { path: String, source: io::Error },
    #[error("talking to {path}: {source}")]
    Io { path: String, source: io::Error },
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

/// Connects to `socket` (shown as `path` in errors) and writes `req`,
/// head and body; the response is left to the caller.
pub(crate) async fn connect_and_send(
    socket: &Path,
    req: &Request<'_>,
    path: &str,
) -> Result<UnixStream, ClientError> {
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect { path: path.to_owned(), source })?;
    let io_err = |source| ClientError::Io { path: path.to_owned(), source };
    let head = format!(
        "{} {} HTTP/1.1\r\nHost: seg\r\nConnection: close\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
        req.method,
        req.path,
        req.content_type,
        req.body.len()
    );
    stream.write_all(head.as_bytes()).await.map_err(io_err)?;
    stream.write_all(req.body).await.map_err(io_err)?;
    stream.flush().await.map_err(io_err)?;
    Ok(stream)
}

async fn read_response(
    stream: &mut UnixStream,
    path: &str,
    max_body: usize,
) -> Result<Response, ClientError> {
    let malformed = |what| ClientError::Malformed { path: path.to_owned(), what };
    let mut scratch = vec![0u8; MAX_HEAD];
    let mut filled = 0;
    let head_end = loop {
        if filled == scratch.len() {
            scratch.zeroize();
            return Err(malformed("response head larger than 16 KiB"));
        }
        let n = stream
            .read(&mut scratch[filled..])
            .await
            .map_err(|source| ClientError::Io { path: path.to_owned(), source })?;
        if n == 0 {
            scratch.zeroize();
            return Err(malformed("connection closed before the end of the response head"));
        }
        filled += n;
        if let Some(pos) = find_head_end(&scratch[..filled]) {
            break pos;
        }
    };
    let parsed = parse_head(&scratch[..head_end]);
    let (status, headers) = match parsed {
        Ok(v) => v,
        Err(what) => {
            scratch.zeroize();
            return Err(malformed(what));
        }
    };
    let len = match content_length(&headers) {
        Ok(len) => len,
        Err(what) => {
            scratch.zeroize();
            return Err(malformed(what));
        }
    };
    if len > max_body {
        scratch.zeroize();
        return Err(ClientError::TooLarge { path: path.to_owned(), len, limit: max_body });
    }
    let mut body = SecretBytes::zeroed(len);
    let already = (filled - head_end - 4).min(len);
    body.as_mut_bytes()[..already].copy_from_slice(&scratch[head_end + 4..head_end + 4 + already]);
    scratch.zeroize();
    stream
        .read_exact(&mut body.as_mut_bytes()[already..])
        .await
        .map_err(|source| ClientError::Io { path: path.to_owned(), source })?;
    Ok(Response { status, headers, body })
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

    #[tokio::test]
    async fn refuses_responses_without_length() {
        let (_d, sock) = serve_once(b"HTTP/1.1 200 OK\r\n\r\nabc").await;
        assert!(send(&sock, &Request::get("/"), Duration::from_secs(2), 10).await.is_err());
    }
}
