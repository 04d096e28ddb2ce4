//! `seg-sidecar watch`: opens the controller's watch stream and prints what
//! it pushes to this container — names and versions, never values. With
//! `--connections N` it holds N streams (how the controller's memory per
//! stream is measured); with `--no-read` it never reads them (how the
//! controller's limits on stuck clients are tested).
//!
//! Output on stdout, one JSON object per line: the events of the first
//! stream, `{"opened":…,"refused":{…},"errors":…}` once every stream was
//! tried, and `{"events":…,"ended":…}` at the end.

use crate::config::WatchArgs;
use seg_common::uds_http::{self, Request, Stream};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// Streams opened at once.
const PARALLEL: usize = 64;
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Counts {
    events: AtomicU64,
    ended: AtomicU64,
}

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let path = match &args.secrets {
        Some(list) if !list.0.is_empty() => {
            format!("/v1/watch?secrets={}", list.0.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(","))
        }
        _ => "/v1/watch".to_owned(),
    };
    let (streams, refused, errors) = open_all(&args, &path).await;
    println!("{}", serde_json::json!({ "opened": streams.len(), "refused": refused, "errors": errors }));
    let counts = Arc::new(Counts::default());
    let mut held = Vec::new();
    let mut readers = JoinSet::new();
    for (i, stream) in streams.into_iter().enumerate() {
        if args.no_read {
            held.push(stream);
        } else {
            readers.spawn(read(stream, i == 0, counts.clone()));
        }
    }
    wait_for_the_end(args.seconds).await;
    readers.abort_all();
    drop(held);
    let (events, ended) = (counts.events.load(Ordering::Relaxed), counts.ended.load(Ordering::Relaxed));
    println!("{}", serde_json::json!({ "events": events, "ended": ended }));
    Ok(())
}

/// Opens every stream, [`PARALLEL`] at a time; refusals are counted by
/// HTTP status, failures to get an answer as errors.
async fn open_all(args: &WatchArgs, path: &str) -> (Vec<Stream>, BTreeMap<u16, u64>, u64) {
    let (mut streams, mut refused, mut errors) = (Vec::new(), BTreeMap::new(), 0u64);
    let mut left = args.connections as usize;
    while left > 0 {
        let batch = left.min(PARALLEL);
        left -= batch;
        let mut set = JoinSet::new();
        for _ in 0..batch {
            let (socket, path) = (args.agent_socket.clone(), path.to_owned());
            set.spawn(
                async move { uds_http::open_stream(&socket, &Request::get(&path), OPEN_TIMEOUT).await },
            );
        }
        while let Some(done) = set.join_next().await {
            match done {
                Ok(Ok(s)) if s.is_success() => streams.push(s),
                Ok(Ok(s)) => *refused.entry(s.status).or_insert(0) += 1,
                Ok(Err(e)) => {
                    if errors == 0 {
                        eprintln!("seg-sidecar watch: {e}");
                    }
                    errors += 1;
                }
                Err(_) => errors += 1,
            }
        }
    }
    (streams, refused, errors)
}

async fn read(mut stream: Stream, print: bool, counts: Arc<Counts>) {
    loop {
        match stream.next_line(1 << 20).await {
            Ok(Some(line)) => {
                counts.events.fetch_add(1, Ordering::Relaxed);
                if print {
                    println!("{}", String::from_utf8_lossy(&line));
                }
            }
            Ok(None) | Err(_) => {
                counts.ended.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

async fn wait_for_the_end(seconds: Option<u64>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return;
    };
    let limit = async {
        match seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        () = limit => {}
    }
}
