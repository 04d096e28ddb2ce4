//! No container can delete or replace the agent socket (security issue #8,
//! finding 8): the controller makes the agent directory a read-only mount of
//! itself, repairs a socket a host process removed, keeps containers that
//! mounted the directory earlier connected across restarts, and the audit
//! flags containers that mount it read-write.

use seg_e2e::*;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// A root busybox container running `script` with `volume`; its output and
/// whether it succeeded.
fn root_sh(volume: &str, script: &str) -> Out {
    docker(&[
        "run",
        "--rm",
        "--label",
        "seg.e2e=1",
        "--user",
        "0:0",
        "-v",
        volume,
        BUSYBOX_IMAGE,
        "sh",
        "-c",
        script,
    ])
}

fn assert_erofs(out: &Out, what: &str) {
    assert!(!out.success(), "{what} succeeded: {}", out.text());
    assert!(out.text().contains("Read-only file system"), "{what}: expected EROFS, got: {}", out.text());
}

fn answers(sock: &Path) -> bool {
    UnixStream::connect(sock).is_ok()
}

fn guard_status(ctl: &Controller) -> serde_json::Value {
    let text = ctl.segctl_ok(&["status", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&text).expect("status JSON");
    v["agent_socket_status"].clone()
}

/// Puts a new value and waits until the app reads it: the sidecar reached
/// the controller through its (earlier) mount of the agent directory.
fn rotation_reaches_the_app(ctl: &Controller, project: &Project) {
    let value = random_text(32);
    ctl.put(SECRET_NAME, &value, &[]);
    project.wait_for_file("app", SECRET_FILE, &value, Duration::from_secs(30));
}

/// Mounts on the agent dir itself (one read-only self-bind, never stacked).
fn agent_dir_mounts(ctl: &Controller) -> usize {
    let dir = ctl.agent_dir().to_string_lossy().into_owned();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().filter(|l| l.split(' ').nth(4) == Some(dir.as_str())).count()
}

#[test]
fn a_root_container_with_a_rw_mount_cannot_remove_or_replace_the_socket() {
    let _serial = begin();
    let ctl = Controller::start();
    let project = Project::example(&ctl);
    project.deliver(&ctl, &random_text(32), &[]);
    let rw = format!("{}:/a", ctl.agent_dir().display());
    assert_erofs(&root_sh(&rw, "rm /a/agent.sock"), "rm through a rw mount of the agent dir");
    assert_erofs(&root_sh(&rw, "mv /a/agent.sock /a/old"), "rename through a rw mount");
    assert_erofs(&root_sh(&rw, "touch /a/evil.sock"), "creating a file next to it");
    let parent = format!("{}:/r", ctl.base_dir().display());
    assert_erofs(&root_sh(&parent, "rm /r/run/agent/agent.sock"), "rm through a rw mount of a parent");
    let renamed = root_sh(&parent, "mv /r/run/agent /r/run/agent-old");
    assert!(!renamed.success(), "the agent dir was renamed away: {}", renamed.text());
    assert!(answers(&ctl.agent_socket()), "the socket is gone");
    rotation_reaches_the_app(&ctl, &project);
    let status = guard_status(&ctl);
    assert_eq!(status["repairs"], 0, "{status}");
    assert_eq!(status["read_only_dir"], true, "{status}");
}

// unsafe_code is denied workspace-wide; allowed here: umount2(2) through libc, as a host root process would.
#[allow(unsafe_code)]
#[test]
fn a_socket_removed_on_the_host_is_rebound_within_a_second() {
    let _serial = begin();
    let ctl = Controller::start();
    let project = Project::example(&ctl);
    project.deliver(&ctl, &random_text(32), &["--ttl", "2s"]);
    // A host root process can get past the read-only mount: unmount it, remove the socket.
    let dir = std::ffi::CString::new(ctl.agent_dir().to_string_lossy().as_bytes()).unwrap();
    // SAFETY: umount2 with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::umount2(dir.as_ptr(), libc::MNT_DETACH) }, 0, "umount the agent dir");
    std::fs::remove_file(ctl.agent_socket()).expect("remove agent.sock on the host");
    let removed = Instant::now();
    let back = wait_until(Duration::from_secs(3), "the socket to be rebound", || {
        answers(&ctl.agent_socket()).then(|| removed.elapsed())
    });
    eprintln!("agent socket rebound {back:?} after it was removed");
    assert!(back <= Duration::from_secs(1), "rebound only after {back:?}");
    assert_eq!(agent_dir_mounts(&ctl), 1, "the read-only mount was not restored");
    let denied = std::fs::write(ctl.agent_dir().join("x"), b"x").unwrap_err();
    assert_eq!(denied.raw_os_error(), Some(libc::EROFS), "{denied}");

    // The sidecar's next renewal (2 s lease) goes through the new socket.
    let before = ctl.access_log().len();
    let app = project.target("app");
    wait_until(Duration::from_secs(5), "an allowed renewal after the repair", || {
        let log = ctl.access_log();
        log[before.min(log.len())..]
            .iter()
            .any(|e| e["socket"] == "agent" && e["outcome"] == "allowed" && e["identity"] == app.as_str())
            .then_some(())
    });
    assert!(project.read_file("app", SECRET_FILE).is_some(), "the lease ran out during the repair");
    let status = guard_status(&ctl);
    assert_eq!(status["repairs"], 1, "{status}");
    assert_eq!(status["read_only_dir"], true, "{status}");
    let table = ctl.segctl_ok(&["status"]);
    assert!(table.contains("repaired 1 time(s), read-only dir yes"), "{table}");
}

// unsafe_code is denied workspace-wide; allowed here: kill(2) through libc on the controller we started.
#[allow(unsafe_code)]
#[test]
fn containers_that_mounted_the_dir_earlier_reach_the_restarted_controller() {
    let _serial = begin();
    let mut ctl = Controller::start();
    let project = Project::example(&ctl);
    project.deliver(&ctl, &random_text(32), &[]);

    // Clean stop: the read-only mount stays (fail closed) and is reused.
    ctl.stop();
    assert!(!ctl.agent_socket().exists(), "a clean stop removes the socket");
    let planted = root_sh(&format!("{}:/a", ctl.agent_dir().display()), "touch /a/agent.sock");
    assert_erofs(&planted, "planting a socket while the controller is down");
    ctl.start_again();
    rotation_reaches_the_app(&ctl, &project);
    assert_eq!(agent_dir_mounts(&ctl), 1, "mounts stacked across a restart");

    // Killed: the stale socket and the mount are left; the next start copes.
    let pid = ctl.pid().expect("running") as i32;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_until(Duration::from_secs(5), "the controller to die", || (!ctl.is_running()).then_some(()));
    assert!(ctl.agent_socket().exists(), "a killed controller leaves its socket");
    ctl.restart(); // reaps the dead one, starts a new one

    rotation_reaches_the_app(&ctl, &project);
    assert_eq!(agent_dir_mounts(&ctl), 1, "mounts stacked across a kill");
}

#[test]
fn the_audit_flags_a_container_that_mounts_the_agent_dir_rw() {
    let _serial = begin();
    let ctl = Controller::start();
    let agent = ctl.agent_dir().display().to_string();
    let rw = Container::run(&["-v", &format!("{agent}:/a"), BUSYBOX_IMAGE, "sleep", "600"]);
    let parent =
        Container::run(&["-v", &format!("{}:/r", ctl.base_dir().display()), BUSYBOX_IMAGE, "sleep", "600"]);
    let ro = Container::run(&["-v", &format!("{agent}:/a:ro"), BUSYBOX_IMAGE, "sleep", "600"]);
    let state = ctl.state_dir.to_string_lossy().into_owned();
    let mut args = vec!["audit", "-o", "json", "--fail-on", "never", "--state-dir", &state];
    for c in [&rw, &parent, &ro] {
        args.extend(["--container", c.id.as_str()]);
    }
    let report: serde_json::Value = serde_json::from_str(&ctl.segctl_ok(&args)).expect("audit JSON");
    let level_of = |c: &Container| {
        let found = report["findings"].as_array().unwrap().iter().find(|f| {
            f["id"] == "seg-agent-dir-writable" && f["objects"][0]["id"].as_str() == Some(c.id.as_str())
        });
        let f = found.unwrap_or_else(|| panic!("no seg-agent-dir-writable finding for {}: {report}", c.id));
        (f["level"].as_str().unwrap().to_owned(), f["detail"].as_str().unwrap().to_owned())
    };
    let (level, detail) = level_of(&rw);
    assert_eq!(level, "WARN", "{detail}");
    assert!(detail.contains(&format!("{agent} at /a (read-write)")), "{detail}");
    assert_eq!(level_of(&parent).0, "WARN");
    assert_eq!(level_of(&ro).0, "PASS");
}
