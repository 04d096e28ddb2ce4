//! Rotation across a cluster, measured (issue #11's benchmark; the figures
//! are printed as one JSON line for docs/benchmarks.md, and the test
//! asserts only that every sidecar got every version): three seg nodes on
//! one real etcd, 100 sidecars spread over them, a rotation started on the
//! first node → the time until each sidecar's file holds the new bytes,
//! read on the host through `/proc/<pid>/root/…` (no `docker exec` in the
//! measurement). Five rotations, 500 samples.
//!
//! The nodes share this host's Docker engine (and its two cores): what is
//! measured is seg's path — etcd write, watch on every node, push, fetch,
//! tmpfs write — not the network between hosts.

use seg_e2e::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SIDECARS: usize = 100;
const ROUNDS: usize = 5;
const NAME: &str = "fan-token";

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// Polls every file until each holds `value`; the time each first did.
fn arrivals(files: &[PathBuf], value: &[u8], since: Instant, limit: Duration) -> Vec<Duration> {
    let mut got: Vec<Option<Duration>> = vec![None; files.len()];
    while got.iter().any(Option::is_none) {
        assert!(since.elapsed() < limit, "not every sidecar had the new version after {limit:?}");
        for (slot, file) in got.iter_mut().zip(files) {
            if slot.is_none() && std::fs::read(file).is_ok_and(|b| b == value) {
                *slot = Some(since.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    got.into_iter().flatten().collect()
}

/// Puts and grants the secret on `nodes[0]`, starts the sidecars spread
/// over `nodes`, then rotates on `nodes[0]` [`ROUNDS`] times: the figures.
fn measure(nodes: &[Controller]) -> serde_json::Value {
    let first = &nodes[0];
    let v1 = random_text(32);
    first.put(NAME, &v1, &["--ttl", "10m"]);
    first.grant(NAME, "fanout/fan");
    let labels = ["--label", "seg.project=fanout", "--label", "seg.service=fan"];
    // Started ten at a time (docker run takes a while; dockerd takes a few at once).
    let mut sidecars: Vec<Container> = Vec::new();
    for batch in (0..SIDECARS).collect::<Vec<_>>().chunks(10) {
        std::thread::scope(|s| {
            let started: Vec<_> = batch
                .iter()
                .map(|&i| s.spawn(move || Container::sidecar(&nodes[i % nodes.len()], NAME, &labels)))
                .collect();
            sidecars.extend(started.into_iter().map(|h| h.join().expect("docker run")));
        });
    }
    let files: Vec<PathBuf> = sidecars
        .iter()
        .map(|c| {
            let pid = docker_ok(&["inspect", "-f", "{{.State.Pid}}", &c.id]);
            PathBuf::from(format!("/proc/{pid}/root/run/secrets/{NAME}"))
        })
        .collect();
    arrivals(&files, &v1, Instant::now(), Duration::from_secs(120));

    let (mut samples, mut commands) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let value = random_text(32);
        let t0 = Instant::now();
        let out = first.segctl_value(&["secret", "rotate", NAME], &value, &[]);
        commands.push(t0.elapsed());
        assert!(out.success(), "rotate: {}", out.text());
        samples.extend(arrivals(&files, &value, t0, Duration::from_secs(30)));
    }
    samples.sort();
    commands.sort();
    serde_json::json!({
        "nodes": nodes.len(),
        "sidecars": SIDECARS,
        "rotations": ROUNDS,
        "on_disk_p50_ms": percentile(&samples, 0.50),
        "on_disk_p99_ms": percentile(&samples, 0.99),
        "on_disk_max_ms": percentile(&samples, 1.0),
        "rotate_command_p50_ms": percentile(&commands, 0.50),
    })
}

#[test]
fn a_rotation_reaches_100_sidecars_on_three_nodes() {
    let _serial = begin();
    // Baseline, side by side: the same 100 sidecars on one node with the
    // embedded store.
    let single = measure(&[Controller::start()]);
    let etcd = EtcdCluster::start();
    let kek = etcd.dir().join("kek");
    write_private(&kek, &random_bytes(32));
    let nodes: Vec<Controller> = ["n1", "n2", "n3"]
        .iter()
        .map(|name| {
            let mut flags = etcd.node_flags(&kek);
            flags.extend(["--node-name".to_owned(), name.to_string()]);
            Controller::start_with(&flags.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .collect();
    let cluster = measure(&nodes);
    println!(
        "{}",
        serde_json::json!({"benchmark": "cluster_fanout", "cluster": cluster, "one_node_embedded": single})
    );
}
