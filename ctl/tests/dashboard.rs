//! The Grafana dashboard in examples/grafana reads as JSON and charts only
//! series the controller exports (docs/segctl.md, METRICS).

use std::path::Path;

const EXPORTED: &[&str] = &[
    "seg_requests_total",
    "seg_denials_total",
    "seg_secrets_served_total",
    "seg_rotations_total",
    "seg_rotation_ack_seconds_bucket",
    "seg_watch_streams",
    "seg_hook_runs_total",
    "seg_firewall_transactions_total",
    "seg_firewall_transaction_seconds_bucket",
    "seg_firewall_repairs_total",
    "seg_firewall_rules",
    "seg_firewall_chains",
    "seg_build_info",
];

#[test]
fn every_panel_queries_exported_series() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/grafana/seg-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("seg_"))
                .collect();
            assert!(!names.is_empty(), "{expr}");
            for name in names {
                assert!(EXPORTED.contains(&name), "{} charts {name}, which is not exported", panel["title"]);
            }
        }
    }
}
