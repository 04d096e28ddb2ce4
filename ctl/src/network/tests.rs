use super::*;
use futures_util::future::BoxFuture;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

fn info(name: &str, internal: bool, icc: bool, containers: &[&str]) -> NetworkInfo {
    NetworkInfo {
        name: name.to_owned(),
        id: format!("id-{name}"),
        driver: "bridge".to_owned(),
        internal,
        icc,
        subnets: vec!["10.30.0.0/24".to_owned()],
        bridge_if: Some(format!("br-{name}")),
        managed: true,
        containers: containers.iter().map(|c| c.to_string()).collect(),
    }
}

fn spec(name: &str, internal: bool, icc: bool) -> NetworkSpec {
    NetworkSpec::new(name, internal, icc, None).unwrap()
}

/// Records calls; fails the call whose description equals `fail`.
#[derive(Default)]
struct Fake {
    networks: Mutex<Vec<NetworkInfo>>,
    calls: Mutex<Vec<String>>,
    fail: Option<String>,
    /// A network of the same name appears when `create` runs (a racing creator).
    race: bool,
}

impl Fake {
    fn with(networks: Vec<NetworkInfo>) -> Fake {
        Fake { networks: Mutex::new(networks), ..Default::default() }
    }

    fn call(&self, what: String) -> Result<(), NetworkError> {
        self.calls.lock().unwrap().push(what.clone());
        match &self.fail {
            Some(f) if *f == what => Err(NetworkError::Docker { action: what, reason: "boom".into() }),
            _ => Ok(()),
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl NetworkApi for Fake {
    fn networks(&self) -> BoxFuture<'_, Result<Vec<NetworkInfo>, NetworkError>> {
        Box::pin(async move { Ok(self.networks.lock().unwrap().clone()) })
    }
    fn create<'a>(&'a self, spec: &'a NetworkSpec) -> BoxFuture<'a, Result<String, NetworkError>> {
        Box::pin(async move {
            self.call(format!("create {}", spec.name))?;
            let mut networks = self.networks.lock().unwrap();
            if self.race {
                networks.push(NetworkInfo { id: "id-theirs".into(), ..info(&spec.name, false, true, &[]) });
            }
            networks
                .push(NetworkInfo { id: "id-ours".into(), ..info(&spec.name, spec.internal, spec.icc, &[]) });
            Ok("id-ours".to_owned())
        })
    }
    fn remove<'a>(&'a self, network: &'a str) -> BoxFuture<'a, Result<(), NetworkError>> {
        Box::pin(async move {
            self.call(format!("remove {network}"))?;
            let mut networks = self.networks.lock().unwrap();
            let at = networks.iter().position(|n| n.id == network || n.name == network).unwrap();
            networks.remove(at);
            Ok(())
        })
    }
    fn connect<'a>(&'a self, c: &'a str, n: &'a str) -> BoxFuture<'a, Result<(), NetworkError>> {
        Box::pin(async move { self.call(format!("connect {c} {n}")) })
    }
    fn disconnect<'a>(&'a self, c: &'a str, n: &'a str) -> BoxFuture<'a, Result<(), NetworkError>> {
        Box::pin(async move { self.call(format!("disconnect {c} {n}")) })
    }
}

#[test]
fn names_follow_dockers_rule() {
    for ok in ["a1", "segt-net_1.x", "9lives"] {
        validate_name(ok).unwrap();
    }
    for (bad, why) in [
        ("", "empty"),
        ("a", "at least 2"),
        ("-ab", "start with"),
        ("ab cd", "` ` is not allowed"),
        ("a/b", "`/` is not allowed"),
        ("né", "`é` is not allowed"),
    ] {
        let msg = validate_name(bad).unwrap_err().to_string();
        assert!(msg.contains(why) && msg.contains(&format!("`{bad}`")), "{bad}: {msg}");
    }
    for predefined in PREDEFINED {
        assert!(matches!(validate_name(predefined), Err(NetworkError::Predefined(_))));
    }
}

#[test]
fn subnets_parse_strictly() {
    let s = parse_subnet("10.30.0.0/24").unwrap();
    assert_eq!((s.to_string().as_str(), s.prefix_len(), s.addr().is_ipv6()), ("10.30.0.0/24", 24, false));
    assert!(parse_subnet("fd00:1::/64").unwrap().addr().is_ipv6());
    for (bad, why) in [
        ("10.30.0.0", "ADDRESS/LENGTH"),
        ("10.30.0/24", "not an IP address"),
        ("10.30.0.0/31", "0..=30"),
        ("10.30.0.0/+24", "0..=30"),
        ("fd00::/127", "0..=126"),
        ("10.30.0.1/16", "did you mean `10.30.0.0/16`"),
    ] {
        let msg = parse_subnet(bad).unwrap_err().to_string();
        assert!(msg.contains(why) && msg.contains(bad), "{bad}: {msg}");
    }
}

#[test]
fn bridge_interface_names() {
    let none = HashMap::new();
    let id = "0123456789abcdef0123";
    assert_eq!(bridge_interface("bridge", "bridge", id, &none).as_deref(), Some("docker0"));
    assert_eq!(bridge_interface("bridge", "app", id, &none).as_deref(), Some("br-0123456789ab"));
    let named = HashMap::from([(BRIDGE_NAME_OPTION.to_owned(), "seg0".to_owned())]);
    assert_eq!(bridge_interface("bridge", "app", id, &named).as_deref(), Some("seg0"));
    assert_eq!(bridge_interface("host", "host", id, &none), None);
    assert_eq!(bridge_interface("null", "none", id, &none), None);
}

fn attachments(pairs: &[(&str, &[&str])]) -> Attachments {
    pairs.iter().map(|(c, nets)| (c.to_string(), nets.iter().map(|n| n.to_string()).collect())).collect()
}

fn connect(c: &str, n: &str) -> Op {
    Op::Connect { container: c.into(), network: n.into() }
}

fn disconnect(c: &str, n: &str) -> Op {
    Op::Disconnect { container: c.into(), network: n.into() }
}

#[test]
fn attachments_move_connect_first_and_leave_others_alone() {
    let desired = attachments(&[("web", &["b"]), ("db", &["a", "c"]), ("ghost", &["a"])]);
    let actual = attachments(&[("web", &["a"]), ("db", &["a", "bridge"]), ("other", &["a"])]);
    let ops = plan_attachments(&desired, &actual);
    assert_eq!(
        ops,
        [connect("db", "c"), connect("web", "b"), disconnect("db", "bridge"), disconnect("web", "a")]
    );
    assert!(plan_attachments(&actual, &actual).is_empty());
    // Declared with no network: isolated, from every network it is on.
    let isolated = plan_attachments(&attachments(&[("web", &[])]), &actual);
    assert_eq!(isolated, [disconnect("web", "a")]);
    assert_eq!(connect("w", "n").to_string(), "connect w to n");
}

#[test]
fn network_plan_creates_missing_and_reports_differences() {
    let existing = [info("same", true, false, &[]), info("differs", false, true, &["web"])];
    let declared = [spec("same", true, false), spec("differs", true, false), spec("new", false, false)];
    let plan = plan_networks(&declared, &existing).unwrap();
    assert_eq!(plan.create, [spec("new", false, false)]);
    assert_eq!(plan.unchanged, ["same"]);
    let msg = plan.mismatched[0].to_string();
    for part in [
        "`differs`",
        "internal is false (policy: true)",
        "icc is true (policy: false)",
        "docker network rm differs",
    ] {
        assert!(msg.contains(part), "{part}: {msg}");
    }
    let with_subnet = NetworkSpec::new("same", true, false, Some("10.31.0.0/24".parse().unwrap())).unwrap();
    let plan = plan_networks(&[with_subnet], &existing).unwrap();
    assert!(plan.mismatched[0].differences[0].contains("policy: 10.31.0.0/24"));
}

#[test]
fn network_plan_refuses_conflicts_and_predefined() {
    let twice = [spec("app", true, false), spec("app", true, false)];
    assert_eq!(plan_networks(&twice, &[]).unwrap().create.len(), 1);
    let conflict = [spec("app", true, false), spec("app", false, false)];
    let err = plan_networks(&conflict, &[]).unwrap_err();
    assert!(matches!(err, NetworkError::ConflictingDeclarations { .. }), "{err}");
    let sneaky = NetworkSpec {
        name: "host".into(),
        internal: false,
        icc: true,
        subnet: None,
        labels: Default::default(),
    };
    assert!(matches!(plan_networks(&[sneaky], &[]), Err(NetworkError::Predefined(_))));
}

#[tokio::test]
async fn ensure_creates_missing_only() {
    let fake = Fake::with(vec![info("differs", false, true, &[])]);
    let report =
        ensure_networks(&fake, &[spec("differs", true, true), spec("new", true, false)]).await.unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.created, ["new"]);
    assert_eq!(fake.calls(), ["create new"]);
}

#[tokio::test]
async fn create_refuses_existing_and_undoes_a_lost_race() {
    let fake = Fake::with(vec![info("app", false, true, &[])]);
    assert!(matches!(create(&fake, &spec("app", true, false)).await, Err(NetworkError::AlreadyExists(_))));
    assert!(fake.calls().is_empty());
    let racing = Fake { race: true, ..Default::default() };
    assert!(matches!(create(&racing, &spec("app", true, false)).await, Err(NetworkError::AlreadyExists(_))));
    assert_eq!(racing.calls(), ["create app", "remove id-ours"]);
    assert_eq!(racing.networks.lock().unwrap()[0].id, "id-theirs");
}

#[tokio::test]
async fn remove_refuses_in_use_predefined_and_unknown() {
    let fake = Fake::with(vec![info("busy", false, true, &["db", "web"]), info("idle", false, true, &[])]);
    let msg = remove(&fake, "busy").await.unwrap_err().to_string();
    assert!(msg.contains("2 container(s) attached: db, web") && msg.contains("`busy`"), "{msg}");
    assert!(matches!(remove(&fake, "bridge").await, Err(NetworkError::Predefined(_))));
    assert!(matches!(remove(&fake, "nope").await, Err(NetworkError::NotFound(_))));
    remove(&fake, "idle").await.unwrap();
    assert_eq!(fake.calls(), ["remove idle"]);
    let names: BTreeSet<String> = list(&fake).await.unwrap().into_iter().map(|n| n.name).collect();
    assert_eq!(names, BTreeSet::from(["busy".to_owned()]));
}

#[tokio::test]
async fn apply_stops_at_the_first_failure() {
    let ops = [connect("web", "b"), connect("db", "b"), disconnect("web", "a")];
    let fake = Fake { fail: Some("connect db b".into()), ..Default::default() };
    let err = apply_attachments(&fake, &ops).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("step 2 of 3 (connect db to b)") && msg.contains("boom"), "{msg}");
    assert_eq!(fake.calls(), ["connect web b", "connect db b"]);
    assert_eq!(apply_attachments(&Fake::default(), &ops).await.unwrap(), 3);
}
