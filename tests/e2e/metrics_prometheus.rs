//! `segctl node run --metrics-addr` scraped by a real Prometheus server
//! (Debian's `prometheus`, started here on loopback with a 1 s scrape
//! interval): after a put, a rotation with a pre-rotate hook that a
//! sidecar acknowledges, and a refused agent request, queries through
//! Prometheus's HTTP API return the series.

use seg_e2e::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const METRICS: &str = "127.0.0.1:29476";
const PROMETHEUS: &str = "127.0.0.1:29090";

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_prometheus(dir: &std::path::Path) -> Prometheus {
    let bin = std::path::Path::new("/usr/bin/prometheus");
    assert!(bin.exists(), "Debian's prometheus is missing: run scripts/setup");
    let config = dir.join("prometheus.yml");
    let yaml = format!(
        "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
         scrape_configs:\n  - job_name: seg\n    static_configs: [{{ targets: [\"{METRICS}\"] }}]\n"
    );
    std::fs::write(&config, yaml).unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={PROMETHEUS}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    Prometheus(child)
}

/// The value of an instant query's first series, if there is one.
fn query(expr: &str) -> Option<f64> {
    let url = format!("http://{PROMETHEUS}/api/v1/query");
    let out = run(
        Command::new("curl")
            .args(["-s", "--max-time", "5", "-G", &url, "--data-urlencode"])
            .arg(format!("query={expr}")),
        Duration::from_secs(10),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["data"]["result"].as_array()?.first()?["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes_requests_rotations_denials_hooks_and_ack_latency() {
    let _serial = begin();
    let ctl = Controller::start_with(&["--metrics-addr", METRICS]);
    let dir = tempfile::tempdir().unwrap();
    let _prometheus = start_prometheus(dir.path());

    ctl.put("db", &random_text(16), &["--ttl", "10m"]);
    ctl.grant("db", "metrics/app");
    ctl.segctl_ok(&["secret", "hook", "db", "--pre-rotate", "true"]);
    let sidecar = Container::sidecar(
        &ctl,
        "db",
        &["--label", "com.docker.compose.project=metrics", "--label", "com.docker.compose.service=app"],
    );
    wait_until(Duration::from_secs(30), "the sidecar to be a consumer", || {
        let st: serde_json::Value =
            serde_json::from_str(&ctl.segctl_ok(&["secret", "status", "db", "-o", "json"])).ok()?;
        (st["consumers"].as_array()?.len() == 1).then_some(())
    });
    let rotated =
        ctl.segctl_value(&["secret", "rotate", "db"], &random_text(16), &["--wait", "--timeout", "20s"]);
    assert!(rotated.success(), "{}", rotated.text());
    // Refused: the test process is no container.
    let (status, _) = agent_get(&ctl.agent_socket(), "/v1/secrets/db");
    assert_eq!(status, 403);

    for (expr, at_least) in [
        ("sum(seg_rotations_total{outcome=\"allowed\"})", 2.0),
        ("sum(seg_denials_total{socket=\"agent\"})", 1.0),
        ("sum(seg_hook_runs_total{kind=\"pre-rotate\",outcome=\"allowed\"})", 1.0),
        ("sum(seg_secrets_served_total)", 1.0),
        ("sum(seg_rotation_ack_seconds_count)", 1.0),
        ("seg_watch_streams", 1.0),
        ("count(seg_build_info)", 1.0),
    ] {
        let what = format!("Prometheus to return {expr} >= {at_least}");
        wait_until(Duration::from_secs(20), &what, || query(expr).filter(|v| *v >= at_least));
    }
    let ack_p99 = query("histogram_quantile(0.99, sum(seg_rotation_ack_seconds_bucket) by (le))");
    eprintln!("rotation → ack p99 as Prometheus computes it: {ack_p99:?} s");
    let text =
        run(Command::new("curl").args(["-s", &format!("http://{METRICS}/metrics")]), Duration::from_secs(10));
    assert!(!text.stdout_str().contains("\"db\""), "no secret name in a label");
    drop(sidecar);
}
