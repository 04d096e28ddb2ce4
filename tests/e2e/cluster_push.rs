//! Two seg nodes on one cluster store (a real 3-member etcd over mutual
//! TLS): a secret put, rotated, revoked and removed on node A reaches an
//! app whose sidecar talks to node B only — by push, at once (the lease is
//! 10 minutes, so no renewal explains it), with no container restarted;
//! `secret status` and `rotate --wait` on A see B's consumer, and lose it
//! when B stops (at once) or is killed (when its etcd lease runs out).
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
    let node = |name: &str| {
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
        args.extend(["--node-name", name]);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let (flags_a, flags_b) = (node("a"), node("b"));
    let a = Controller::start_with(&flags_a.iter().map(String::as_str).collect::<Vec<_>>());
    let mut b = Controller::start_with(&flags_b.iter().map(String::as_str).collect::<Vec<_>>());
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

    // Node A sees B's consumer (B publishes its consumers to etcd).
    let seen = wait_until(Duration::from_secs(10), "node A to list node B's consumer", || {
        let st = status_of(&a, SECRET_NAME);
        let consumers = st["consumers"].as_array()?.clone();
        (consumers.len() == 1 && consumers[0]["version"] == 1).then_some(consumers)
    });
    assert_eq!((&seen[0]["node"], &seen[0]["watching"]), (&"b".into(), &true.into()), "{seen:?}");

    // Rotated on A with --wait: B pushes it to its sidecar, which
    // acknowledges to B, which tells A.
    let v2 = random_text(32);
    let t0 = Instant::now();
    let out = a.segctl_value(&["secret", "rotate", SECRET_NAME], &v2, &["--wait", "--timeout", "20s"]);
    let waited = t0.elapsed();
    assert!(out.success(), "rotate --wait on node A: {}", out.text());
    assert!(out.text().contains("all 1 consumer(s) have version 2"), "{}", out.text());
    assert_eq!(
        project.read_file("app", SECRET_FILE).as_deref(),
        Some(v2.as_slice()),
        "--wait returned before"
    );
    let table = a.segctl_ok(&["secret", "status", SECRET_NAME]);
    assert!(table.contains("NODE") && table.lines().any(|l| l.contains(" b ")), "{table}");

    // Revoked on A: wiped on B's side at once; removed on A: gone from B.
    a.segctl_ok(&["secret", "revoke", SECRET_NAME, "--from", &project.target("app")]);
    let wiped = project.wait_for_absence("app", SECRET_FILE, Duration::from_secs(5));
    a.segctl_ok(&["secret", "rm", SECRET_NAME]);
    wait_until(Duration::from_secs(5), "node B to forget the removed secret", || {
        b.list().iter().all(|s| s["name"] != SECRET_NAME).then_some(())
    });
    let now = docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", &sidecar]);
    assert_eq!(now, started, "the sidecar restarted");

    // A node that stops drops out of the others' statuses (its lease ends).
    a.put(SECRET_NAME, &v1, &["--ttl", "10m"]);
    a.grant(SECRET_NAME, &project.target("app"));
    wait_until(Duration::from_secs(10), "node A to list B's consumer again", || {
        (status_of(&a, SECRET_NAME)["consumers"].as_array()?.len() == 1).then_some(())
    });
    let stopped = Instant::now();
    b.stop();
    wait_until(Duration::from_secs(20), "B's consumer to leave A's status", || {
        status_of(&a, SECRET_NAME)["consumers"].as_array()?.is_empty().then_some(())
    });
    let left_stopped = stopped.elapsed();

    // A node killed outright drops out when its etcd lease runs out.
    b.start_again();
    wait_until(Duration::from_secs(20), "B's consumer to come back to A's status", || {
        (status_of(&a, SECRET_NAME)["consumers"].as_array()?.len() == 1).then_some(())
    });
    let killed = Instant::now();
    let pid = b.pid().expect("b runs").to_string();
    assert!(std::process::Command::new("kill").args(["-KILL", &pid]).status().unwrap().success());
    wait_until(Duration::from_secs(30), "a killed node's consumer to leave A's status", || {
        status_of(&a, SECRET_NAME)["consumers"].as_array()?.is_empty().then_some(())
    });
    eprintln!(
        "node A → app on node B: rotate --wait {waited:?}, revocation wiped after {wiped:?}; \
         a stopped node left the others' statuses after {left_stopped:?}, a killed one after {:?}",
        killed.elapsed()
    );
}
