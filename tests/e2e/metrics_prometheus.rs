//! `segctl node run --metrics-addr` scraped by a real Prometheus server
//! (Debian's `prometheus`, started here on loopback with a 1 s scrape
//! interval): after a put, a rotation with a pre-rotate hook that a
//! sidecar acknowledges, and a refused agent request, queries through
//! Prometheus's HTTP API return the series. The controller logs in JSON
//! (`--log-format json`) meanwhile: every line is one object.

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
    ask(expr)["data"]["result"].as_array()?.first()?["value"][1].as_str()?.parse().ok()
}

/// Prometheus's whole answer to an instant query.
fn ask(expr: &str) -> serde_json::Value {
    let url = format!("http://{PROMETHEUS}/api/v1/query");
    let mut curl = Command::new("curl");
    curl.args(["-s", "--max-time", "5", "-G", &url, "--data-urlencode"]).arg(format!("query={expr}"));
    serde_json::from_slice(&run(&mut curl, Duration::from_secs(10)).stdout).unwrap_or_default()
}

#[test]
fn prometheus_scrapes_requests_rotations_denials_hooks_and_ack_latency() {
    let _serial = begin();
    let ctl = Controller::start_with(&["--metrics-addr", METRICS, "--log-format", "json"]);
    for line in ctl.log_tail(20).lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
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
    // The shipped Grafana dashboard's queries are valid and find their series.
    let dashboard = workspace_root().join("examples/grafana/seg-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dashboard).unwrap()).unwrap();
    for target in dash["panels"].as_array().unwrap().iter().flat_map(|p| p["targets"].as_array().unwrap()) {
        let expr = target["expr"].as_str().unwrap().replace("[1m]", "[30s]").replace("[5m]", "[30s]");
        let answer = ask(&expr);
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
    }
    drop(sidecar);
}
