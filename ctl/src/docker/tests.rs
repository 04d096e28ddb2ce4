use super::bollard_backend::events_options;
use super::fake::{container, network, End, FakeEvents};
use super::link::{Backoff, CAPACITY};
use super::*;
use std::path::Path;
use std::sync::Arc;

#[test]
fn backoff_doubles_to_thirty_seconds_and_resets() {
    let mut b = Backoff::new();
    let secs: Vec<u64> = (0..8).map(|_| b.next_delay().as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
    b.reset();
    assert_eq!(b.next_delay(), Duration::from_secs(1));
}

#[test]
fn events_query_is_the_union_of_what_subscribers_follow() {
    let o = events_options(1700000000);
    assert_eq!(o.since.as_deref(), Some("1700000000"));
    let f = o.filters.unwrap();
    assert_eq!(f["type"], ["container", "network"]);
    // Attestation's container deaths and renames, segregation's starts and
    // network changes.
    for e in ["die", "destroy", "stop", "rename", "start", "connect", "disconnect", "create"] {
        assert!(f["event"].iter().any(|x| x == e), "{e}");
    }
}

#[tokio::test]
async fn missing_socket_is_a_clear_error() {
    let err = connect(Path::new("/nonexistent/docker.sock")).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/docker.sock") && msg.contains("dockerd"), "{msg}");
}

fn quick() -> Backoff {
    Backoff::between(Duration::from_millis(1), Duration::from_millis(2))
}

async fn take(sub: &mut Subscription, n: usize) -> Vec<Notice> {
    let mut out = Vec::new();
    for _ in 0..n {
        let next = tokio::time::timeout(Duration::from_secs(5), sub.next()).await;
        out.push(next.expect("a notice within 5 s").expect("the link is alive"));
    }
    out
}

fn ev(e: Event) -> Notice {
    Notice::Event(e)
}

#[tokio::test]
async fn every_subscriber_gets_every_event_in_order() {
    let script = vec![container("start", "a"), network("connect", "n", Some("a")), container("die", "a")];
    let link = DockerLink::new();
    let (mut one, mut two) = (link.subscribe(), link.subscribe());
    let pump = link.spawn_pump(Arc::new(FakeEvents::new(vec![(script.clone(), End::Ends)])), quick());
    let expected: Vec<Notice> = std::iter::once(Notice::Gap).chain(script.into_iter().map(ev)).collect();
    assert_eq!(take(&mut one, 4).await, expected);
    assert_eq!(take(&mut two, 4).await, expected);
    pump.abort();
}

#[tokio::test]
async fn a_gap_precedes_each_resubscription() {
    let fake = Arc::new(FakeEvents::new(vec![
        (vec![container("start", "a")], End::Ends),
        (vec![container("die", "a")], End::Fails),
        (vec![container("destroy", "a")], End::Ends),
    ]));
    let link = DockerLink::new();
    let mut sub = link.subscribe();
    let pump = link.spawn_pump(fake.clone(), quick());
    let got = take(&mut sub, 7).await;
    let expected = [
        Notice::Gap,
        ev(container("start", "a")),
        Notice::Gap,
        ev(container("die", "a")),
        Notice::Gap,
        ev(container("destroy", "a")),
        Notice::Gap,
    ];
    assert_eq!(got, expected);
    assert_eq!(*fake.opened.lock().unwrap(), 4, "re-subscribed after an end and after a failure");
    pump.abort();
}

#[tokio::test]
async fn a_lagging_subscriber_stalls_no_one_and_is_told_of_the_gap() {
    let burst: Vec<Event> = (0..CAPACITY + 10).map(|i| container("start", &format!("c{i}"))).collect();
    let link = DockerLink::new();
    let (mut fast, mut slow) = (link.subscribe(), link.subscribe());
    // The fast one reads everything, concurrently, while the slow one reads nothing.
    let n = burst.len() + 1;
    let reader = tokio::spawn(async move { (take(&mut fast, n).await, fast) });
    let pump = link.spawn_pump(Arc::new(FakeEvents::new(vec![(burst.clone(), End::Ends)])), quick());
    let (got, mut fast) = reader.await.unwrap();
    assert_eq!(got[0], Notice::Gap);
    assert!(got[1..].iter().zip(&burst).all(|(n, e)| *n == ev(e.clone())), "in order, none lost");
    // Let the pump re-subscribe (the script ended), then read the slow one.
    assert_eq!(take(&mut fast, 1).await, [Notice::Gap]);
    assert_eq!(take(&mut slow, 1).await, [Notice::Gap], "fell behind: told of a gap");
    let rest = take(&mut slow, CAPACITY).await;
    let last = rest.iter().rposition(|n| *n != Notice::Gap).unwrap();
    assert_eq!(rest[last], ev(burst[burst.len() - 1].clone()), "then the newest events, in order");
    assert!(slow.try_next().is_none(), "nothing else pending");
    pump.abort();
}
