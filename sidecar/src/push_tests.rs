//! The push side of the loops (watch stream, acknowledgements, revocation
//! wipes, post-rotate notifications) against the fake agent, on tokio's
//! paused clock.

use super::*;
use crate::fakes::{FakeAgent, FakeSink};
use crate::notify::OnRotate;
use crate::supervise::{run, Push};
use seg_common::api::{PostRotate, WatchEvent};
use std::time::Duration;
use tokio::task::JoinHandle;

fn name(s: &str) -> SecretName {
    SecretName::parse(s).unwrap()
}

fn agent(secrets: &[(&str, &[u8], u64, u64)]) -> FakeAgent {
    let agent = FakeAgent::with(secrets);
    agent.0.lock().unwrap().watchable = true;
    agent
}

type Started = (Arc<Ctx<FakeSink, FakeAgent>>, tokio::sync::oneshot::Sender<()>, JoinHandle<()>);

fn start(agent: &FakeAgent, sink: &FakeSink, requested: Option<Vec<SecretName>>, push: Push) -> Started {
    let ctx = Ctx::new(sink.clone(), agent.clone(), requested.is_none());
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let handle = tokio::spawn(run(ctx.clone(), requested, push, async move {
        let _ = stopped.await;
    }));
    (ctx, stop, handle)
}

fn watching() -> Push {
    Push { watch: true, on_rotate: None }
}

async fn after(t0: Instant, ms: u64) {
    sleep_until(t0 + Duration::from_millis(ms)).await;
}

#[tokio::test(start_paused = true)]
async fn a_pushed_rotation_is_on_disk_at_once_and_acknowledged() {
    let agent = agent(&[("db", b"one", 1, 3_600_000)]);
    let sink = FakeSink::default();
    let t0 = Instant::now();
    let _run = start(&agent, &sink, Some(vec![name("db")]), watching());
    after(t0, 10).await;
    assert_eq!(sink.on_disk("db"), Some((1, b"one".to_vec())));
    assert_eq!(agent.acks(), ["db v1"]);
    assert_eq!(agent.open_streams(), 1);
    agent.set("db", b"two", 2, 3_600_000);
    agent.push(WatchEvent::Version { name: name("db"), version: 2, ttl_ms: 3_600_000 });
    after(t0, 20).await;
    assert_eq!(sink.on_disk("db"), Some((2, b"two".to_vec())), "an hour-long lease did not delay it");
    assert_eq!(agent.acks(), ["db v1", "db v2"]);
    agent.push(WatchEvent::Version { name: name("db"), version: 2, ttl_ms: 3_600_000 });
    after(t0, 30).await;
    assert_eq!(agent.fetches(), 2, "a version already on disk is not fetched again");
}

#[tokio::test(start_paused = true)]
async fn a_pushed_revocation_wipes_at_once_even_with_a_fetch_in_flight() {
    let agent = agent(&[("db", b"one", 1, 3_600_000), ("api", b"k", 1, 3_600_000)]);
    let sink = FakeSink::default();
    let t0 = Instant::now();
    let (ctx, _stop, _h) = start(&agent, &sink, Some(vec![name("db"), name("api")]), watching());
    after(t0, 10).await;
    assert!(sink.on_disk("db").is_some());
    // A rotation whose fetch is slow, revoked while that fetch is in flight.
    agent.0.lock().unwrap().slow = Some(Duration::from_millis(100));
    agent.set("db", b"two", 2, 3_600_000);
    agent.push(WatchEvent::Version { name: name("db"), version: 2, ttl_ms: 3_600_000 });
    after(t0, 50).await;
    agent.push(WatchEvent::Revoked { name: name("db") });
    after(t0, 51).await;
    assert_eq!(sink.on_disk("db"), None, "not wiped at once");
    assert!(ctx.health_line().starts_with("refused: db (revoked)"), "{}", ctx.health_line());
    agent.revoke("db");
    after(t0, 400).await;
    assert_eq!(sink.on_disk("db"), None, "the fetch in flight wrote it back");
    assert!(sink.on_disk("api").is_some());
    let log = sink.log();
    assert!(
        !log.contains(&"write db v2".to_owned()) && log.last().map(String::as_str) == Some("wipe db"),
        "{log:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn discovery_follows_pushed_grants_and_removals() {
    let agent = agent(&[("a", b"1", 1, 3_600_000)]);
    let sink = FakeSink::default();
    let t0 = Instant::now();
    let (ctx, _stop, _h) = start(&agent, &sink, None, watching());
    after(t0, 10).await;
    assert!(sink.on_disk("a").is_some());
    agent.set("b", b"2", 1, 3_600_000);
    agent.push(WatchEvent::Version { name: name("b"), version: 1, ttl_ms: 3_600_000 });
    after(t0, 20).await;
    assert_eq!(sink.on_disk("b"), Some((1, b"2".to_vec())), "a pushed grant did not wait for discovery");
    agent.revoke("a");
    agent.push(WatchEvent::Removed { name: name("a") });
    after(t0, 30).await;
    assert_eq!(sink.on_disk("a"), None);
    assert!(ctx.lease(&name("a")).is_none());
    assert_eq!(ctx.health_line(), "ok: 1 secret on disk");
}

#[tokio::test(start_paused = true)]
async fn the_stream_reconnects_and_everything_is_acknowledged_again() {
    let agent = agent(&[("db", b"one", 1, 3_600_000)]);
    let sink = FakeSink::default();
    let t0 = Instant::now();
    let _run = start(&agent, &sink, Some(vec![name("db")]), watching());
    after(t0, 10).await;
    agent.close_streams();
    after(t0, 20).await;
    assert_eq!(agent.open_streams(), 0);
    // A rotation while the stream is down is found when it comes back.
    agent.set("db", b"two", 2, 3_600_000);
    after(t0, 400).await;
    assert_eq!(agent.open_streams(), 1, "no reconnection within 250 ms of backoff");
    assert_eq!(sink.on_disk("db"), Some((2, b"two".to_vec())));
    agent.close_streams();
    after(t0, 1000).await;
    assert_eq!(
        agent.acks(),
        ["db v1", "db v2", "db v2"],
        "a new stream (maybe a new controller) is told again"
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_watch_route_leases_still_work() {
    let agent = FakeAgent::with(&[("db", b"one", 1, 2_000)]);
    let sink = FakeSink::default();
    let t0 = Instant::now();
    let (ctx, _stop, _h) = start(&agent, &sink, Some(vec![name("db")]), watching());
    after(t0, 10).await;
    assert!(sink.on_disk("db").is_some());
    agent.set("db", b"two", 2, 2_000);
    after(t0, 1_600).await;
    assert_eq!(sink.on_disk("db"), Some((2, b"two".to_vec())), "renewal at 2/3 of the lease");
    assert!(ctx.health_line().starts_with("ok"));
}

#[tokio::test(start_paused = true)]
async fn changed_files_make_one_debounced_notification() {
    let agent = agent(&[("a", b"1", 1, 3_600_000), ("b", b"1", 1, 3_600_000)]);
    let sink = FakeSink::default();
    let on_rotate =
        OnRotate { action: PostRotate::Signal("SIGHUP"), target: None, debounce: Duration::from_millis(500) };
    let t0 = Instant::now();
    let _run = start(&agent, &sink, None, Push { watch: true, on_rotate: Some(on_rotate) });
    after(t0, 1_000).await;
    assert!(agent.notified().is_empty(), "the first write is not a rotation");
    for (n, v) in [("a", 2), ("b", 2)] {
        agent.set(n, b"2", v, 3_600_000);
        agent.push(WatchEvent::Version { name: name(n), version: v, ttl_ms: 3_600_000 });
        after(t0, 1_100).await;
    }
    // Same bytes under a new version: nothing changed on disk.
    agent.set("a", b"2", 3, 3_600_000);
    agent.push(WatchEvent::Version { name: name("a"), version: 3, ttl_ms: 3_600_000 });
    after(t0, 3_000).await;
    let sent = agent.notified();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].action, "signal:HUP");
    let names: Vec<String> = sent[0].secrets.iter().map(|c| format!("{} v{}", c.name, c.version)).collect();
    assert_eq!(names, ["a v2", "b v2"]);
}
