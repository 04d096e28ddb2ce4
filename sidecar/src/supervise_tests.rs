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

mod resilience {
    //! What the sidecar must deliver or keep open, against a controller that
    //! fails transiently (fake agent, tokio's paused clock): acknowledgements
    //! and post-rotate notifications are retried, the watch stream is back as
    //! soon as the controller is.

    use super::super::*;
    use crate::fakes::{answer, eagain, FakeAgent, FakeSink};
    use crate::notify::OnRotate;
    use crate::supervise::Push;
    use seg_common::api::{PostRotate, WatchEvent};
    use std::time::Duration;

    use super::{after, agent, name, watching};

    /// Runs the sidecar's loops for `db` until the returned sender is dropped.
    fn start(agent: &FakeAgent, sink: &FakeSink, push: Push) -> tokio::sync::oneshot::Sender<()> {
        super::start(agent, sink, Some(vec![name("db")]), push).1
    }

    /// Polls every millisecond until `cond`; returns how long it took.
    async fn time_until(within: Duration, mut cond: impl FnMut() -> bool) -> Duration {
        let t0 = Instant::now();
        while !cond() {
            assert!(t0.elapsed() < within, "not within {within:?}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        t0.elapsed()
    }

    fn rotate(agent: &FakeAgent, version: u64) {
        agent.set("db", format!("value {version}").as_bytes(), version, 3_600_000);
        agent.push(WatchEvent::Version { name: name("db"), version, ttl_ms: 3_600_000 });
    }

    #[tokio::test(start_paused = true)]
    async fn an_acknowledgement_refused_at_connect_is_retried_until_it_lands() {
        let agent = agent(&[("db", b"one", 1, 3_600_000)]);
        let sink = FakeSink::default();
        // A connection storm: the first three connects find the backlog full.
        agent.0.lock().unwrap().ack_errors.extend([eagain(), eagain(), answer(503)]);
        let _run = start(&agent, &sink, watching());
        let took = time_until(Duration::from_secs(5), || agent.acks() == ["db v1"]).await;
        assert_eq!(agent.0.lock().unwrap().ack_attempts, 4);
        // 25–50 ms, 50–100 ms, 100–200 ms of backoff.
        assert!(took >= Duration::from_millis(175) && took <= Duration::from_millis(360), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_version_replaces_a_pending_acknowledgement() {
        let agent = agent(&[("db", b"one", 1, 3_600_000)]);
        let sink = FakeSink::default();
        let t0 = Instant::now();
        let _run = start(&agent, &sink, watching());
        after(t0, 10).await;
        assert_eq!(agent.acks(), ["db v1"]);
        // v5's acknowledgement fails over and over; v6 arrives meanwhile.
        agent.0.lock().unwrap().ack_errors.extend((0..4).map(|_| eagain()));
        rotate(&agent, 5);
        after(t0, 100).await;
        assert_eq!(sink.on_disk("db").map(|(v, _)| v), Some(5));
        let tried = agent.0.lock().unwrap().ack_attempts;
        assert!(tried >= 2, "v5 was not retried: {tried} attempts");
        rotate(&agent, 6);
        agent.0.lock().unwrap().ack_errors.clear();
        after(t0, 2_000).await;
        assert_eq!(agent.acks(), ["db v1", "db v6"], "v5 was queued behind or sent after v6");
        let attempts = agent.0.lock().unwrap().ack_attempts;
        after(t0, 30_000).await;
        assert_eq!(agent.0.lock().unwrap().ack_attempts, attempts, "retries went on after success");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_acknowledgement_is_not_retried_and_retries_are_bounded() {
        let agent = agent(&[("db", b"one", 1, 3_600_000)]);
        let sink = FakeSink::default();
        agent.0.lock().unwrap().ack_errors.push_back(answer(400));
        let t0 = Instant::now();
        let _run = start(&agent, &sink, watching());
        after(t0, 5_000).await;
        assert_eq!(agent.0.lock().unwrap().ack_attempts, 1, "a 4xx refusal was retried");
        assert!(agent.acks().is_empty());
        // A controller that keeps failing is tried a bounded number of times.
        agent.0.lock().unwrap().ack_errors.extend((0..100).map(|_| answer(503)));
        rotate(&agent, 2);
        // (Before 45 s: then the fake's silent stream is taken for dead, and the
        // new stream's hello asks for the acknowledgement again, by design.)
        after(t0, 40_000).await;
        assert_eq!(agent.0.lock().unwrap().ack_attempts, 1 + crate::acks::ATTEMPTS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_transiently_failed_notification_is_retried_with_the_newest_versions() {
        let agent = agent(&[("db", b"one", 1, 3_600_000)]);
        let sink = FakeSink::default();
        let on_rotate = OnRotate {
            action: PostRotate::Signal("SIGHUP"),
            target: None,
            debounce: Duration::from_millis(100),
        };
        let t0 = Instant::now();
        let _run = start(&agent, &sink, Push { watch: true, on_rotate: Some(on_rotate) });
        after(t0, 50).await;
        agent.0.lock().unwrap().notify_errors.extend([eagain(), answer(429)]);
        rotate(&agent, 2);
        // The first attempt (after the 100 ms debounce) fails; v3 is stored
        // while its retry waits.
        after(t0, 300).await;
        assert_eq!(agent.0.lock().unwrap().notify_attempts, 1);
        rotate(&agent, 3);
        after(t0, 10_000).await;
        let sent = agent.notified();
        assert_eq!(agent.0.lock().unwrap().notify_attempts, 3, "{sent:?}");
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!((sent[0].secrets[0].name.as_str(), sent[0].secrets[0].version), ("db", 3));
        // A refusal is final.
        agent.0.lock().unwrap().notify_errors.push_back(answer(403));
        rotate(&agent, 4);
        after(t0, 30_000).await;
        assert_eq!(agent.0.lock().unwrap().notify_attempts, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn the_stream_is_back_at_once_after_it_ends_and_within_half_a_second_of_the_controller() {
        let agent = agent(&[("db", b"one", 1, 3_600_000)]);
        let sink = FakeSink::default();
        let t0 = Instant::now();
        let _run = start(&agent, &sink, watching());
        after(t0, 10_000).await;
        assert_eq!(agent.open_streams(), 1);
        // The controller hangs up a stream that was up for a while: reopened at once.
        agent.close_streams();
        let again = time_until(Duration::from_secs(1), || agent.open_streams() == 1).await;
        assert!(again <= Duration::from_millis(1), "reopened after {again:?}");
        // The controller goes away for 6 s (its socket is gone) and comes back.
        after(t0, 20_000).await;
        agent.set_up(false);
        agent.close_streams();
        after(t0, 26_000).await;
        agent.set_up(true);
        let back = time_until(Duration::from_secs(2), || agent.open_streams() == 1).await;
        assert!(back <= Duration::from_millis(500), "back on the stream {back:?} after the controller");
        // On the new stream a revocation wipes at once.
        agent.revoke("db");
        agent.push(WatchEvent::Revoked { name: name("db") });
        let wiped = time_until(Duration::from_secs(1), || sink.on_disk("db").is_none()).await;
        assert!(wiped <= Duration::from_millis(1), "{wiped:?}");
    }
}
