//! Long-lived responses read as they arrive: the watch stream of the agent
//! socket (chunked, newline-delimited JSON). Only for bodies that carry no
//! secret value: they go through plain `Vec`s. Values are always fetched
//! with [`super::send`], into a [`crate::secret::SecretBytes`].

use super::framing::Framing;
use super::{connect_and_send, find_head_end, interim, parse_head, ClientError, Interim, Request, MAX_HEAD};
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

const READ_CHUNK: usize = 8 * 1024;

/// An open response whose body is read piece by piece.
pub struct Stream {
    pub status: u16,
    headers: Vec<(String, String)>,
    conn: UnixStream,
    path: String,
    /// Received bytes not decoded yet.
    raw: Vec<u8>,
    /// Decoded body bytes not handed out yet.
    body: Vec<u8>,
    framing: Framing,
}

/// Connects, sends `req` and reads the response head, all within `timeout`.
/// The body is left for [`Stream::next_line`] / [`Stream::read_to_end`].
pub async fn open(socket: &Path, req: &Request<'_>, timeout: Duration) -> Result<Stream, ClientError> {
    let path = socket.display().to_string();
    match tokio::time::timeout(timeout, open_inner(socket, req, path.clone())).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Timeout { path, timeout }),
    }
}

async fn open_inner(socket: &Path, req: &Request<'_>, path: String) -> Result<Stream, ClientError> {
    let mut conn = connect_and_send(socket, req, &path).await?;
    let io_err = |cause| ClientError::Io { path: path.clone(), cause };
    let malformed = |what| ClientError::Malformed { path: path.clone(), what };
    let mut raw = Vec::with_capacity(READ_CHUNK);
    let (status, headers) = loop {
        let head_end = loop {
            if let Some(pos) = find_head_end(&raw) {
                break pos;
            }
            if raw.len() > MAX_HEAD {
                return Err(malformed("response head larger than 16 KiB"));
            }
            if read_some(&mut conn, &mut raw).await.map_err(io_err)? == 0 {
                return Err(malformed("connection closed before the end of the response head"));
            }
        };
        let head = parse_head(&raw[..head_end]).map_err(malformed)?;
        raw.drain(..head_end + 4);
        match interim(head.0) {
            Interim::Final => break head,
            Interim::Switch => return Err(malformed("the server switched protocols")),
            Interim::Skip => {}
        }
    };
    let framing = Framing::for_response(status, &headers).map_err(malformed)?;
    let mut stream = Stream { status, headers, conn, path, raw, body: Vec::new(), framing };
    stream.decode()?;
    Ok(stream)
}

async fn read_some(conn: &mut UnixStream, into: &mut Vec<u8>) -> std::io::Result<usize> {
    let start = into.len();
    into.resize(start + READ_CHUNK, 0);
    let n = conn.read(&mut into[start..]).await;
    into.truncate(start + *n.as_ref().unwrap_or(&0));
    n
}

impl Stream {
    /// Header value by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn malformed(&self, what: &'static str) -> ClientError {
        ClientError::Malformed { path: self.path.clone(), what }
    }

    fn decode(&mut self) -> Result<(), ClientError> {
        let (raw, body) = (&mut self.raw, &mut self.body);
        self.framing
            .decode(raw, body)
            .map_err(|what| ClientError::Malformed { path: self.path.clone(), what })
    }

    /// Reads more of the body. Returns false at its end.
    async fn fill(&mut self) -> Result<bool, ClientError> {
        if self.framing.is_done() {
            return Ok(false);
        }
        let n = read_some(&mut self.conn, &mut self.raw)
            .await
            .map_err(|cause| ClientError::Io { path: self.path.clone(), cause })?;
        if n == 0 {
            let path = self.path.clone();
            self.framing.at_eof().map_err(|what| ClientError::Malformed { path, what })?;
            return Ok(false);
        }
        self.decode()?;
        Ok(true)
    }

    /// The next line of the body (without its `\n` or `\r\n`), waiting as
    /// long as it takes; `None` once the body has ended. A line longer than
    /// `max_line` is an error.
    pub async fn next_line(&mut self, max_line: usize) -> Result<Option<Vec<u8>>, ClientError> {
        loop {
            if let Some(pos) = self.body.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.body.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
            if self.body.len() > max_line {
                return Err(self.malformed("a line of the stream is too long"));
            }
            if !self.fill().await? {
                if self.body.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(std::mem::take(&mut self.body)));
            }
        }
    }

    /// The rest of the body, at most `max` bytes (e.g. an error answer).
    pub async fn read_to_end(&mut self, max: usize) -> Result<Vec<u8>, ClientError> {
        while self.fill().await? {
            if self.body.len() > max {
                return Err(ClientError::TooLarge {
                    path: self.path.clone(),
                    len: self.body.len(),
                    limit: max,
                });
            }
        }
        Ok(std::mem::take(&mut self.body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixListener;

    /// Serves `parts` one by one, with a pause between them.
    async fn serve(parts: Vec<&'static [u8]>) -> (tempfile_dir::Dir, std::path::PathBuf) {
        let dir = tempfile_dir::Dir::new();
        let sock = dir.0.join("s.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            for p in parts {
                s.write_all(p).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        (dir, sock)
    }

    mod tempfile_dir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU64, Ordering};
                static N: AtomicU64 = AtomicU64::new(0);
                let n = N.fetch_add(1, Ordering::Relaxed);
                let p = std::env::temp_dir().join(format!("seg-stream-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    const T: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn chunked_lines_arrive_one_by_one() {
        let (_d, sock) = serve(vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            b"8\r\n{\"a\":1",
            b"}\n\r\n",
            b"10\r\n{\"b\":2}\n{\"c\":3}\n\r\n",
            b"0\r\n\r\n",
        ])
        .await;
        let mut s = open(&sock, &Request::get("/v1/watch"), T).await.unwrap();
        assert_eq!(s.status, 200);
        let mut lines = Vec::new();
        while let Some(line) = s.next_line(100).await.unwrap() {
            lines.push(String::from_utf8(line).unwrap());
        }
        assert_eq!(lines, [r#"{"a":1}"#, r#"{"b":2}"#, r#"{"c":3}"#]);
    }

    #[tokio::test]
    async fn error_answers_are_read_whole() {
        let (_d, sock) =
            serve(vec![b"HTTP/1.1 429 Too Many\r\ncontent-length: 13\r\n\r\n{\"code\":\"x\"}\n"]).await;
        let mut s = open(&sock, &Request::get("/v1/watch"), T).await.unwrap();
        assert!(!s.is_success());
        assert_eq!(s.read_to_end(100).await.unwrap(), b"{\"code\":\"x\"}\n");
    }

    #[tokio::test]
    async fn a_204_has_an_empty_body_without_waiting_for_the_close() {
        let (_d, sock) =
            serve(vec![b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 204 No Content\r\ndate: x\r\n\r\n"])
                .await;
        let mut s = open(&sock, &Request::get("/"), T).await.unwrap();
        assert_eq!(s.status, 204);
        assert_eq!(s.next_line(100).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_stream_cut_mid_chunk_is_an_error_and_long_lines_are_refused() {
        let (_d, sock) =
            serve(vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", b"20\r\nabc"]).await;
        let mut s = open(&sock, &Request::get("/"), T).await.unwrap();
        assert!(s.next_line(100).await.is_err());
        let (_d, sock) =
            serve(vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", b"20\r\n0123456789"]).await;
        let mut s = open(&sock, &Request::get("/"), T).await.unwrap();
        let err = s.next_line(4).await.unwrap_err();
        assert!(err.to_string().contains("too long"), "{err}");
    }
}
