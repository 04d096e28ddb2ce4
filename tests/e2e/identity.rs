//! Identity cannot be stolen, handed on or outlive its container — each test
//! is an attack from issue #8 run against the real engine:
//!
//! - a host process connects, hands its connection to the test and exits;
//!   the test makes a granted container's process take over that PID
//!   (`ns_last_pid`) and asks for the secret on the handed-over connection;
//! - a granted container hands its connection to an accomplice and is
//!   removed; the secret is rotated; the accomplice asks again;
//! - a container that mounts the agent directory read-write is refused;
//! - a standalone container asks the controller to signal another one;
//! - a removed container stays in the consumer list.

use seg_e2e::*;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Forks a short-lived `sleep` every second, so the host's next PID can be
/// steered into it.
const FORKING_LOOP: &str = "trap 'exit 0' TERM; while :; do sleep 1; done";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A standalone container labelled `seg.service=SERVICE` running `script`.
fn standalone(service: &str, extra: &[&str], script: &str) -> Container {
    let label = format!("seg.service={service}");
    let mut args = vec!["--label", &label, "--network", "none"];
    args.extend_from_slice(extra);
    args.extend([BUSYBOX_IMAGE, "sh", "-c", script]);
    Container::run(&args)
}

/// Steers the host's next PID to `pid` and waits until a process of
/// container `id` has it; `false` if some other process took it.
fn steer_pid_into(pid: u32, id: &str) -> bool {
    std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).expect("write ns_last_pid (root?)");
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        if pid_in_container(pid, id) {
            return true;
        }
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

#[test]
fn a_reused_pid_does_not_inherit_a_granted_containers_identity() {
    let _serial = begin();
    let ctl = Controller::start();
    // Let `nobody` reach the agent socket, as any host user can in production.
    std::fs::set_permissions(ctl.base_dir(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let value = random_text(32);
    ctl.put("stolen", &value, &[]);
    ctl.grant("stolen", "granted");
    let granted = standalone("granted", &[], FORKING_LOOP);
    let (attack, sock) = (attack_bin(), ctl.agent_socket());
    let mut reused = 0;
    // Steering can lose the race to any other process forking on the host
    // (a busy build machine): try often enough.
    for _ in 0..200 {
        let drop = DropSocket::new();
        let mut child = Command::new(&attack)
            .arg("pass")
            .arg(&sock)
            .arg(drop.path())
            .uid(65534)
            .gid(65534)
            .stdout(Stdio::null())
            .spawn()
            .expect("start seg-attack");
        let mut conn = drop.receive(Duration::from_secs(5));
        let pid = child.id();
        child.wait().expect("seg-attack exits");
        if !steer_pid_into(pid, &granted.id) {
            continue;
        }
        reused += 1;
        // The PID is now a granted container's: yet the connection is not.
        if let Ok((status, body)) = get_on(&mut conn, "/v1/secrets/stolen") {
            assert!(!contains(&body, &value), "the secret was stolen through a reused PID");
            assert_ne!(status, 200, "a reused PID was served: {}", String::from_utf8_lossy(&body));
        }
        if reused == 3 {
            break;
        }
    }
    assert!(reused > 0, "the granted container's process never took over the attacker's PID in 200 tries");
    eprintln!("PID taken over by the granted container {reused} time(s); nothing was served");
    let log = ctl.access_log();
    assert!(
        !log.iter().any(|e| e["socket"] == "agent" && e["secret"] == "stolen" && e["outcome"] == "allowed"),
        "an allowed read of the secret is in the access log"
    );
}

#[test]
fn a_connection_handed_on_dies_with_the_process_and_container_that_made_it() {
    let _serial = begin();
    let ctl = Controller::start();
    let (v1, v2) = (random_text(32), random_text(32));
    ctl.put("handed", &v1, &[]);
    ctl.grant("handed", "granted");
    let drop = DropSocket::new();
    let attack = format!("{}:/x/seg-attack:ro", attack_bin().display());
    let drop_dir = format!("{}:/drop", drop.dir.path().display());
    let agent = ctl.agent_volume();
    let granted = standalone("granted", &["-v", &agent, "-v", &attack, "-v", &drop_dir], FORKING_LOOP);
    let pass = |stay: bool| {
        let mut args = vec!["exec", "-d", &granted.id, "/x/seg-attack", "pass"];
        args.extend(["/run/seg/agent/agent.sock", "/drop/drop.sock"]);
        if stay {
            args.push("stay");
        }
        docker_ok(&args);
        drop.receive(Duration::from_secs(10))
    };
    // The process that connected exits: the connection is worth nothing.
    let mut orphan = pass(false);
    std::thread::sleep(Duration::from_millis(300));
    let got = get_on(&mut orphan, "/v1/secrets/handed");
    assert!(!got.as_ref().is_ok_and(|(s, _)| *s == 200), "an orphaned connection was served: {got:?}");
    // The process stays: the connection is the container's (it chose to
    // share it) — until the container is gone.
    let mut shared = pass(true);
    let (status, body) = get_on(&mut shared, "/v1/secrets/handed").expect("the shared connection answers");
    assert_eq!((status, body.as_slice()), (200, v1.as_slice()));
    docker_ok(&["rm", "-f", &granted.id]);
    std::thread::sleep(Duration::from_millis(300));
    ctl.segctl_value(&["secret", "rotate", "handed"], &v2, &[]);
    let after = get_on(&mut shared, "/v1/secrets/handed");
    if let Ok((status, body)) = &after {
        assert!(
            !contains(body, &v2),
            "the accomplice read the rotated value after the container was removed"
        );
        assert_ne!(*status, 200, "a removed container's connection was served");
    }
}

#[test]
fn a_container_that_mounts_the_agent_directory_writable_is_refused() {
    let _serial = begin();
    let ctl = Controller::start();
    ctl.put("db", &random_text(16), &[]);
    ctl.grant("db", "granted");
    let writable = format!("{}:{AGENT_MOUNT}", ctl.agent_dir().display());
    let args = [
        "--label",
        "seg.service=granted",
        "--network",
        "none",
        "--user",
        "1000:1000",
        "--read-only",
        "--tmpfs",
        "/run/secrets:uid=1000,gid=1000,mode=0700",
        "-v",
        &writable,
        "-e",
        "SEG_SECRETS=db",
        "-e",
        "SEG_DIR=/run/secrets",
        SIDECAR_IMAGE,
    ];
    let c = Container::run(&args);
    let refused = ctl.wait_access("the refusal of a writable agent mount", Duration::from_secs(20), |e| {
        e["outcome"] == "denied"
            && e["reason"].as_str().is_some_and(|r| r.contains("agent_mount_writable"))
            && e["container_id"].as_str().is_some_and(|id| c.id.starts_with(id))
    });
    eprintln!("refused: {refused}");
    assert!(
        !ctl.access_log()
            .iter()
            .any(|e| e["socket"] == "agent" && e["secret"] == "db" && e["outcome"] == "allowed"),
        "the writable-mount container was served"
    );
}

#[test]
fn a_standalone_container_cannot_signal_another_without_its_consent() {
    let _serial = begin();
    let ctl = Controller::start();
    ctl.put("s", &random_text(16), &["--ttl", "10m"]);
    ctl.grant("s", "evil");
    let trap = "trap 'echo got HUP' HUP; trap 'exit 0' TERM; echo ready; while :; do sleep 1 & wait $!; done";
    let unwilling = standalone("victim", &[], trap);
    let willing = standalone("victim", &["--label", "seg.notify-from=evil"], trap);
    let attacker = Container::sidecar(
        &ctl,
        "s",
        &[
            "--label",
            "seg.service=evil",
            "-e",
            "SEG_ON_ROTATE=signal:HUP",
            "-e",
            "SEG_ON_ROTATE_TARGET=victim",
        ],
    );
    ctl.wait_access("the attacker's sidecar on its stream", Duration::from_secs(20), |e| {
        e["action"] == "watch" && e["outcome"] == "allowed"
    });
    ctl.segctl_value(&["secret", "rotate", "s"], &random_text(16), &[]);
    let hook = ctl.wait_access("the post-rotate signal", Duration::from_secs(20), |e| {
        e["action"] == "hook" && e["hook"]["kind"] == "post-rotate"
    });
    eprintln!("hook: {hook}");
    wait_until(Duration::from_secs(10), "the consenting victim to get HUP", || {
        willing.logs().contains("got HUP").then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(!unwilling.logs().contains("got HUP"), "a container that did not consent was signalled");
    drop(attacker);
}

#[test]
fn a_removed_container_leaves_the_consumer_list() {
    let _serial = begin();
    let ctl = Controller::start();
    ctl.put("shared", &random_text(16), &["--ttl", "10m"]);
    ctl.grant("shared", "app");
    let consumers = |watching_only: bool| {
        let st: serde_json::Value =
            serde_json::from_str(&ctl.segctl_ok(&["secret", "status", "shared", "-o", "json"])).unwrap();
        let all = st["consumers"].as_array().cloned().unwrap_or_default();
        all.iter().filter(|c| !watching_only || c["watching"] == true).count()
    };
    let a = Container::sidecar(&ctl, "shared", &["--label", "seg.service=app"]);
    let b = Container::sidecar(&ctl, "shared", &["--label", "seg.service=app"]);
    wait_until(Duration::from_secs(20), "two watching consumers", || (consumers(true) == 2).then_some(()));
    docker_ok(&["rm", "-f", &b.id]);
    wait_until(Duration::from_secs(10), "the removed consumer to leave the list", || {
        (consumers(false) == 1).then_some(())
    });
    let out =
        ctl.segctl_value(&["secret", "rotate", "shared"], &random_text(16), &["--wait", "--timeout", "20s"]);
    assert!(out.success(), "{}", out.text());
    assert!(out.stdout_str().contains("all 1 consumer(s)"), "{}", out.text());
    drop(a);
}
