//! What the sidecar must deliver or keep open, against a controller that
//! fails transiently (fake agent, tokio's paused clock): acknowledgements
//! and post-rotate notifications are retried, the watch stream is back as
//! soon as the controller is.

use super::*;
use crate::fakes::{answer, eagain, FakeAgent, FakeSink};
use crate::notify::OnRotate;
use crate::supervise::{run, Push};
use seg_common::api::{PostRotate, WatchEvent};
use std::time::Duration;

fn name(s: &str) -> SecretName {
    SecretName::parse(s).unwrap()
}

fn agent(secrets: &[(&str, &[u8], u64, u64)]) -> FakeAgent {
    let agent = FakeAgent::with(secrets);
    agent.0.lock().unwrap().watchable = true;
    agent
}

/// Runs the sidecar's loops until the returned sender is dropped.
fn start(agent: &FakeAgent, sink: &FakeSink, push: Push) -> tokio::sync::oneshot::Sender<()> {
    let ctx = Ctx::new(sink.clone(), agent.clone(), false);
    let (stop, stopped) = tokio::sync::oneshot::channel();
    tokio::spawn(run(ctx, Some(vec![name("db")]), push, async move {
        let _ = stopped.await;
    }));
    stop
}

fn watching() -> Push {
    Push { watch: true, on_rotate: None }
}

async fn after(t0: Instant, ms: u64) {
    sleep_until(t0 + Duration::from_millis(ms)).await;
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
    let on_rotate =
        OnRotate { action: PostRotate::Signal("SIGHUP"), target: None, debounce: Duration::from_millis(100) };
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
