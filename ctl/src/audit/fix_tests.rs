//! `--fix` planning and idempotence against a fake host and controller, and
//! the real [`HostFixer`] against a temp daemon.json (never /etc/docker).

use super::*;
use crate::audit::container_checks::tests::with;
use crate::audit::facts::{ContainerFacts, DaemonFacts, Facts, SegFacts};
use serde_json::json;

/// An in-memory controller: its ICC rule and the policies applied through it.
#[derive(Default)]
struct FakeController {
    rule: bool,
    applied: Vec<String>,
}

impl Controller for FakeController {
    fn icc_off(&mut self) -> BoxFuture<'_, Result<(), FixError>> {
        self.rule = true;
        Box::pin(async { Ok(()) })
    }
    fn apply_policy<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, Result<(), FixError>> {
        self.applied.push(text.to_owned());
        Box::pin(async { Ok(()) })
    }
}

/// An in-memory host: daemon.json's `icc`, the controller if it runs.
#[derive(Default)]
struct FakeFixer {
    icc: Option<bool>,
    controller: Option<FakeController>,
    writes: usize,
}

impl Fixer for FakeFixer {
    fn daemon_json(&self) -> &Path {
        Path::new("/fake/daemon.json")
    }
    fn persisted_icc(&self) -> Result<Option<bool>, FixError> {
        Ok(self.icc)
    }
    fn persist_icc_off(&mut self) -> Result<bool, FixError> {
        let changed = self.icc != Some(false);
        self.icc = Some(false);
        self.writes += changed as usize;
        Ok(changed)
    }
    fn controller(&mut self) -> Option<&mut dyn Controller> {
        self.controller.as_mut().map(|c| c as &mut dyn Controller)
    }
}

/// The facts an audit would collect on the fake host.
fn host(fixer: &FakeFixer, containers: &[ContainerFacts], stored: &[&str]) -> Facts {
    let rule = fixer.controller.as_ref().is_some_and(|c| c.rule);
    let daemon = DaemonFacts {
        bridge_icc: Some(true),
        docker_user: Ok(vec![]),
        seg_icc_rule: rule,
        ..DaemonFacts::default()
    };
    let mut seg = SegFacts::default();
    let applied = fixer.controller.iter().flat_map(|c| c.applied.iter().map(String::as_str));
    for text in stored.iter().copied().chain(applied) {
        seg.policies.push(crate::policy::parse_policy(text, "p.yaml").expect("fixture policies parse"));
    }
    Facts { daemon, containers: containers.to_vec(), seg }
}

fn compose(project: &str, service: &str) -> ContainerFacts {
    with(json!({
        "Name": format!("/{project}-{service}-1"),
        "Config": {"Labels": {"com.docker.compose.project": project, "com.docker.compose.service": service}},
        "HostConfig": {"NetworkMode": format!("{project}_default")},
    }))
}

/// One `--fix` run: read, plan, apply; returns the plan.
async fn fix_once(
    f: &mut FakeFixer,
    running: &[ContainerFacts],
    stored: &[&str],
    default_deny: bool,
) -> Vec<Step> {
    let facts = host(f, running, stored);
    let state = read_state(&facts, f, default_deny).unwrap();
    let steps = plan(&state, f.daemon_json());
    apply(&steps, f).await.unwrap();
    steps
}

#[tokio::test]
async fn without_the_controller_icc_is_persisted_and_the_live_half_pending() {
    let mut f = FakeFixer::default();
    let steps = fix_once(&mut f, &[], &[], false).await;
    assert_eq!(
        steps,
        [Step::PersistIccOff { file: "/fake/daemon.json".into(), was: None }, Step::LiveIccPending]
    );
    assert_eq!((f.icc, f.writes), (Some(false), 1));
    let again = fix_once(&mut f, &[], &[], false).await;
    assert_eq!(again, [Step::LiveIccPending], "the persisted half is done; only the pending note stays");
    assert!(!again.iter().any(Step::actionable));
    assert_eq!(f.writes, 1, "a second --fix writes nothing");
    assert!(Step::LiveIccPending.to_string().contains("segctl node run"));
}

#[tokio::test]
async fn with_the_controller_the_second_run_is_empty() {
    let mut f =
        FakeFixer { icc: Some(true), controller: Some(FakeController::default()), ..FakeFixer::default() };
    let steps = fix_once(&mut f, &[], &[], false).await;
    assert_eq!(
        steps,
        [Step::PersistIccOff { file: "/fake/daemon.json".into(), was: Some(true) }, Step::LiveIccOff]
    );
    assert!(f.controller.as_ref().unwrap().rule);
    assert!(fix_once(&mut f, &[], &[], false).await.is_empty());
}

#[tokio::test]
async fn default_deny_only_when_asked_once_and_never_over_a_policy() {
    let mut f = FakeFixer {
        icc: Some(false),
        controller: Some(FakeController { rule: true, ..Default::default() }),
        ..Default::default()
    };
    let running =
        [compose("shop", "web"), compose("shop", "db"), compose("blog", "app"), compose("wiki", "app")];
    let wiki = "version: 1\nproject: wiki\nservices:\n  db: {}\n";
    assert!(fix_once(&mut f, &running, &[wiki], false).await.is_empty(), "no policy is applied unless asked");
    let steps = fix_once(&mut f, &running, &[wiki], true).await;
    let names: Vec<String> = steps
        .iter()
        .map(|s| match s {
            Step::ApplyPolicy { name, services, .. } => format!("apply {name} {}", services.join(",")),
            Step::AddToPolicy { name, services } => format!("add {name} {}", services.join(",")),
            other => panic!("unexpected step {other:?}"),
        })
        .collect();
    assert_eq!(names, ["apply blog app", "apply shop db,web", "add wiki app"]);
    let applied = &f.controller.as_ref().unwrap().applied;
    assert_eq!(applied.len(), 2);
    let shop = crate::policy::parse_policy(&applied[1], "shop").unwrap();
    assert_eq!(shop.project(), Some("shop"));
    assert!(
        shop.services.values().all(|s| s.ingress == crate::policy::Ingress::Allow(vec![])),
        "default deny"
    );
    let again = fix_once(&mut f, &running, &[wiki], true).await;
    assert!(matches!(&again[..], [Step::AddToPolicy { .. }]), "idempotent: {again:?}");
    assert_eq!(f.controller.as_ref().unwrap().applied.len(), 2);
}

#[tokio::test]
async fn default_deny_without_the_controller_is_pending() {
    let mut f = FakeFixer { icc: Some(false), ..FakeFixer::default() };
    let steps = fix_once(&mut f, &[compose("shop", "web")], &[], true).await;
    assert_eq!(steps[1], Step::PolicyPending { name: "shop".into(), services: vec!["web".into()] });
    assert!(!steps[1].actionable());
}

#[tokio::test]
async fn host_fixer_on_a_temp_daemon_json() {
    let t = tempfile::tempdir().unwrap();
    let dj = t.path().join("daemon.json");
    std::fs::write(&dj, "{\"log-driver\": \"json-file\"}").unwrap();
    let mut h = HostFixer { daemon_json: dj.clone(), controller: None };
    let facts = Facts {
        daemon: DaemonFacts { bridge_icc: Some(true), ..DaemonFacts::default() },
        ..Facts::default()
    };
    let steps = plan(&read_state(&facts, &mut h, false).unwrap(), &dj);
    let outcomes = apply(&steps, &mut h).await.unwrap();
    assert_eq!(outcomes.iter().map(|o| o.changed).collect::<Vec<_>>(), [true, false]);
    assert_eq!(
        std::fs::read_to_string(&dj).unwrap(),
        "{\n  \"log-driver\": \"json-file\",\n  \"icc\": false\n}\n"
    );
    assert_eq!(plan(&read_state(&facts, &mut h, false).unwrap(), &dj), [Step::LiveIccPending]);
}
