//! Baseline for the agent API benchmark: a bare hyper HTTP/1.1 server on a
//! unix socket that answers every request with a fixed 32-byte body — no
//! attestation, no decryption, no access log. seg's agent reads/s are
//! reported as a ratio to this, measured side by side on the same machine.
//!
//! Usage: seg-baseline-agent SOCKET

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;

async fn answer(_req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = Bytes::from_static(b"0123456789abcdef0123456789abcdef");
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut().insert("content-type", "application/octet-stream".parse().unwrap());
    resp.headers_mut().insert("seg-secret-version", "1".parse().unwrap());
    resp.headers_mut().insert("seg-lease-ttl-ms", "300000".parse().unwrap());
    Ok(resp)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: seg-baseline-agent SOCKET"))?;
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(answer)).await;
        });
    }
}
