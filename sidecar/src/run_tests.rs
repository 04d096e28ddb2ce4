//! The renewal loop against a fake agent and a fake sink, on tokio's paused
//! clock: time only moves when every task is idle, so lease deadlines can
//! be checked to the millisecond without waiting for them.

use super::*;
use crate::fakes::{FakeAgent, FakeSink};
use crate::supervise::{run, Push};
use std::time::Duration;
use tokio::task::JoinHandle;

fn name(s: &str) -> SecretName {
    SecretName::parse(s).unwrap()
}

type Stop = tokio::sync::oneshot::Sender<()>;

fn start(
    agent: &FakeAgent,
    sink: &FakeSink,
    requested: Option<Vec<SecretName>>,
) -> (Arc<Ctx<FakeSink, FakeAgent>>, Stop, JoinHandle<()>) {
    let ctx = Ctx::new(sink.clone(), agent.clone(), requested.is_none());
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let handle = tokio::spawn(run(ctx.clone(), requested, Push::default(), async move {
        let _ = stopped.await;
    }));
    (ctx, stop, handle)
}

async fn sleep_to(t0: Instant, ms: u64) {
    sleep_until(t0 + Duration::from_millis(ms)).await;
}

#[tokio::test(start_paused = true)]
async fn the_file_is_wiped_when_the_lease_runs_out_and_returns_with_the_agent() {
    let agent = FakeAgent::with(&[("db", b"pw", 1, 2000)]);
    let sink = FakeSink::default();
    let t0 = Instant::now();
    let (ctx, stop, handle) = start(&agent, &sink, Some(vec![name("db")]));

    sleep_to(t0, 10).await;
    assert_eq!(sink.on_disk("db"), Some((1, b"pw".to_vec())));
    assert!(ctx.health_line().starts_with("ok"), "{}", ctx.health_line());

    agent.set_up(false);
    let before = agent.fetches();
    sleep_to(t0, 1990).await;
    assert!(sink.on_disk("db").is_some(), "wiped before the lease ran out");
    assert!(agent.fetches() - before >= 2, "too few renewal attempts inside a 2 s lease");
    assert!(ctx.health_line().starts_with("ok"), "still within the lease: {}", ctx.health_line());

    sleep_to(t0, 2010).await;
    assert_eq!(sink.on_disk("db"), None, "not wiped after the lease ran out");
    assert_eq!(ctx.lease(&name("db")).unwrap().phase, Phase::Expired);
    assert!(ctx.health_line().starts_with("expired: db"), "{}", ctx.health_line());

    agent.set_up(true);
    sleep_to(t0, 2010 + 31_000).await;
    assert_eq!(sink.on_disk("db"), Some((1, b"pw".to_vec())), "the file did not come back");
    assert_eq!(sink.log(), ["write db v1", "wipe db", "write db v1"]);

    stop.send(()).unwrap();
    handle.await.unwrap();
    assert_eq!(sink.on_disk("db"), None, "shutdown must wipe");
}

#[tokio::test(start_paused = true)]
async fn renewals_follow_two_thirds_of_the_lease_and_pick_up_new_versions() {
    let agent = FakeAgent::with(&[("db", b"v1", 1, 3000)]);
    let sink = FakeSink::default();
    let t0 = Instant::now();
    let (_ctx, _stop, _h) = start(&agent, &sink, Some(vec![name("db")]));
    sleep_to(t0, 10).await;
    assert_eq!(agent.fetches(), 1);
    sleep_to(t0, 1790).await; // 2/3 of 3 s minus 10 %: 1.8 s
    assert_eq!(agent.fetches(), 1, "renewed too early");
    sleep_to(t0, 2210).await; // 2/3 of 3 s plus 10 %: 2.2 s
    assert_eq!(agent.fetches(), 2, "not renewed in the 2/3 ± 10 % window");
    agent.set("db", b"v2", 2, 3000);
    sleep_to(t0, 4500).await;
    assert_eq!(sink.on_disk("db"), Some((2, b"v2".to_vec())));
    assert_eq!(sink.log(), ["write db v1", "write db v2"], "unchanged renewals must not write");
}

#[tokio::test(start_paused = true)]
async fn a_revoked_secret_is_wiped_at_its_next_renewal() {
    let agent = FakeAgent::with(&[("db", b"pw", 1, 60_000), ("api", b"k", 1, 60_000)]);
    let sink = FakeSink::default();
    let t0 = Instant::now();
    let (ctx, _stop, _h) = start(&agent, &sink, Some(vec![name("db"), name("api")]));
    sleep_to(t0, 10).await;
    agent.revoke("db");
    sleep_to(t0, 45_000).await;
    assert_eq!(sink.on_disk("db"), None);
    assert!(sink.on_disk("api").is_some());
    assert_eq!(ctx.lease(&name("db")).unwrap().phase, Phase::Refused("not_granted".into()));
    assert_eq!(ctx.health_line(), "refused: db (not_granted)");
}

#[tokio::test(start_paused = true)]
async fn discovery_follows_grants_revocations_and_rotations() {
    let agent = FakeAgent::with(&[("a", b"1", 1, 60_000)]);
    agent.set_up(false);
    let sink = FakeSink::default();
    let t0 = Instant::now();
    let (ctx, stop, handle) = start(&agent, &sink, None);
    sleep_to(t0, 10).await;
    assert!(ctx.health_line().starts_with("waiting: the list"), "{}", ctx.health_line());

    agent.set_up(true);
    sleep_to(t0, 2_000).await;
    assert!(sink.on_disk("a").is_some());
    assert_eq!(ctx.health_line(), "ok: 1 secret on disk");

    agent.set("b", b"2", 1, 60_000);
    agent.set("a", b"1b", 2, 60_000);
    sleep_to(t0, 2_000 + 31_000).await; // the discovery interval is at most 30 s
    assert_eq!(sink.on_disk("b"), Some((1, b"2".to_vec())));
    assert_eq!(sink.on_disk("a"), Some((2, b"1b".to_vec())), "a new version was not picked up");

    agent.revoke("a");
    sleep_to(t0, 2_000 + 62_000).await;
    assert_eq!(sink.on_disk("a"), None);
    assert!(ctx.lease(&name("a")).is_none());
    assert_eq!(ctx.health_line(), "ok: 1 secret on disk");

    stop.send(()).unwrap();
    handle.await.unwrap();
    assert!(sink.written().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_hanging_agent_cannot_keep_a_file_past_its_lease() {
    let agent = FakeAgent::with(&[("db", b"pw", 1, 2000)]);
    let sink = FakeSink::default();
    let t0 = Instant::now();
    let (ctx, _stop, _h) = start(&agent, &sink, Some(vec![name("db")]));
    sleep_to(t0, 10).await;
    assert!(sink.on_disk("db").is_some());
    agent.set_hang(true);
    sleep_to(t0, 1990).await;
    assert!(sink.on_disk("db").is_some(), "wiped before the lease ran out");
    sleep_to(t0, 2030).await;
    assert_eq!(sink.on_disk("db"), None, "a hanging renewal kept the file past its lease");
    assert_eq!(ctx.lease(&name("db")).unwrap().phase, Phase::Expired);
}
