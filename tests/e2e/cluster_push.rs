//! Two seg nodes on one cluster store (a real 3-member etcd over mutual
//! TLS): a secret put, rotated, revoked and removed on node A reaches an
//! app whose sidecar talks to node B only — by push, at once (the lease is
//! 10 minutes, so no renewal explains it), with no container restarted.
//!
//! Both nodes run on this host's one Docker engine and enforce no policy
//! (so neither touches the firewall); three nodes on three engines are
//! issue #11's next step.

use seg_e2e::*;
use std::time::{Duration, Instant};

fn status_of(ctl: &Controller, name: &str) -> serde_json::Value {
    serde_json::from_str(&ctl.segctl_ok(&["secret", "status", name, "-o", "json"])).expect("status JSON")
}

#[test]
fn changes_made_on_one_node_reach_the_sidecars_of_another_at_once() {
    let _serial = begin();
    let etcd = EtcdCluster::start();
    let kek = etcd.dir().join("kek");
    write_private(&kek, &random_bytes(32));
    let flags = etcd.node_flags(&kek);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let a = Controller::start_with(&flags);
    let b = Controller::start_with(&flags);
    for node in [&a, &b] {
        let status: serde_json::Value =
            serde_json::from_str(&node.segctl_ok(&["status", "-o", "json"])).unwrap();
        assert_eq!(status["store"], "etcd", "{status}");
    }

    // The app's sidecar knows node B only; the secret is put and granted on A.
    let project = Project::example(&b);
    let v1 = random_text(32);
    a.put(SECRET_NAME, &v1, &["--ttl", "10m"]);
    a.grant(SECRET_NAME, &project.target("app"));
    project.up();
    project.wait_for_file("app", SECRET_FILE, &v1, Duration::from_secs(30));
    let listed = b.list();
    assert!(listed.iter().any(|s| s["name"] == SECRET_NAME && s["version"] == 1), "{listed:?}");
    let sidecar = project.container("app-secrets");
    let started = docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", &sidecar]);

    // Rotated on A: B pushes it to its sidecar, which acknowledges to B.
    let v2 = random_text(32);
    let t0 = Instant::now();
    let out = a.segctl_value(&["secret", "rotate", SECRET_NAME], &v2, &[]);
    assert!(out.success(), "rotate on node A: {}", out.text());
    project.wait_for_file("app", SECRET_FILE, &v2, Duration::from_secs(5));
    let rotated = t0.elapsed();
    let acked = wait_until(Duration::from_secs(5), "node B's consumer to acknowledge version 2", || {
        let st = status_of(&b, SECRET_NAME);
        let consumers = st["consumers"].as_array()?.clone();
        (consumers.len() == 1 && consumers[0]["version"] == 2).then_some(consumers)
    });
    assert_eq!(acked[0]["watching"], true, "{acked:?}");

    // Revoked on A: wiped on B's side at once; removed on A: gone from B.
    a.segctl_ok(&["secret", "revoke", SECRET_NAME, "--from", &project.target("app")]);
    let wiped = project.wait_for_absence("app", SECRET_FILE, Duration::from_secs(5));
    a.segctl_ok(&["secret", "rm", SECRET_NAME]);
    wait_until(Duration::from_secs(5), "node B to forget the removed secret", || {
        b.list().iter().all(|s| s["name"] != SECRET_NAME).then_some(())
    });
    let now = docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", &sidecar]);
    assert_eq!(now, started, "the sidecar restarted");
    eprintln!("node A → app on node B: rotation on disk after {rotated:?} (rotate command included), revocation wiped after {wiped:?}");
}
