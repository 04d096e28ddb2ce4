//! Attestation against the real Docker engine: a busybox container labelled
//! `seg.service=probe` is attested from its host PID, the test process itself
//! is refused, and the event watcher drops the cache when the container goes.
//!
//! Needs root, a running dockerd on /var/run/docker.sock and busybox-static
//! (`apt-get install -y busybox-static`). It fails, never skips, without them.

mod support;

use seg_common::api::Identity;
use segctl::attest::{AttestError, Attestor, PinnedPeer};
use segctl::docker::{self, DockerLink, DockerLookup};
use segctl::node::docker_side::{forget_on_events, GoneListener};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{build_busybox_image, docker_cli, Guard, SOCKET};

const IMAGE: &str = "seg-test-busybox:attest";

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a `sleep 60` container with `labels`; returns its guard and host PID.
fn start_container(name: &str, labels: &[&str]) -> (Guard, i32) {
    let mut args = vec!["run", "-d", "--name", name];
    for label in labels {
        args.extend(["--label", label]);
    }
    args.extend([IMAGE, "sleep", "60"]);
    let guard = Guard::container(&docker_cli(&args));
    let pid: i32 =
        docker_cli(&["inspect", "-f", "{{.State.Pid}}", guard.id()]).parse().expect("a numeric host PID");
    assert!(pid > 0, "container {name} has no host PID");
    (guard, pid)
}

/// Process `pid`, pinned by a pidfd.
fn pin(pid: i32) -> PinnedPeer {
    PinnedPeer::open(pid, 0, Path::new("/proc")).unwrap_or_else(|e| panic!("pin pid {pid}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attests_real_containers_and_forgets_removed_ones() {
    docker_cli(&["info", "--format", "{{.ServerVersion}}"]);
    build_busybox_image(IMAGE);
    let probe_name = format!("seg-attest-probe-{}", std::process::id());
    let (probe, probe_pid) = start_container(&probe_name, &["seg.service=probe"]);
    let app_labels = ["com.docker.compose.project=segtest", "com.docker.compose.service=app"];
    let (app, app_pid) = start_container(&format!("seg-attest-app-{}", std::process::id()), &app_labels);

    let docker = docker::connect(Path::new(SOCKET)).await.expect("connect to the real engine");
    let status = docker::describe(&docker).await;
    assert!(status.starts_with("ok (API 1.41"), "{status}");
    let lookup = Arc::new(DockerLookup { docker: docker.clone() });
    let attestor = Arc::new(Attestor::new(lookup, "/proc".into()));

    let got = attestor.attest(&pin(probe_pid)).await.expect("attest the probe container");
    assert_eq!(got.identity, Identity { project: None, service: "probe".into() });
    assert_eq!(got.container_id, probe.id());
    assert_eq!(got.container_name, probe_name);

    let me = std::process::id() as i32;
    match attestor.attest(&pin(me)).await {
        Err(AttestError::NotAContainer { pid }) => assert_eq!(pid, me),
        other => panic!("the test process (a host process) must be refused, got {other:?}"),
    }

    // The watcher clears the cache when the link subscribes: let it, then re-cache.
    let gone_seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = gone_seen.clone();
    let listener: GoneListener = Arc::new(move |id: &str, action: &str| {
        seen.lock().unwrap().push(format!("{action} {id}"));
    });
    let link = DockerLink::new();
    let watcher = forget_on_events(link.subscribe(), attestor.clone(), listener);
    let pump = link.spawn_with(docker.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    attestor.attest(&pin(probe_pid)).await.expect("attest the probe again");
    let app_id = attestor.attest(&pin(app_pid)).await.expect("attest the compose container");
    assert_eq!(app_id.identity, Identity { project: Some("segtest".into()), service: "app".into() });
    assert!(attestor.is_cached(probe.id()) && attestor.is_cached(app.id()), "both inspections cached");

    docker_cli(&["rm", "-f", probe.id()]);
    let forgotten = || !attestor.is_cached(probe.id());
    wait_until("the removed container is forgotten", Duration::from_secs(10), forgotten).await;
    // Only the removed container was dropped (an event, not a reconnect).
    assert!(attestor.is_cached(app.id()), "the other container must stay cached");
    let stale = PinnedPeer::open(probe_pid, 0, Path::new("/proc"));
    let attested = match &stale {
        Ok(peer) => attestor.attest(peer).await.is_ok(),
        Err(_) => false,
    };
    assert!(!attested, "a removed container's PID must not attest");
    let told = format!("destroy {}", probe.id());
    wait_until("the listener is told of the removal", Duration::from_secs(10), || {
        gone_seen.lock().unwrap().contains(&told)
    })
    .await;
    assert!(!watcher.is_finished() && !pump.is_finished(), "the event watcher must keep running");
    watcher.abort();
    pump.abort();
    drop((probe, app));
}
