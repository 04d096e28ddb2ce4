//! Rotation without restarts, against the real engine: pushed versions,
//! acknowledgements, hooks, revocation, and a client abusing the stream.
//!
//! Files are read on the host through `/proc/<pid>/root/…` of the app
//! container (same tmpfs the app sees), which needs no `docker exec` and so
//! measures wipe times to the millisecond.

use seg_e2e::serde_json::Value as Json;
use seg_e2e::serde_norway::Value as Yaml;
use seg_e2e::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

// ------------------------------------------------------------------ helpers

/// The example, with the sidecar declaring `on_rotate` (if any) and the app
/// replaced by a busybox loop that logs every SIGHUP it gets.
fn project_with_hup_app(ctl: &Controller, on_rotate: Option<&str>) -> Project {
    let mut doc = example_yaml(ctl);
    let script = "trap 'echo app: got HUP' HUP; trap 'exit 0' TERM INT; \
                  echo app: started; while true; do sleep 1 & wait $$!; done";
    let command = Yaml::Sequence(vec!["sh".into(), "-c".into(), script.into()]);
    service_mut(&mut doc, "app").insert("command".into(), command);
    if let Some(action) = on_rotate {
        let env = service_mut(&mut doc, "app-secrets")
            .get_mut("environment")
            .and_then(Yaml::as_mapping_mut)
            .expect("the example sidecar has an environment map");
        env.insert("SEG_ON_ROTATE".into(), action.into());
    }
    Project::new(doc)
}

fn status(ctl: &Controller, name: &str) -> Json {
    let text = ctl.segctl_ok(&["secret", "status", name, "-o", "json"]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("status -o json is not JSON ({e}): {text}"))
}

/// Waits until `n` consumers watch `name` and all acknowledged `version`.
fn wait_consumers(ctl: &Controller, name: &str, n: usize, version: u64, within: Duration) -> Json {
    wait_until(within, &format!("{n} consumer(s) of {name} at version {version}"), || {
        let st = status(ctl, name);
        let consumers = st["consumers"].as_array()?;
        let ok = consumers.len() == n
            && consumers.iter().all(|c| c["watching"] == true && c["version"].as_u64() == Some(version));
        ok.then_some(st)
    })
}

fn inspect(id: &str, format: &str) -> String {
    docker_ok(&["inspect", "-f", format, id])
}

/// Start time and restart count: what a redeploy or restart would change.
fn lifetime(id: &str) -> String {
    inspect(id, "{{.Id}} {{.State.StartedAt}} restarts={{.RestartCount}}")
}

fn host_path(container: &str, path: &str) -> PathBuf {
    let pid = inspect(container, "{{.State.Pid}}");
    PathBuf::from(format!("/proc/{pid}/root{path}"))
}

fn rotate(ctl: &Controller, value: &[u8], extra: &[&str]) -> Out {
    ctl.segctl_value(&["secret", "rotate", SECRET_NAME], value, extra)
}

/// A new version over the admin socket, without a process per call.
fn admin_put(ctl: &Controller, value: &[u8]) -> u16 {
    use seg_common::uds_http::{send, Request};
    let path = format!("/v1/secrets/{SECRET_NAME}");
    let req = Request { method: "PUT", path: &path, content_type: "application/octet-stream", body: value };
    block_on(send(&ctl.admin_socket(), &req, Duration::from_secs(10), 1 << 16)).expect("admin PUT").status
}

/// Delivers a new value (10-minute lease) to `project`'s app and waits until
/// its sidecar watches it at version 1; returns the value.
fn deliver_watched(ctl: &Controller, project: &Project) -> Vec<u8> {
    let value = random_text(32);
    project.deliver(ctl, &value, &["--ttl", "10m"]);
    wait_consumers(ctl, SECRET_NAME, 1, 1, Duration::from_secs(10));
    value
}

fn hook_entries(ctl: &Controller, kind: &str) -> Vec<Json> {
    ctl.access_log().into_iter().filter(|e| e["action"] == "hook" && e["hook"]["kind"] == kind).collect()
}

// -------------------------------------------------------------------- tests

#[test]
fn a_rotation_reaches_the_running_app_without_a_restart_and_signals_it() {
    let _serial = begin();
    let ctl = Controller::start();
    let project = project_with_hup_app(&ctl, Some("signal:HUP"));
    deliver_watched(&ctl, &project);
    let (app, sidecar) = (project.container("app"), project.container("app-secrets"));
    let before = (lifetime(&app), lifetime(&sidecar));
    assert!(!project.logs("app").contains("got HUP"), "HUP before any rotation");

    let v2 = random_text(32);
    let started = Instant::now();
    let out = rotate(&ctl, &v2, &["--wait", "--timeout", "10s"]);
    let took = started.elapsed();
    assert!(out.success(), "rotate --wait failed ({}): {}", out.code(), out.text());
    assert!(out.stdout_str().contains("all 1 consumer(s) have version 2"), "{}", out.text());
    eprintln!("rotate --wait took {took:?}: {}", out.stdout_str().trim());
    assert_eq!(std::fs::read(host_path(&app, SECRET_FILE)).ok(), Some(v2.clone()), "the app does not see v2");
    assert_eq!((lifetime(&app), lifetime(&sidecar)), before, "a container restarted or was replaced");

    let logs = wait_until(Duration::from_secs(5), "the app to log the HUP", || {
        let logs = project.logs("app");
        logs.contains("got HUP").then_some(logs)
    });
    assert_eq!(logs.matches("got HUP").count(), 1, "{logs}");
    let hook = &hook_entries(&ctl, "post-rotate")[0];
    assert_eq!(hook["hook"]["action"], "signal:HUP");
    assert_eq!(hook["hook"]["status"], "ok");
    assert_eq!((hook["secret"].as_str(), hook["version"].as_u64()), (Some(SECRET_NAME), Some(2)));
    assert!(hook["hook"]["target"].as_str().unwrap().contains(&app[..12]), "{hook}");
    let st = status(&ctl, SECRET_NAME);
    assert!(st["consumers"][0]["last_hook"].as_str().unwrap_or("").starts_with("signal:HUP"), "{st}");
    let log = std::fs::read_to_string(ctl.access_log_path()).unwrap();
    assert!(!log.contains(std::str::from_utf8(&v2).unwrap()), "a value reached the access log");
}

#[test]
fn a_failing_pre_rotate_hook_leaves_the_old_version_everywhere() {
    let _serial = begin();
    let ctl = Controller::start();
    let project = Project::example(&ctl);
    let v1 = deliver_watched(&ctl, &project);

    let failing = "cat >/dev/null; echo 'cannot reach the database' >&2; exit 3";
    ctl.segctl_ok(&["secret", "hook", SECRET_NAME, "--pre-rotate", failing, "--timeout", "5s"]);
    let v2 = random_text(32);
    let out = rotate(&ctl, &v2, &["--wait"]);
    assert!(!out.success(), "a failing pre-rotate hook must fail the rotation: {}", out.text());
    let text = out.text();
    assert!(text.contains("exit 3") && text.contains("version 1 stays current"), "{text}");
    assert!(text.contains("cannot reach the database"), "{text}");
    assert!(!text.contains(std::str::from_utf8(&v2).unwrap()), "the new value was printed");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(project.read_file("app", SECRET_FILE), Some(v1.clone()), "the app lost the old version");
    assert_eq!(ctl.admin_get(SECRET_NAME), (200, v1.clone()));
    assert_eq!(ctl.list()[0]["version"], 1);
    assert_eq!(status(&ctl, SECRET_NAME)["consumers"][0]["version"], 1);
    assert_eq!(hook_entries(&ctl, "pre-rotate")[0]["hook"]["status"], "exit 3");

    // A hook that hangs is killed at its timeout, with the same outcome.
    ctl.segctl_ok(&["secret", "hook", SECRET_NAME, "--pre-rotate", "sleep 30", "--timeout", "1s"]);
    let started = Instant::now();
    let out = rotate(&ctl, &v2, &[]);
    assert!(!out.success() && out.text().contains("timed out after 1s"), "{}", out.text());
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_eq!(ctl.admin_get(SECRET_NAME), (200, v1.clone()));

    // A hook that accepts gets the new value on stdin, and it is distributed.
    let seen = ctl.base_dir().join("seen-by-hook");
    let accepting = format!("cat > {}", seen.display());
    ctl.segctl_ok(&["secret", "hook", SECRET_NAME, "--pre-rotate", &accepting]);
    let out = rotate(&ctl, &v2, &["--wait", "--timeout", "10s"]);
    assert!(out.success(), "{}", out.text());
    assert_eq!(std::fs::read(&seen).unwrap(), v2, "the hook did not get the value on stdin");
    project.wait_for_file("app", SECRET_FILE, &v2, Duration::from_secs(5));
    let statuses: Vec<Json> =
        hook_entries(&ctl, "pre-rotate").iter().map(|e| e["hook"]["status"].clone()).collect();
    assert_eq!(statuses, ["exit 3", "timed out after 1s", "exit 0"]);
}

#[test]
fn twenty_sidecars_acknowledge_a_rotation() {
    let _serial = begin();
    let ctl = Controller::start();
    ctl.put(SECRET_NAME, &random_text(32), &["--ttl", "10m"]);
    ctl.grant(SECRET_NAME, "fleet");
    let extra = [
        "--label",
        "seg.service=fleet",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges:true",
        "--ulimit",
        "memlock=1048576",
    ];
    let fleet: Vec<Container> = (0..20).map(|_| Container::sidecar(&ctl, SECRET_NAME, &extra)).collect();
    wait_consumers(&ctl, SECRET_NAME, 20, 1, Duration::from_secs(60));

    let v2 = random_text(32);
    let started = Instant::now();
    let out = rotate(&ctl, &v2, &["--wait", "--timeout", "30s"]);
    let took = started.elapsed();
    assert!(out.success(), "rotate --wait failed ({}): {}", out.code(), out.text());
    assert!(out.stdout_str().contains("pushed to 20 consumer(s)"), "{}", out.text());
    assert!(out.stdout_str().contains("all 20 consumer(s) have version 2"), "{}", out.text());
    eprintln!("rotate --wait with 20 sidecars took {took:?}: {}", out.stdout_str().trim());

    let st = status(&ctl, SECRET_NAME);
    let consumers = st["consumers"].as_array().unwrap();
    assert_eq!(consumers.len(), 20, "{st}");
    assert!(consumers
        .iter()
        .all(|c| c["version"] == 2 && c["watching"] == true && c["acked_at_ms"].is_u64()));
    let ids: Vec<String> = consumers.iter().map(|c| c["container_id"].as_str().unwrap().to_owned()).collect();
    for c in &fleet {
        assert!(ids.contains(&c.id), "{} is not listed", c.id);
        assert_eq!(std::fs::read(host_path(&c.id, SECRET_FILE)).ok().as_deref(), Some(&v2[..]), "{}", c.id);
    }
    let table = ctl.segctl_ok(&["secret", "status", SECRET_NAME]);
    assert!(table.contains("20 of 20 have version 2"), "{table}");
    assert_eq!(table.lines().filter(|l| l.contains(" fleet ")).count(), 20, "{table}");
}

#[test]
fn revocation_wipes_within_a_second_and_a_returning_consumer_catches_up() {
    let _serial = begin();
    let ctl = Controller::start();
    let project = Project::example(&ctl);
    let v1 = deliver_watched(&ctl, &project);
    let target = project.target("app");
    let file = host_path(&project.container("app"), SECRET_FILE);

    // A 10-minute lease: only the push can explain a wipe within a second.
    let gone_in = |what: &str, args: &[&str]| {
        let started = Instant::now();
        ctl.segctl_ok(args);
        while file.exists() {
            assert!(started.elapsed() < Duration::from_secs(1), "{what}: the file is still there after 1 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        eprintln!("{what}: file wiped {:?} after the command started", started.elapsed());
    };
    gone_in("revoke", &["secret", "revoke", SECRET_NAME, "--from", &target]);
    ctl.grant(SECRET_NAME, &target);
    project.wait_for_file("app", SECRET_FILE, &v1, Duration::from_secs(3));
    gone_in("rm", &["secret", "rm", SECRET_NAME]);
    ctl.put(SECRET_NAME, &v1, &["--ttl", "10m"]);
    ctl.grant(SECRET_NAME, &target);
    project.wait_for_file("app", SECRET_FILE, &v1, Duration::from_secs(3));
    wait_consumers(&ctl, SECRET_NAME, 1, 1, Duration::from_secs(10));

    // A consumer frozen during a rotation gets it when it thaws…
    let sidecar = project.container("app-secrets");
    docker_ok(&["pause", &sidecar]);
    let v2 = random_text(32);
    let out = rotate(&ctl, &v2, &["--wait", "--timeout", "2s"]);
    assert!(!out.success(), "--wait must fail while a consumer is frozen: {}", out.text());
    assert!(out.text().contains("1 of 1 consumer(s) do not have version 2"), "{}", out.text());
    assert!(out.text().contains("has v1"), "{}", out.text());
    docker_ok(&["unpause", &sidecar]);
    project.wait_for_file("app", SECRET_FILE, &v2, Duration::from_secs(3));
    // …and one that was stopped gets it when it starts again.
    docker_ok(&["stop", "-t", "5", &sidecar]);
    assert!(!file.exists(), "a stopped sidecar wipes its files");
    let v3 = random_text(32);
    let out = rotate(&ctl, &v3, &[]);
    assert!(out.success(), "{}", out.text());
    docker_ok(&["start", &sidecar]);
    project.wait_for_file("app", SECRET_FILE, &v3, Duration::from_secs(10));
    wait_consumers(&ctl, SECRET_NAME, 1, 3, Duration::from_secs(10));
}

#[test]
fn a_client_that_floods_or_never_reads_is_cut_off_without_affecting_others() {
    let _serial = begin();
    let ctl = Controller::start();
    let project = Project::example(&ctl);
    deliver_watched(&ctl, &project);
    ctl.grant(SECRET_NAME, "abuser");

    let agent = ctl.agent_volume();
    let abuser = Container::run(&[
        "--label",
        "seg.service=abuser",
        "--network",
        "none",
        "-v",
        &agent,
        SIDECAR_IMAGE,
        "watch",
        "--connections",
        "3000",
        "--no-read",
    ]);
    let summary: Json = wait_until(Duration::from_secs(60), "the abuser to try its 3000 streams", || {
        let logs = docker(&["logs", &abuser.id]).stdout_str();
        logs.lines().find(|l| l.contains("\"opened\"")).and_then(|l| serde_json::from_str(l).ok())
    });
    eprintln!("abuser: {summary}");
    assert_eq!(summary["opened"], 4, "the per-container limit did not hold: {summary}");
    let refused =
        summary["refused"]["429"].as_u64().unwrap_or(0) + summary["refused"]["503"].as_u64().unwrap_or(0);
    assert_eq!(refused + summary["errors"].as_u64().unwrap_or(0), 2996, "{summary}");
    let watches = |ctl: &Controller| -> u64 {
        let report: Json = serde_json::from_str(&ctl.segctl_ok(&["status", "-o", "json"])).unwrap();
        report["watches"].as_u64().unwrap()
    };
    assert_eq!(watches(&ctl), 5, "the sidecar's stream and the abuser's four");

    // Rotations until the abuser's unread streams fill up and are cut off;
    // the real sidecar keeps up all along.
    let started = Instant::now();
    let mut rotations = 0;
    while watches(&ctl) > 1 {
        assert!(rotations < 3000, "the abuser's streams were never cut off");
        for _ in 0..50 {
            assert_eq!(admin_put(&ctl, &random_text(16)), 200);
            rotations += 1;
        }
    }
    eprintln!("abuser cut off after {rotations} rotations in {:?}", started.elapsed());
    assert!(ctl.log_tail(400).contains("cut off the watch stream"), "{}", ctl.log_tail(20));
    let last = random_text(32);
    let started = Instant::now();
    let out = rotate(&ctl, &last, &["--wait", "--timeout", "10s"]);
    assert!(out.success(), "the real sidecar was affected: {}", out.text());
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    project.wait_for_file("app", SECRET_FILE, &last, Duration::from_secs(2));
    assert_eq!(watches(&ctl), 1);
    assert!(project.state("app-secrets").starts_with("running healthy"), "{}", project.state("app-secrets"));
}
