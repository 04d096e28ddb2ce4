//! No container can starve the others' sidecars: ten unlabelled containers
//! keep 10,000 connections to the agent socket open (reopening every one the
//! controller closes) while a legitimate client of the example project
//! fetches its secret and the secret is rotated with `--wait`.
//!
//! The figures (fetch p50/p99 without and with the storm, rotate time) are
//! printed as one JSON line for docs/benchmarks.md; the test asserts only
//! that nothing legitimate failed.

use seg_e2e::serde_json::Value as Json;
use seg_e2e::*;
use std::time::{Duration, Instant};

const STORM_CONTAINERS: usize = 10;
const STORM_CONNECTIONS_EACH: usize = 1000;
const FETCHES: &str = "300";

/// The example plus `probe`: a busybox container acting for `app`
/// (`seg.for`) that carries the `seg-attack` client.
fn project_with_probe(ctl: &Controller) -> Project {
    let mut doc = example_yaml(ctl);
    let probe = format!(
        r#"
image: {BUSYBOX_IMAGE}
labels: {{seg.for: app}}
network_mode: none
volumes: ["{}", "{}:/x/seg-attack:ro"]
command: ["sh", "-c", "trap 'exit 0' TERM; while sleep 1; do :; done"]
"#,
        ctl.agent_volume(),
        attack_bin().display()
    );
    add_service(&mut doc, "probe", &probe);
    Project::new(doc)
}

fn fetch_figures(project: &Project) -> Json {
    let path = format!("/v1/secrets/{SECRET_NAME}");
    let out = project.exec_ok("probe", &["/x/seg-attack", "fetch", "/run/seg/agent/agent.sock", &path, FETCHES]);
    let text = String::from_utf8_lossy(&out).into_owned();
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("fetch printed no JSON ({e}): {text}"))
}

#[test]
fn a_connection_storm_from_ten_containers_starves_no_sidecar() {
    let _serial = begin();
    let ctl = Controller::start();
    let project = project_with_probe(&ctl);
    project.deliver(&ctl, &random_text(32), &["--ttl", "10m"]);
    let quiet = fetch_figures(&project);
    assert_eq!(quiet["failed"], 0, "fetches failed without any storm: {quiet}");

    let (agent, attack) = (ctl.agent_volume(), format!("{}:/x/seg-attack:ro", attack_bin().display()));
    let each = STORM_CONNECTIONS_EACH.to_string();
    let storms: Vec<Container> = (0..STORM_CONTAINERS)
        .map(|_| {
            Container::run(&[
                "--network",
                "none",
                "--ulimit",
                "nofile=4096:4096",
                "-v",
                &agent,
                "-v",
                &attack,
                BUSYBOX_IMAGE,
                "/x/seg-attack",
                "storm",
                "/run/seg/agent/agent.sock",
                &each,
                "40",
            ])
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));

    let stormy = fetch_figures(&project);
    let started = Instant::now();
    let rotate =
        ctl.segctl_value(&["secret", "rotate", SECRET_NAME], &random_text(32), &["--wait", "--timeout", "20s"]);
    let rotate_ms = started.elapsed().as_millis();
    for c in &storms {
        docker(&["kill", &c.id]);
    }
    let storm_report: Vec<String> = storms.iter().map(|c| c.logs().trim().to_owned()).collect();
    eprintln!(
        "{{\"quiet\":{quiet},\"storm\":{stormy},\"rotate_wait_ms\":{rotate_ms},\"storm_clients\":{}}}",
        serde_json::to_string(&storm_report).unwrap()
    );
    assert!(rotate.success(), "rotate --wait failed under the storm: {}", rotate.text());
    assert_eq!(stormy["failed"], 0, "legitimate fetches failed under the storm: {stormy}");
}
