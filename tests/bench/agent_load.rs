//! Load generator for the agent API: N clients, each on its own keep-alive
//! connection, read one secret in a loop for a fixed time. Prints one JSON
//! line: requests, errors, reads/s, p50/p99/max latency in microseconds.
//! `refused` counts the errors that were HTTP answers other than 200 (the
//! rest are connection failures), so a flood of refusals can be counted.
//!
//! It must run inside a container (the agent socket only serves attested
//! containers), so it is built static and shipped in a FROM-scratch image by
//! `scripts/bench`.
//!
//! Usage: seg-agent-load SOCKET PATH CLIENTS SECONDS

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

struct ClientResult {
    latencies_us: Vec<u32>,
    errors: u64,
    refused: u64,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 5, "usage: {} SOCKET PATH CLIENTS SECONDS", args[0]);
    let socket = args[1].clone();
    let path = args[2].clone();
    let clients: usize = args[3].parse()?;
    let secs: u64 = args[4].parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run(socket, path, clients, Duration::from_secs(secs)))
}

async fn run(socket: String, path: String, clients: usize, length: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + length;
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (socket, path) = (socket.clone(), path.clone());
        tasks.push(tokio::spawn(async move { one_client(&socket, &path, deadline).await }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    let mut refused = 0;
    for t in tasks {
        let r = t.await?;
        errors += r.errors;
        refused += r.refused;
        all.extend(r.latencies_us);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied();
    println!(
        "{}",
        serde_json::json!({
            "clients": clients,
            "requests": all.len(),
            "errors": errors,
            "refused": refused,
            "reads_per_sec": (all.len() as f64 / elapsed).round(),
            "p50_us": pct(0.50),
            "p99_us": pct(0.99),
            "max_us": all.last(),
        })
    );
    Ok(())
}

async fn one_client(socket: &str, path: &str, deadline: Instant) -> ClientResult {
    let mut result = ClientResult { latencies_us: Vec::with_capacity(1 << 16), errors: 0, refused: 0 };
    let request = format!("GET {path} HTTP/1.1\r\nHost: seg\r\n\r\n");
    let mut buf = vec![0u8; 64 * 1024];
    while Instant::now() < deadline {
        let Ok(mut stream) = UnixStream::connect(socket).await else {
            result.errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        while Instant::now() < deadline {
            let t0 = Instant::now();
            match exchange(&mut stream, request.as_bytes(), &mut buf).await {
                Ok(200) => result.latencies_us.push(t0.elapsed().as_micros() as u32),
                Ok(_) => {
                    result.errors += 1;
                    result.refused += 1;
                }
                Err(_) => {
                    result.errors += 1;
                    break;
                }
            }
        }
    }
    result
}

/// One request on a keep-alive connection; returns the status code.
async fn exchange(stream: &mut UnixStream, request: &[u8], buf: &mut [u8]) -> std::io::Result<u16> {
    stream.write_all(request).await?;
    let mut filled = 0;
    let head_end = loop {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
        if let Some(p) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if filled == buf.len() {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut have = filled - head_end;
    while have < len {
        let want = (len - have).min(buf.len());
        let n = stream.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
    }
    Ok(status)
}
