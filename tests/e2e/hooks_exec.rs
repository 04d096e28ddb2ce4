//! Exec hooks against the real engine: a pre-rotate command run inside the
//! running containers of a service, found by compose labels at rotation
//! time — whatever the containers are called (compose v1 `p_db_1`, v2
//! `p-db-2`), however many replicas, in however many projects — with the
//! new value on its stdin and nowhere else.
//!
//! The "services" here are plain `docker run` containers carrying the
//! compose labels, named the way each compose version names them.

use seg_e2e::serde_json::Value as Json;
use seg_e2e::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// A long-running busybox "replica" of `project/service` called `name`.
fn replica(project: &str, service: &str, name: &str) -> Container {
    let (p, s) =
        (format!("com.docker.compose.project={project}"), format!("com.docker.compose.service={service}"));
    let args = ["--name", name, "--label", &p, "--label", &s, "--network", "none", "--tmpfs", "/tmp"];
    Container::run(&[&args[..], &[BUSYBOX_IMAGE, "sleep", "3600"]].concat())
}

/// A secret at version 1 granted to `PROJECT/app` for each project.
fn secret(ctl: &Controller, projects: &[&str]) -> Vec<u8> {
    let v1 = random_text(32);
    ctl.put(SECRET_NAME, &v1, &[]);
    for p in projects {
        ctl.grant(SECRET_NAME, &format!("{p}/app"));
    }
    v1
}

fn rotate(ctl: &Controller, value: &[u8]) -> Out {
    ctl.segctl_value(&["secret", "rotate", SECRET_NAME], value, &[])
}

fn cat(container: &str, path: &str) -> Vec<u8> {
    let out = docker(&["exec", container, "cat", path]);
    assert!(out.success(), "cat {path} in {container}: {}", out.text());
    out.stdout
}

fn exec_hooks(ctl: &Controller) -> Vec<Json> {
    ctl.access_log().into_iter().filter(|e| e["action"] == "hook" && e["hook"]["action"] == "exec").collect()
}

/// `GET PATH` on Docker's API, parsed (curl: the docker CLI cannot inspect an exec).
fn docker_api(path: &str) -> Json {
    let out = run(
        Command::new("curl").args([
            "-sf",
            "--unix-socket",
            "/var/run/docker.sock",
            &format!("http://localhost{path}"),
        ]),
        Duration::from_secs(10),
    );
    assert!(out.success(), "curl {path}: {}", out.text());
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{path}: not JSON ({e})"))
}

/// Rotates to `value` while inspecting, on Docker's API, every exec that
/// runs in `replicas` (an exec leaves the container's list once it ended).
fn rotate_inspecting_execs(
    ctl: &Controller,
    value: &[u8],
    replicas: &[Container],
) -> (Out, Vec<(String, Json)>) {
    std::thread::scope(|s| {
        let rotation = s.spawn(|| rotate(ctl, value));
        let mut seen: Vec<(String, Json)> = Vec::new();
        let started = Instant::now();
        while seen.len() < replicas.len()
            && started.elapsed() < Duration::from_secs(20)
            && !rotation.is_finished()
        {
            for r in replicas {
                let ids = docker_api(&format!("/containers/{}/json", r.id))["ExecIDs"].clone();
                for id in ids.as_array().into_iter().flatten().filter_map(Json::as_str) {
                    if !seen.iter().any(|(i, _)| i == id) {
                        seen.push((id.to_owned(), docker_api(&format!("/exec/{id}/json"))));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (rotation.join().unwrap(), seen)
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_pre_rotate_exec_hook_reaches_each_replica_with_the_value_on_stdin_only() {
    let _serial = begin();
    let ctl = Controller::start();
    let project = unique_name("hx");
    // One replica named as compose v1 does, one as v2 does.
    let (v1_name, v2_name) = (format!("{project}_db_1"), format!("{project}-db-2"));
    let replicas = [replica(&project, "db", &v1_name), replica(&project, "db", &v2_name)];
    let _other = replica(&unique_name("hy"), "db", &unique_name("hy-db-"));
    let old = secret(&ctl, &[&project]);
    // The hook records its stdin, its own argv and environment, and stays
    // up a moment so the exec can be inspected while it runs.
    let script = "set -e; cat > /tmp/got; cat /proc/$$/cmdline > /tmp/cmdline; cat /proc/$$/environ > /tmp/environ; sleep 2";
    let target = format!("{project}/db");
    ctl.segctl_ok(&["secret", "hook", SECRET_NAME, "--pre-rotate-exec", &target, "--", "sh", "-c", script]);

    let v2 = random_text(32);
    let (out, inspected) = rotate_inspecting_execs(&ctl, &v2, &replicas);
    assert!(out.success(), "rotate failed ({}): {}\n{}", out.code(), out.text(), ctl.log_tail(20));
    assert!(out.text().contains("exit 0 in 2 container(s)"), "{}", out.text());
    assert_eq!(inspected.len(), 2, "expected to inspect one exec per replica while it ran");
    for (id, exec) in &inspected {
        let text = exec.to_string();
        assert!(
            !text.contains(std::str::from_utf8(&v2).unwrap()),
            "the value is in the inspection of exec {id}: {text}"
        );
        assert_eq!(exec["ProcessConfig"]["entrypoint"], "sh", "{text}");
    }
    for r in &replicas {
        assert_eq!(cat(&r.id, "/tmp/got"), v2, "a replica did not get the new value on stdin");
        assert!(!contains(&cat(&r.id, "/tmp/cmdline"), &v2), "the value is in the hook's argv");
        let environ = cat(&r.id, "/tmp/environ");
        assert!(!contains(&environ, &v2), "the value is in the hook's environment");
        assert!(contains(&environ, b"SEG_SECRET_VERSION=2"), "{}", String::from_utf8_lossy(&environ));
    }
    assert_eq!(ctl.admin_get(SECRET_NAME), (200, v2.clone()));
    let lines = exec_hooks(&ctl);
    let containers: Vec<&str> = lines.iter().filter_map(|l| l["hook"]["container"].as_str()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(containers[0].starts_with(&v2_name) || containers[0].starts_with(&v1_name), "{containers:?}");
    for l in &lines {
        assert_eq!(
            (l["hook"]["kind"].as_str(), l["hook"]["target"].as_str()),
            (Some("pre-rotate"), Some(target.as_str()))
        );
        assert_eq!((l["attempted_version"].as_u64(), l["outcome"].as_str()), (Some(2), Some("allowed")));
        assert!(l["ts"].as_str().unwrap().ends_with('Z') && l["ts"].as_str().unwrap().contains('.'), "{l}");
    }
    let log = std::fs::read(ctl.access_log_path()).unwrap();
    assert!(!contains(&log, &v2) && !contains(&log, &old), "a value reached the access log");
}

#[test]
fn a_bare_service_reaches_that_service_in_each_consumer_project() {
    let _serial = begin();
    let ctl = Controller::start();
    let (a, b, c) = (unique_name("hxa"), unique_name("hxb"), unique_name("hxc"));
    let _ra = replica(&a, "db", &format!("{a}_db_1"));
    let _rb = replica(&b, "db", &format!("{b}-db-1"));
    let rc = replica(&c, "db", &format!("{c}-db-1"));
    secret(&ctl, &[&a, &b]);
    ctl.segctl_ok(&[
        "secret",
        "hook",
        SECRET_NAME,
        "--pre-rotate-exec",
        "db",
        "--",
        "sh",
        "-c",
        "set -e; cat > /tmp/got",
    ]);
    let v2 = random_text(32);
    let out = rotate(&ctl, &v2);
    assert!(out.success(), "rotate failed: {}", out.text());
    let reached: Vec<String> =
        exec_hooks(&ctl).iter().map(|l| l["hook"]["target"].as_str().unwrap().to_owned()).collect();
    assert_eq!(
        reached,
        [format!("{a}/db"), format!("{b}/db")],
        "project {c} holds no grant: it is not reached"
    );
    assert!(
        !docker(&["exec", &rc.id, "cat", "/tmp/got"]).success(),
        "a non-consumer project's db got the value"
    );
}

#[test]
fn a_failing_missing_or_hanging_exec_hook_aborts_the_rotation() {
    let _serial = begin();
    let ctl = Controller::start();
    let project = unique_name("hx");
    let r = replica(&project, "db", &format!("{project}-db-1"));
    let v1 = secret(&ctl, &[&project]);
    let target = format!("{project}/db");
    let failing = "cat >/dev/null; echo 'FATAL: role cannot be altered' >&2; exit 4";
    ctl.segctl_ok(&["secret", "hook", SECRET_NAME, "--pre-rotate-exec", &target, "--", "sh", "-c", failing]);
    let v2 = random_text(32);
    let out = rotate(&ctl, &v2);
    let text = out.text();
    assert!(!out.success(), "a failing exec hook must fail the rotation: {text}");
    for part in ["exit 4 in", "FATAL: role cannot be altered", "version 1 stays current"] {
        assert!(text.contains(part), "{part:?} missing: {text}");
    }
    assert!(!text.contains(std::str::from_utf8(&v2).unwrap()), "the new value was printed");
    assert_eq!(ctl.admin_get(SECRET_NAME), (200, v1.clone()));
    let line = exec_hooks(&ctl).pop().unwrap();
    assert_eq!((line["outcome"].as_str(), line["attempted_version"].as_u64()), (Some("error"), Some(2)));
    assert!(
        line["version"].is_null(),
        "a refused rotation's hook line names a version that never existed: {line}"
    );

    // A hook that hangs is killed at its timeout (through a pidfd of its host PID).
    ctl.segctl_ok(&[
        "secret",
        "hook",
        SECRET_NAME,
        "--pre-rotate-exec",
        &target,
        "--timeout",
        "1s",
        "--",
        "sleep",
        "37",
    ]);
    let started = Instant::now();
    let out = rotate(&ctl, &v2);
    assert!(!out.success() && out.text().contains("timed out after 1s"), "{}", out.text());
    assert!(out.text().contains("was killed"), "{}", out.text());
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let top = docker_ok(&["top", &r.id]);
    assert!(!top.contains("sleep 37"), "the timed-out exec still runs:\n{top}");
    assert_eq!(ctl.admin_get(SECRET_NAME), (200, v1.clone()));

    // No running container of the service: refused too, saying so.
    docker_ok(&["stop", "-t", "0", &r.id]);
    let out = rotate(&ctl, &v2);
    assert!(
        !out.success() && out.text().contains(&format!("no running container of service {target}")),
        "{}",
        out.text()
    );
    assert_eq!(ctl.admin_get(SECRET_NAME), (200, v1));
}
