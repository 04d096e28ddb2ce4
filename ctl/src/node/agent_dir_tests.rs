//! Real mounts in a temporary directory (the tests run as root, like the
//! controller); every mount made is detached again on drop.

use super::*;
use crate::node::NodeOptions;
use std::fs;

struct Rig {
    dir: tempfile::TempDir,
    paths: Paths,
}

impl Rig {
    fn new() -> Rig {
        assert!(
            rustix::process::geteuid().is_root(),
            "the agent_dir tests mount directories: run them as root"
        );
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(&NodeOptions {
            state_dir: dir.path().join("state"),
            run_dir: dir.path().join("run"),
            docker_socket: "/nonexistent".into(),
            access_log: None,
            watch_limits: Default::default(),
            conns_per_container: 64,
            access_log_options: Default::default(),
            resync_interval: Duration::from_secs(30),
            firewall: crate::firewall::select::Choice::Iptables,
            store: Default::default(),
            cluster_listen: None,
            metrics_addr: None,
        });
        crate::node::setup::prepare_dirs(&paths).unwrap();
        Rig { dir, paths }
    }

    /// Mount points at or under the temp dir, deepest last.
    fn mounts(&self) -> Vec<String> {
        let base = self.dir.path().to_str().unwrap().to_owned();
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
        info.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&base))
            .map(str::to_owned)
            .collect()
    }

    /// A second view of the agent dir, like a container's `-v DIR:/a` (rw).
    fn bind_elsewhere(&self, name: &str) -> PathBuf {
        let target = self.dir.path().join(name);
        fs::create_dir_all(&target).unwrap();
        rustix::mount::mount_bind(&self.paths.agent_dir, &target).unwrap();
        target
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for m in self.mounts().iter().rev() {
            let _ = rustix::mount::unmount(m.as_str(), UnmountFlags::DETACH);
        }
    }
}

fn errno_of(r: io::Result<()>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

fn answers(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

#[tokio::test]
async fn the_socket_cannot_be_removed_or_replaced_through_a_rw_bind() {
    let rig = Rig::new();
    let (dir, _listener) = AgentDir::secure(&rig.paths).unwrap();
    let sock = &rig.paths.agent_socket;
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(sock).unwrap().permissions().mode() & 0o7777, 0o666);
    let view = rig.bind_elsewhere("container-view");
    assert_eq!(errno_of(fs::remove_file(view.join("agent.sock"))), Some(libc::EROFS));
    assert_eq!(errno_of(fs::write(view.join("x"), b"x")), Some(libc::EROFS));
    assert_eq!(errno_of(fs::remove_file(sock)), Some(libc::EROFS));
    assert!(answers(&view.join("agent.sock")), "connecting needs no write access");
    assert_eq!(dir.check(), None);
    assert!(dir.health().report().read_only_dir);
}

#[tokio::test]
async fn a_removed_socket_is_rebound_and_counted() {
    let rig = Rig::new();
    let (dir, first) = AgentDir::secure(&rig.paths).unwrap();
    // A host root process can still reach the directory (here: our handle).
    dir.unlink().unwrap();
    assert_eq!(dir.check(), Some(Problem::Missing));
    let second = dir.repair(&Problem::Missing).unwrap().expect("a new listener");
    assert_eq!(dir.check(), None);
    assert!(answers(&rig.paths.agent_socket));
    drop((first, second));
    let report = dir.health().report();
    assert_eq!((report.repairs, report.state.as_str()), (1, "repaired 1 time(s)"));
    assert_eq!(report.last_problem.as_deref(), Some("the agent socket was removed"));
}

#[tokio::test]
async fn a_planted_file_is_moved_aside_not_deleted() {
    let rig = Rig::new();
    let (dir, _first) = AgentDir::secure(&rig.paths).unwrap();
    dir.unlink().unwrap();
    rustix::fs::openat(&dir.rw, SOCKET_NAME, OFlags::CREATE | OFlags::WRONLY, Mode::from_raw_mode(0o600))
        .unwrap();
    assert_eq!(dir.check(), Some(Problem::Replaced));
    let _second = dir.repair(&Problem::Replaced).unwrap().unwrap();
    assert_eq!(dir.check(), None);
    let kept = fs::read_dir(&rig.paths.agent_dir).unwrap().filter_map(Result::ok);
    let names: Vec<String> = kept.map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().any(|n| n.starts_with("agent.sock.replaced-")), "{names:?}");
}

#[tokio::test]
async fn a_removed_read_only_mount_is_restored() {
    let rig = Rig::new();
    let (dir, _listener) = AgentDir::secure(&rig.paths).unwrap();
    rustix::mount::unmount(&rig.paths.agent_dir, UnmountFlags::empty()).unwrap();
    assert_eq!(dir.check(), Some(Problem::Writable));
    assert!(dir.repair(&Problem::Writable).unwrap().is_none());
    assert_eq!(dir.check(), None);
    assert_eq!(errno_of(fs::write(rig.paths.agent_dir.join("x"), b"x")), Some(libc::EROFS));
}

#[tokio::test]
async fn a_restart_keeps_the_read_only_mount_and_earlier_views_see_the_new_socket() {
    let rig = Rig::new();
    let (first, listener) = AgentDir::secure(&rig.paths).unwrap();
    let early = rig.bind_elsewhere("bound-while-first-ran");
    // Killed: no shutdown, the old socket and the read-only mount stay.
    drop((first, listener));
    crate::node::setup::prepare_dirs(&rig.paths).expect("prepare_dirs copes with a read-only agent dir");
    let (second, _listener) = AgentDir::secure(&rig.paths).unwrap();
    let agent_mounts = rig.mounts().into_iter().filter(|m| Path::new(m) == rig.paths.agent_dir).count();
    assert_eq!(agent_mounts, 1, "a leftover mount is reused, not stacked");
    assert!(answers(&early.join("agent.sock")), "a view bound before the restart reaches the new socket");
    assert_eq!(second.check(), None);
    second.shutdown();
    assert!(!rig.paths.agent_socket.exists(), "a clean stop removes the socket");
    assert!(second.is_read_only(), "and keeps the directory read-only (fail closed)");
}

#[tokio::test]
async fn a_live_socket_means_another_controller() {
    let rig = Rig::new();
    let (_first, _listener) = AgentDir::secure(&rig.paths).unwrap();
    let err = AgentDir::secure(&rig.paths).err().expect("second controller refused");
    assert!(matches!(err, SetupError::AlreadyRunning { .. }), "{err}");
}

#[tokio::test]
async fn a_file_system_mounted_over_the_directory_is_refused() {
    let rig = Rig::new();
    rustix::mount::mount("tmpfs", &rig.paths.agent_dir, "tmpfs", MountFlags::empty(), Some(c"size=64k"))
        .unwrap();
    let err = AgentDir::secure(&rig.paths).err().expect("shadowed");
    assert!(matches!(err, SetupError::Shadowed(_)), "{err}");
}

#[tokio::test]
async fn the_guard_rebinds_within_a_second() {
    let rig = Rig::new();
    let (dir, listener) = AgentDir::secure(&rig.paths).unwrap();
    let task = dir.spawn_guard(listener, |l| {
        tokio::spawn(async move {
            loop {
                let _ = l.accept().await;
            }
        })
    });
    dir.unlink().unwrap();
    let t0 = std::time::Instant::now();
    while !answers(&rig.paths.agent_socket) {
        assert!(t0.elapsed() < Duration::from_secs(1), "not rebound within 1 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    assert_eq!(dir.health().report().repairs, 1);
}

#[tokio::test]
async fn a_directory_recreated_on_the_host_is_reported_not_looped_on() {
    let rig = Rig::new();
    let (dir, _listener) = AgentDir::secure(&rig.paths).unwrap();
    rustix::mount::unmount(&rig.paths.agent_dir, UnmountFlags::empty()).unwrap();
    fs::rename(&rig.paths.agent_dir, rig.dir.path().join("old-agent")).unwrap();
    fs::create_dir(&rig.paths.agent_dir).unwrap();
    assert_eq!(dir.check(), Some(Problem::Shadowed));
    let err = dir.repair(&Problem::Shadowed).expect_err("cannot be repaired in place");
    assert!(matches!(err, SetupError::Recreated(_)), "{err}");
    assert_eq!(dir.health().report().repairs, 0);
}
