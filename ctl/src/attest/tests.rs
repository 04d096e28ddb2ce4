//! Attestor tests: fixture proc trees and a fake Docker.

use super::*;
use crate::identity::{COMPOSE_PROJECT, COMPOSE_SERVICE, SEG_FOR, SEG_SERVICE};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

type Hook = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct FakeDocker {
    containers: Mutex<HashMap<String, ContainerInfo>>,
    calls: AtomicUsize,
    /// Runs during inspect (e.g. to "reuse" the PID meanwhile).
    hook: Mutex<Option<Hook>>,
    delay: Option<Duration>,
}

impl FakeDocker {
    fn with(self, id: &str, labels: &[(&str, &str)], running: bool) -> FakeDocker {
        let info = ContainerInfo {
            id: id.to_owned(),
            name: format!("name-{}", &id[..4]),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            pid: if running { 1 } else { 0 },
            running,
            binds: Vec::new(),
        };
        self.containers.lock().unwrap().insert(id.to_owned(), info);
        self
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl ContainerLookup for FakeDocker {
    fn inspect<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<ContainerInfo, LookupError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if let Some(delay) = self.delay {
                tokio::time::sleep(delay).await;
            }
            if let Some(hook) = self.hook.lock().unwrap().as_ref() {
                hook();
            }
            let found = self.containers.lock().unwrap().get(id).cloned();
            found.ok_or_else(|| LookupError::NoSuchContainer(id.to_owned()))
        })
    }
}

/// A fixture `/proc` tree.
struct Proc(tempfile::TempDir);

impl Proc {
    fn new() -> Proc {
        Proc(tempfile::tempdir().unwrap())
    }

    fn set_stat(root: &Path, pid: i32, start: u64) {
        let stat = format!("{pid} (my (odd) app) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 9 9\n");
        std::fs::write(root.join(pid.to_string()).join("stat"), stat).unwrap();
    }

    fn add(&self, pid: i32, start: u64, cgroup: &str) -> &Proc {
        std::fs::create_dir_all(self.0.path().join(pid.to_string())).unwrap();
        Proc::set_stat(self.0.path(), pid, start);
        std::fs::write(self.0.path().join(pid.to_string()).join("cgroup"), cgroup).unwrap();
        self
    }

    /// The caller `pid` pinned by its start time (or, if it has no stat
    /// file, as a caller that is always alive).
    fn pin(&self, pid: i32) -> PinnedPeer {
        PinnedPeer::fixture_in(self.0.path(), pid).unwrap_or_else(|_| PinnedPeer::fixture(pid, 0))
    }

    fn in_container(&self, pid: i32, id: &str) -> &Proc {
        self.add(pid, 1000 + pid as u64, &format!("4:memory:/docker/{id}\n0::/docker/{id}\n"))
    }
}

fn attestor(proc: &Proc, docker: FakeDocker) -> (Attestor, Arc<FakeDocker>) {
    let docker = Arc::new(docker);
    (Attestor::new(docker.clone(), proc.0.path().to_owned()), docker)
}

fn ident(project: Option<&str>, service: &str) -> Identity {
    Identity { project: project.map(str::to_owned), service: service.to_owned() }
}

const SHOP_APP: &[(&str, &str)] = &[(COMPOSE_PROJECT, "shop"), (COMPOSE_SERVICE, "app")];

#[tokio::test]
async fn compose_container_is_attested() {
    let proc = Proc::new();
    proc.in_container(10, A);
    let (att, _) = attestor(&proc, FakeDocker::default().with(A, SHOP_APP, true));
    let got = att.attest(&proc.pin(10)).await.unwrap();
    let want = Attested {
        identity: ident(Some("shop"), "app"),
        container_id: A.into(),
        container_name: "name-aaaa".into(),
    };
    assert_eq!(got, want);
}

#[tokio::test]
async fn host_process_is_not_a_container() {
    let proc = Proc::new();
    proc.add(11, 5, "9:name=systemd:/\n4:memory:/process_api/69ed842a39db11f0e3f323147e199d5e\n0::/\n");
    let (att, docker) = attestor(&proc, FakeDocker::default());
    assert!(matches!(att.attest(&proc.pin(11)).await, Err(AttestError::NotAContainer { pid: 11 })));
    assert_eq!(docker.calls(), 0);
}

#[tokio::test]
async fn vanished_and_invisible_processes() {
    let proc = Proc::new();
    let (att, _) = attestor(&proc, FakeDocker::default());
    assert!(matches!(att.attest(&proc.pin(12)).await, Err(AttestError::ProcessGone { pid: 12 })));
    assert!(matches!(att.attest(&proc.pin(0)).await, Err(AttestError::InvisiblePid { pid: 0 })));
}

#[tokio::test]
async fn pid_reused_during_lookup_is_refused() {
    let proc = Proc::new();
    proc.in_container(13, A);
    let root = proc.0.path().to_owned();
    let docker = FakeDocker::default().with(A, SHOP_APP, true);
    *docker.hook.lock().unwrap() = Some(Box::new(move || Proc::set_stat(&root, 13, 99_999)));
    let (att, _) = attestor(&proc, docker);
    assert!(matches!(att.attest(&proc.pin(13)).await, Err(AttestError::ProcessGone { pid: 13 })));
}

#[tokio::test]
async fn process_exiting_during_lookup_is_refused() {
    let proc = Proc::new();
    proc.in_container(14, A);
    let dir = proc.0.path().join("14");
    let docker = FakeDocker::default().with(A, SHOP_APP, true);
    *docker.hook.lock().unwrap() = Some(Box::new(move || std::fs::remove_dir_all(&dir).unwrap()));
    let (att, _) = attestor(&proc, docker);
    assert!(matches!(att.attest(&proc.pin(14)).await, Err(AttestError::ProcessGone { pid: 14 })));
}

#[tokio::test]
async fn identities_from_labels() {
    let proc = Proc::new();
    proc.in_container(20, A).in_container(21, B).in_container(22, C);
    let docker = FakeDocker::default()
        .with(A, &[("maintainer", "me")], true)
        .with(B, &[(COMPOSE_PROJECT, "shop"), (COMPOSE_SERVICE, "app-seg"), (SEG_FOR, "app")], true)
        .with(C, &[(SEG_SERVICE, "probe")], true);
    let (att, _) = attestor(&proc, docker);
    match att.attest(&proc.pin(20)).await {
        Err(AttestError::NoIdentity { container_id }) => assert_eq!(container_id, A),
        other => panic!("want NoIdentity, got {other:?}"),
    }
    assert_eq!(att.attest(&proc.pin(21)).await.unwrap().identity, ident(Some("shop"), "app"));
    assert_eq!(att.attest(&proc.pin(22)).await.unwrap().identity, ident(None, "probe"));
}

#[tokio::test]
async fn invalid_label_is_refused_with_reason() {
    let proc = Proc::new();
    proc.in_container(23, A);
    let (att, _) = attestor(&proc, FakeDocker::default().with(A, &[(SEG_SERVICE, "a/b")], true));
    let err = att.attest(&proc.pin(23)).await.unwrap_err();
    assert!(matches!(err, AttestError::BadLabel { .. }), "{err:?}");
    assert!(err.to_string().contains("seg.service"), "{err}");
}

#[tokio::test]
async fn cache_hit_and_forget() {
    let proc = Proc::new();
    proc.in_container(30, A).in_container(31, A);
    let (att, docker) = attestor(&proc, FakeDocker::default().with(A, SHOP_APP, true));
    att.attest(&proc.pin(30)).await.unwrap();
    att.attest(&proc.pin(31)).await.unwrap();
    assert_eq!(docker.calls(), 1);
    assert!(att.is_cached(A));
    att.forget(A);
    assert!(!att.is_cached(A));
    att.attest(&proc.pin(30)).await.unwrap();
    assert_eq!(docker.calls(), 2);
    att.forget_all();
    att.attest(&proc.pin(30)).await.unwrap();
    assert_eq!(docker.calls(), 3);
}

#[tokio::test]
async fn concurrent_lookups_coalesce() {
    let proc = Proc::new();
    proc.in_container(32, A).in_container(33, A);
    let docker = FakeDocker { delay: Some(Duration::from_millis(50)), ..FakeDocker::default() };
    let (att, docker) = attestor(&proc, docker.with(A, SHOP_APP, true));
    let (p32, p33) = (proc.pin(32), proc.pin(33));
    let (x, y) = tokio::join!(att.attest(&p32), att.attest(&p33));
    assert_eq!(x.unwrap().identity, y.unwrap().identity);
    assert_eq!(docker.calls(), 1);
}

#[tokio::test]
async fn failures_and_stopped_containers_are_not_cached() {
    let proc = Proc::new();
    proc.in_container(40, A).in_container(41, B);
    let (att, docker) = attestor(&proc, FakeDocker::default().with(B, SHOP_APP, false));
    for _ in 0..2 {
        let err = att.attest(&proc.pin(40)).await.unwrap_err();
        assert!(matches!(err, AttestError::Lookup { cause: LookupError::NoSuchContainer(_), .. }), "{err:?}");
        assert!(matches!(att.attest(&proc.pin(41)).await, Err(AttestError::NotRunning { .. })));
    }
    assert_eq!(docker.calls(), 4);
    assert_eq!(att.cached_count(), 0);
}

#[tokio::test]
async fn lookup_answering_for_another_container_is_refused() {
    let proc = Proc::new();
    proc.in_container(42, A);
    let docker = FakeDocker::default().with(A, SHOP_APP, true);
    docker.containers.lock().unwrap().get_mut(A).unwrap().id = B.to_owned();
    let (att, _) = attestor(&proc, docker);
    let err = att.attest(&proc.pin(42)).await.unwrap_err();
    assert!(matches!(err, AttestError::Lookup { cause: LookupError::WrongContainer { .. }, .. }), "{err:?}");
    assert!(!att.is_cached(A));
}

#[tokio::test]
async fn cache_is_bounded() {
    let proc = Proc::new();
    proc.in_container(50, A).in_container(51, B).in_container(52, C);
    let docker = Arc::new(
        FakeDocker::default().with(A, SHOP_APP, true).with(B, SHOP_APP, true).with(C, SHOP_APP, true),
    );
    let att = Attestor::with_capacity(docker.clone(), proc.0.path().to_owned(), 2);
    for pid in [50, 51, 52, 50, 51, 52] {
        att.attest(&proc.pin(pid)).await.unwrap();
        assert!(att.cached_count() <= 2);
    }
    assert!(docker.calls() >= 4, "evictions force new lookups");
}

#[tokio::test]
async fn containers_that_can_write_the_agent_directory_are_refused() {
    let proc = Proc::new();
    proc.in_container(60, A).in_container(61, B).in_container(62, C);
    let bind = |source: &str, writable: bool| BindMount {
        source: source.into(),
        destination: "/a".into(),
        writable,
    };
    let docker =
        FakeDocker::default().with(A, SHOP_APP, true).with(B, SHOP_APP, true).with(C, SHOP_APP, true);
    {
        let mut all = docker.containers.lock().unwrap();
        all.get_mut(A).unwrap().binds = vec![bind("/run/seg/agent", false)];
        all.get_mut(B).unwrap().binds = vec![bind("/run/seg/agent", true)];
        all.get_mut(C).unwrap().binds = vec![bind("/run", true), bind("/srv/data", true)];
    }
    let docker = Arc::new(docker);
    let att =
        Attestor::new(docker, proc.0.path().to_owned()).refusing_writable_mounts_of("/run/seg/agent".into());
    assert!(att.attest(&proc.pin(60)).await.is_ok(), "a read-only mount is how it is meant to be");
    for pid in [61, 62] {
        let err = att.attest(&proc.pin(pid)).await.unwrap_err();
        assert!(matches!(err, AttestError::WritableAgentMount { .. }), "{err:?}");
        assert!(err.to_string().contains("read-only (:ro)"), "{err}");
    }
}

#[tokio::test]
async fn messages_never_name_host_pids() {
    let proc = Proc::new();
    proc.add(4242, 5, "0::/\n");
    let (att, _) = attestor(&proc, FakeDocker::default());
    let err = att.attest(&proc.pin(4242)).await.unwrap_err();
    assert!(!err.to_string().contains("4242"), "{err}");
    let gone = att.attest(&PinnedPeer::fixture(4343, 0)).await.unwrap_err();
    assert!(!gone.to_string().contains("4343"), "{gone}");
}
