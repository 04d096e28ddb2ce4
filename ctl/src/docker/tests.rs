use super::bollard_backend::events_options;
use super::fake::{container, network, End, FakeEvents};
use super::link::{Backoff, CAPACITY};
use super::map::{attached_containers, network_info};
use super::networks::create_request;
use super::*;
use crate::network::{NetworkSpec, ICC_OPTION, MANAGED_LABEL};
use bollard::models::{
    ContainerSummary, ContainerSummaryNetworkSettings, EndpointSettings, Ipam, IpamConfig, Network,
};
use std::collections::HashMap;
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

#[tokio::test]
async fn a_caller_waits_for_the_first_connection_attempt_and_no_longer() {
    // Nobody will ever connect this link: no wait at all.
    let link = DockerLink::new();
    let started = std::time::Instant::now();
    let why = link.settled(Duration::from_secs(30)).await.unwrap_err();
    assert!(matches!(why, NotConnected::Yet) && started.elapsed() < Duration::from_secs(1), "{why}");

    // An attempt under way that has not finished: a caller waits, and is
    // told "not yet" when its wait ends (a dockerd that accepts and never
    // answers).
    let dir = tempfile::tempdir().unwrap();
    let silent = dir.path().join("silent.sock");
    let _silent = std::os::unix::net::UnixListener::bind(&silent).unwrap();
    let hanging = DockerLink::new();
    drop(hanging.spawn_connect(silent));
    let started = std::time::Instant::now();
    let why = hanging.settled(Duration::from_millis(30)).await.unwrap_err();
    assert!(matches!(why, NotConnected::Yet), "{why}");
    assert!(started.elapsed() >= Duration::from_millis(30));

    // The attempt finishing while a caller waits ends its wait at once.
    let waiting = {
        let link = hanging.clone();
        tokio::spawn(async move { link.settled(Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    // A client is made without talking to the socket; it only has to exist.
    let socket = dir.path().join("docker.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let client =
        bollard::Docker::connect_with_unix(socket.to_str().unwrap(), 1, bollard::API_DEFAULT_VERSION)
            .unwrap();
    hanging.set(client);
    let got = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("woken").unwrap();
    assert!(got.is_ok());

    // A failed attempt is an answer too: no wait.
    let failed = DockerLink::new();
    drop(failed.spawn_connect("/nonexistent/docker.sock".into()));
    let why = tokio::time::timeout(Duration::from_secs(5), failed.settled(Duration::from_secs(30)))
        .await
        .expect("answered once the attempt failed")
        .unwrap_err();
    assert!(matches!(why, NotConnected::Failed(_)), "{why}");
}

fn summary(name: &str, networks: &[(&str, &str)]) -> ContainerSummary {
    let networks = networks
        .iter()
        .map(|(n, id)| {
            (n.to_string(), EndpointSettings { network_id: Some(id.to_string()), ..Default::default() })
        })
        .collect();
    ContainerSummary {
        names: Some(vec![format!("/{name}")]),
        network_settings: Some(ContainerSummaryNetworkSettings { networks: Some(networks) }),
        ..Default::default()
    }
}

#[test]
fn engine_networks_map_to_info() {
    let attached = attached_containers(&[summary("web", &[("app", "abcdef0123456789")]), summary("db", &[])]);
    let n = Network {
        name: Some("app".into()),
        id: Some("abcdef0123456789".into()),
        driver: Some("bridge".into()),
        internal: Some(true),
        options: Some(HashMap::from([(ICC_OPTION.to_owned(), "false".to_owned())])),
        labels: Some(HashMap::from([(MANAGED_LABEL.to_owned(), "true".to_owned())])),
        ipam: Some(Ipam {
            config: Some(vec![IpamConfig { subnet: Some("10.30.0.0/24".into()), ..Default::default() }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let i = network_info(n, &attached);
    assert_eq!((i.internal, i.icc, i.managed), (true, false, true));
    assert_eq!(i.bridge_if.as_deref(), Some("br-abcdef012345"));
    assert_eq!((i.subnets, i.containers), (vec!["10.30.0.0/24".to_owned()], vec!["web".to_owned()]));
    let plain = network_info(Network { name: Some("x".into()), ..Default::default() }, &attached);
    assert_eq!((plain.icc, plain.internal, plain.managed, plain.bridge_if), (true, false, false, None));
}

#[test]
fn create_request_carries_flags_label_and_subnet() {
    let r =
        create_request(&NetworkSpec::new("app", true, false, Some("fd00:7::/64".parse().unwrap())).unwrap());
    assert_eq!((r.name.as_str(), r.driver.as_deref(), r.internal), ("app", Some("bridge"), Some(true)));
    assert_eq!(r.options.unwrap()[ICC_OPTION], "false");
    assert_eq!(r.labels.unwrap()[MANAGED_LABEL], "true");
    assert_eq!(r.enable_ipv6, Some(true));
    let subnet = r.ipam.unwrap().config.unwrap()[0].subnet.clone();
    assert_eq!(subnet.as_deref(), Some("fd00:7::/64"));
    let plain = create_request(&NetworkSpec::new("app", false, true, None).unwrap());
    assert_eq!((plain.ipam, plain.enable_ipv6), (None, None));
    assert!(plain.options.unwrap().is_empty(), "ICC on is Docker's default: no option");
}
