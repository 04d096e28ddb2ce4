//! The real `seg-sidecar` binary against a fake agent socket, writing into a
//! tmpfs (/dev/shm).

mod support;

use rustix::process::Signal;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};
use support::{entries, shm_dir, socket_dir, wait_for, FakeAgent, Launch, Sidecar};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn launch<'a>(dir: &'a tempfile::TempDir, agent: &'a FakeAgent, env: &[(&'a str, &str)]) -> Launch<'a> {
    Launch {
        dir: dir.path(),
        agent: &agent.socket,
        env: env.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        uid: None,
    }
}

#[test]
fn secrets_appear_health_follows_and_sigterm_wipes() {
    let (dir, sockets) = (shm_dir(), socket_dir());
    let mut agent = FakeAgent::new(sockets.path());
    agent.set("db-password", b"hunter2-value", 3, 60_000);
    agent.set("api-key", b"key-value-42", 1, 60_000);
    // A symlink planted by a hostile app at a secret's name, and a temp file
    // left by a sidecar that died mid-write.
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("victim"), b"untouched").unwrap();
    std::os::unix::fs::symlink(outside.path().join("victim"), dir.path().join("api-key")).unwrap();
    fs::write(dir.path().join(".seg-tmp-db-password-0123"), b"partial").unwrap();

    let mut sidecar = Sidecar::spawn(launch(&dir, &agent, &[("SEG_SECRETS", "db-password,api-key")]));
    let (code, line) = sidecar.health_when_up();
    assert_eq!(code, 1, "{line}");
    assert!(line.starts_with("waiting: api-key not fetched yet"), "{line}");

    agent.start();
    let is_file = |n: &str| fs::symlink_metadata(dir.path().join(n)).is_ok_and(|m| m.file_type().is_file());
    wait_for(SECS(5), "both secrets on disk", || is_file("api-key") && is_file("db-password"));
    assert_eq!(entries(dir.path()), ["api-key", "db-password"]);
    let db = dir.path().join("db-password");
    assert_eq!(fs::read(&db).unwrap(), b"hunter2-value");
    assert_eq!(fs::metadata(&db).unwrap().permissions().mode() & 0o7777, 0o400);
    assert_eq!(fs::read(outside.path().join("victim")).unwrap(), b"untouched");
    assert_eq!(sidecar.health(), (0, "ok: 2 secrets on disk".to_owned()));

    sidecar.signal(Signal::TERM);
    let status = sidecar.wait_exit(SECS(5));
    assert_eq!(status.code(), Some(0), "{}", sidecar.stderr());
    assert!(entries(dir.path()).is_empty(), "left behind: {:?}", entries(dir.path()));
    let log = sidecar.stderr();
    assert!(log.contains("fetched db-password v3") && log.contains("wiped"), "{log}");
    assert!(!log.contains("hunter2") && !log.contains("key-value"), "a secret value reached the log:\n{log}");
}

#[test]
fn start_to_all_secrets_on_disk_is_fast() {
    let (dir, sockets) = (shm_dir(), socket_dir());
    let mut agent = FakeAgent::new(sockets.path());
    for i in 0..5 {
        agent.set(&format!("s{i}"), b"v", 1, 60_000);
    }
    agent.start();
    let started = Instant::now();
    let _sidecar = Sidecar::spawn(launch(&dir, &agent, &[]));
    wait_for(SECS(5), "five secrets on disk", || entries(dir.path()).len() == 5);
    let took = started.elapsed();
    eprintln!("start → 5 secrets on disk: {took:?} (includes process spawn and 10 ms polling)");
    // The target is 20 ms for a release build; leave room for a loaded CI box
    // running a debug build.
    assert!(took < Duration::from_millis(1000), "took {took:?}");
}

#[test]
fn an_expired_lease_wipes_the_file_which_returns_with_the_agent() {
    let (dir, sockets) = (shm_dir(), socket_dir());
    let mut agent = FakeAgent::new(sockets.path());
    agent.set("db", b"pw", 1, 2000);
    agent.start();
    let sidecar = Sidecar::spawn(launch(&dir, &agent, &[("SEG_SECRETS", "db")]));
    let file = dir.path().join("db");
    wait_for(SECS(5), "the secret on disk", || file.exists());

    agent.stop();
    let stopped = Instant::now();
    // The last successful fetch was at most ~1.47 s ago (2/3 of 2 s + 10 %),
    // so the lease holds for at least ~0.5 s more.
    std::thread::sleep(Duration::from_millis(300));
    assert!(file.exists(), "wiped while the lease was still valid");
    wait_for(SECS(4), "the wipe after the lease ran out", || !file.exists());
    let gone_after = stopped.elapsed();
    assert!(gone_after <= Duration::from_millis(2400), "wiped {gone_after:?} after the agent stopped");
    let (code, line) = sidecar.health();
    assert_eq!(code, 1);
    assert!(line.starts_with("expired: db"), "{line}");

    agent.start();
    wait_for(SECS(20), "the secret to come back", || file.exists());
    assert_eq!(fs::read(&file).unwrap(), b"pw");
    assert_eq!(sidecar.health().0, 0);
    let log = sidecar.stderr();
    assert!(log.contains("lease ran out"), "{log}");
}

#[test]
fn unchanged_renewals_keep_the_file_and_rotations_replace_it() {
    let (dir, sockets) = (shm_dir(), socket_dir());
    let mut agent = FakeAgent::new(sockets.path());
    agent.set("db", b"v1", 1, 1500);
    agent.start();
    let _sidecar = Sidecar::spawn(launch(&dir, &agent, &[("SEG_SECRETS", "db")]));
    let file = dir.path().join("db");
    wait_for(SECS(5), "the secret on disk", || file.exists());
    let before = fs::metadata(&file).unwrap();

    wait_for(SECS(6), "two renewals", || agent.fetches("db") >= 3);
    let after = fs::metadata(&file).unwrap();
    assert_eq!((before.ino(), before.ctime_nsec()), (after.ino(), after.ctime_nsec()), "rewritten");

    agent.set("db", b"v2-rotated", 2, 1500);
    wait_for(SECS(5), "the rotated value", || fs::read(&file).unwrap() == b"v2-rotated");
    assert_ne!(fs::metadata(&file).unwrap().ino(), before.ino());
    assert!(entries(dir.path()) == ["db"], "{:?}", entries(dir.path()));
}

#[test]
fn discovery_follows_grants_and_revocations() {
    let (dir, sockets) = (shm_dir(), socket_dir());
    let mut agent = FakeAgent::new(sockets.path());
    agent.set("a", b"1", 1, 1500);
    agent.set("b", b"2", 1, 1500);
    agent.start();
    let sidecar = Sidecar::spawn(launch(&dir, &agent, &[("SEG_SECRETS", "")]));
    wait_for(SECS(5), "both granted secrets", || entries(dir.path()) == ["a", "b"]);
    agent.revoke("b");
    wait_for(SECS(5), "the revoked secret wiped", || entries(dir.path()) == ["a"]);
    wait_for(SECS(5), "health to forget the revoked secret", || {
        sidecar.health() == (0, "ok: 1 secret on disk".into())
    });
}

#[test]
fn a_non_tmpfs_directory_is_refused() {
    let sockets = socket_dir();
    let agent = FakeAgent::new(sockets.path());
    // The checkout is on a disk, never a tmpfs.
    let dir = tempfile::Builder::new().prefix(".seg-it-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut sidecar =
        Sidecar::spawn(Launch { dir: dir.path(), agent: &agent.socket, env: vec![], uid: None });
    let status = sidecar.wait_exit(SECS(5));
    assert_eq!(status.code(), Some(1));
    let log = sidecar.stderr();
    assert!(log.contains(&dir.path().display().to_string()) && log.contains("not tmpfs"), "{log}");
}

#[test]
fn runs_unprivileged_and_wipes_its_0400_files() {
    const NOBODY: u32 = 65534;
    let (dir, sockets) = (shm_dir(), socket_dir());
    std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    let mut agent = FakeAgent::new(sockets.path());
    agent.set("db", b"secret-bytes", 1, 60_000);
    agent.start();
    let unprivileged = |env: Vec<(&'static str, String)>| Launch {
        dir: dir.path(),
        agent: &agent.socket,
        env,
        uid: Some(NOBODY),
    };

    // Giving files to another user needs CAP_CHOWN, which nobody lacks.
    let mut refused = Sidecar::spawn(unprivileged(vec![("SEG_OWNER", "0:0".into())]));
    assert_eq!(refused.wait_exit(SECS(5)).code(), Some(1));
    assert!(refused.stderr().contains("CAP_CHOWN"), "{}", refused.stderr());

    let mut sidecar = Sidecar::spawn(unprivileged(vec![]));
    let file = dir.path().join("db");
    wait_for(SECS(5), "the secret on disk", || file.exists());
    let meta = fs::metadata(&file).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (NOBODY, 0o400));
    let app = fs::File::open(&file).unwrap();

    sidecar.signal(Signal::INT);
    assert_eq!(sidecar.wait_exit(SECS(5)).code(), Some(0), "{}", sidecar.stderr());
    assert!(entries(dir.path()).is_empty());
    // The app's open handle now reads zeros, not the secret.
    assert_eq!(std::io::read_to_string(&app).unwrap().as_bytes(), [0u8; 12]);
}
