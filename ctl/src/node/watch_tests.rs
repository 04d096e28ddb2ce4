use super::*;
use crate::node::fakes::attested;
use http_body_util::BodyExt;

fn meta(version: u64, grants: &[&str]) -> SecretMeta {
    crate::node::fakes::secret_meta("db", version, grants)
}

fn view(id: u64, service: &str, wants: Option<&[&str]>) -> WatcherView {
    let wants = wants.map(|w| w.iter().map(|n| SecretName::parse(n).unwrap()).collect());
    WatcherView { id, who: attested("shop", service, &format!("c{id}")), wants }
}

fn names(events: &[(u64, WatchEvent)]) -> Vec<String> {
    events
        .iter()
        .map(|(id, e)| match e {
            WatchEvent::Version { version, .. } => format!("{id}:v{version}"),
            WatchEvent::Revoked { .. } => format!("{id}:revoked"),
            WatchEvent::Removed { .. } => format!("{id}:removed"),
            other => format!("{id}:{other:?}"),
        })
        .collect()
}

#[test]
fn plan_tells_only_the_streams_that_follow_the_secret() {
    let ws = [
        view(1, "app", None),
        view(2, "web", None),
        view(3, "app", Some(&["other"])),
        view(4, "app", Some(&["db"])),
    ];
    let (v1, v2) = (meta(1, &["shop/app"]), meta(2, &["shop/app"]));
    assert_eq!(names(&plan(Some(&v1), Some(&v2), &ws)), ["1:v2", "4:v2"], "a rotation");
    assert!(plan(Some(&v2), Some(&v2), &ws).is_empty(), "no change, no event");
    let web = meta(2, &["shop/app", "shop/web"]);
    assert_eq!(names(&plan(Some(&v2), Some(&web), &ws)), ["2:v2"], "a new grant");
    assert_eq!(names(&plan(Some(&web), Some(&v2), &ws)), ["2:revoked"], "a revocation");
    assert_eq!(names(&plan(Some(&v2), None, &ws)), ["1:removed", "4:removed"], "a removal");
    assert_eq!(names(&plan(None, Some(&v1), &ws)), ["1:v1", "4:v1"], "a new secret");
}

async fn next_line(body: &mut WatchBody) -> Option<WatchEvent> {
    let frame =
        tokio::time::timeout(Duration::from_secs(2), body.frame()).await.expect("no event in time")?;
    let bytes = frame.unwrap().into_data().unwrap();
    assert!(bytes.ends_with(b"\n"));
    Some(serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn events_flow_through_the_body_and_closing_it_unregisters() {
    let hub = Hub::new(WatchLimits::default());
    let (id, mut body) = hub.open(attested("shop", "app", "c1"), None, Hangup::default()).unwrap();
    assert_eq!(hub.count(), 1);
    let event = WatchEvent::Revoked { name: SecretName::parse("db").unwrap() };
    assert_eq!(hub.publish(&[(id, event.clone()), (id + 100, WatchEvent::Ping)]), 1);
    assert_eq!(next_line(&mut body).await, Some(event));
    drop(body);
    assert_eq!(hub.count(), 0);
    assert_eq!(hub.publish(&[(id, WatchEvent::Ping)]), 0);
}

#[tokio::test]
async fn limits_per_container_and_in_total() {
    let hub = Hub::new(WatchLimits { per_container: 2, total: 3, queue: 4 });
    let open = |c: &str| hub.open(attested("shop", "app", c), None, Hangup::default());
    let _a = open("c1").unwrap();
    let _b = open("c1").unwrap();
    assert_eq!(open("c1").err(), Some(Refusal::PerContainer(2)));
    let _c = open("c2").unwrap();
    assert_eq!(open("c3").err(), Some(Refusal::Total(3)));
    drop(_a);
    assert!(open("c1").is_ok(), "a closed stream frees its slot");
}

#[tokio::test]
async fn a_client_that_does_not_read_is_cut_off_and_others_are_not() {
    let hub = Hub::new(WatchLimits { per_container: 4, total: 10, queue: 3 });
    let hangup = Hangup::default();
    let (stuck, _stuck_body) = hub.open(attested("shop", "app", "c1"), None, hangup.clone()).unwrap();
    let (good, mut good_body) = hub.open(attested("shop", "app", "c2"), None, Hangup::default()).unwrap();
    for _ in 0..5 {
        hub.publish(&[(stuck, WatchEvent::Ping), (good, WatchEvent::Ping)]);
        assert_eq!(next_line(&mut good_body).await, Some(WatchEvent::Ping));
    }
    assert_eq!(hub.count(), 1, "the stuck stream is still registered");
    // The hang-up was signalled: the connection task would drop the socket.
    tokio::time::timeout(Duration::from_secs(1), hangup.wait()).await.expect("no hang-up");
    assert_eq!(hub.views()[0].id, good);
}

#[tokio::test]
async fn ticks_ping_and_cut_off_stalled_streams() {
    let hub = Hub::new(WatchLimits::default());
    let (_, mut reader) = hub.open(attested("shop", "app", "c1"), None, Hangup::default()).unwrap();
    let (_, _idle) = hub.open(attested("shop", "app", "c2"), None, Hangup::default()).unwrap();
    hub.tick();
    assert_eq!(next_line(&mut reader).await, Some(WatchEvent::Ping));
    assert_eq!(hub.count(), 2, "one unread ping is not a stall yet");
    hub.tick_at(hub.now_ms() + STALL.as_millis() as u64 + 1);
    assert_eq!(hub.count(), 1, "the stream with a ping waiting for 30 s is cut off");
}
