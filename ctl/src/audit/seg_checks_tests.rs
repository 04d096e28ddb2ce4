//! seg's own checks over fixtures.

use super::*;
use crate::audit::container_checks::tests::{facts, hardened_json, with};
use crate::audit::facts::SetidFile;
use seg_common::api::GrantTarget;
use serde_json::json;

fn seg_with(policy_yaml: &str) -> SegFacts {
    let policy = crate::policy::parse_policy(policy_yaml, "shop.yaml").expect("fixture policy");
    SegFacts { policies: vec![policy], policy_dir: "/var/lib/seg/policies".into(), ..SegFacts::default() }
}

fn compose(project: &str, service: &str, network: &str) -> ContainerFacts {
    with(json!({
        "Name": format!("/{project}-{service}-1"),
        "Config": {"Labels": {"com.docker.compose.project": project, "com.docker.compose.service": service}},
        "HostConfig": {"NetworkMode": network},
    }))
}

#[test]
fn env_secrets_are_named_never_shown() {
    let c = with(
        json!({"Config": {"Env": ["PASSWORD=hunter2-is-the-value", "APP_KEYS=q8Zr2LwX9vKp4TmN7sBy1HcD", "LANG=C"]}}),
    );
    let f = secrets_in_env(&c);
    assert_eq!(f.level, Level::Warn);
    assert!(f.detail.contains("PASSWORD (name looks like a secret)"), "{}", f.detail);
    assert!(f.detail.contains("APP_KEYS (value is long and random-looking)"), "{}", f.detail);
    let all = serde_json::to_string(&f).unwrap();
    assert!(!all.contains("hunter2") && !all.contains("q8Zr2LwX"), "a value leaked: {all}");
    assert_eq!(secrets_in_env(&facts(hardened_json())).level, Level::Pass, "SEG_SECRETS holds names");
}

#[test]
fn setid_files_listed_or_noted() {
    let mut c = facts(hardened_json());
    let mut degraded = Vec::new();
    assert_eq!(setid(&c, &mut degraded).level, Level::Pass);
    c.setid = Ok(vec![SetidFile { path: "/bin/su".into(), mode: 0o4755, uid: 0, gid: 0 }]);
    let f = setid(&c, &mut degraded);
    assert_eq!((f.level, f.detail.as_str()), (Level::Warn, "1 file(s): /bin/su (4755 0:0)"));
    c.setid = Err("cannot read /var/lib/docker/overlay2/x/diff: Permission denied".into());
    assert_eq!(setid(&c, &mut degraded).level, Level::Note);
    assert_eq!(degraded.len(), 1);
    assert_eq!(degraded[0].needs, Need::Root);
}

#[test]
fn no_policies_is_one_info() {
    let seg = SegFacts { policy_dir: "/var/lib/seg/policies".into(), ..SegFacts::default() };
    let f = coverage(&[compose("shop", "web", "shop_default")], &seg);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].level, Level::Info);
    assert!(f[0].detail.contains("no policies applied"), "{}", f[0].detail);
}

#[test]
fn coverage_per_container() {
    let seg = seg_with("version: 1\nproject: shop\nservices:\n  web:\n    ingress: any\n");
    let containers = [
        compose("shop", "web", "shop_default"),
        compose("shop", "db", "shop_default"),
        compose("shop", "cron", "none"),
        compose("shop", "tool", "host"),
        with(json!({"Name": "/loose", "HostConfig": {"NetworkMode": "bridge"}})),
    ];
    let got: Vec<(String, Level)> =
        coverage(&containers, &seg).into_iter().map(|f| (f.objects[0].name.clone(), f.level)).collect();
    let want = [
        ("shop-web-1", Level::Pass),
        ("shop-db-1", Level::Warn),
        ("shop-cron-1", Level::Pass),
        ("shop-tool-1", Level::Warn),
        ("loose", Level::Warn),
    ];
    assert_eq!(got, want.map(|(n, l)| (n.to_owned(), l)));
}

#[test]
fn secret_holders_must_not_be_open_to_everything() {
    let app = compose("shop", "app", "shop_default");
    let mut sidecar = compose("shop", "app-secrets", "none");
    sidecar.inspect.config.as_mut().unwrap().labels.as_mut().unwrap().insert("seg.for".into(), "app".into());
    let db = compose("shop", "db", "shop_default");
    let other = compose("blog", "app", "blog_default");
    let mut facts = Facts {
        containers: vec![app, sidecar, db, other],
        seg: seg_with(
            "version: 1\nproject: shop\nservices:\n  app:\n    ingress: any\n  db:\n    ingress:\n      - from: [app]\n",
        ),
        ..Facts::default()
    };
    facts.seg.grants = Ok(vec![
        ("db-password".into(), GrantTarget::parse("shop/app").unwrap()),
        ("db-password".into(), GrantTarget::parse("shop/db").unwrap()),
    ]);
    let mut degraded = Vec::new();
    let got: Vec<(String, Level)> = exposed_secrets(&facts, "/run/seg", &mut degraded)
        .into_iter()
        .map(|f| (f.objects[0].name.clone(), f.level))
        .collect();
    // app: `ingress: any` → open; its sidecar: no network; db: restricted; blog/app: no grant.
    let want = [("shop-app-1", Level::Warn), ("shop-app-secrets-1", Level::Pass), ("shop-db-1", Level::Pass)];
    assert_eq!(got, want.map(|(n, l)| (n.to_owned(), l)));
    assert!(degraded.is_empty());
    facts.seg.grants = Err("cannot reach the seg controller at /run/seg/admin.sock".into());
    let f = exposed_secrets(&facts, "/run/seg", &mut degraded);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].level, Level::Note);
    assert_eq!(degraded[0].needs, Need::Controller);
}

#[test]
fn sidecars_are_held_to_the_example() {
    let label = json!({"Config": {"Labels": {"seg.for": "app"}}});
    let good = with(label.clone());
    assert_eq!(sidecar(&good, "/run/seg").map(|f| f.level), Some(Level::Pass));
    assert!(sidecar(&facts(hardened_json()), "/run/seg").is_none(), "only seg.for containers are sidecars");
    let bad = with(json!({
        "Config": {"Labels": {"seg.for": "app"}, "User": "", "Healthcheck": null},
        "HostConfig": {"ReadonlyRootfs": false, "CapDrop": null, "NetworkMode": "bridge", "SecurityOpt": null},
        "Mounts": [{"Type": "bind", "Source": "/run/seg", "Destination": "/run/seg", "RW": true}],
    }));
    let f = sidecar(&bad, "/run/seg").unwrap();
    assert_eq!(f.level, Level::Warn);
    assert_eq!(
        f.detail,
        "lacks a non-root user, read_only, cap_drop ALL, no-new-privileges, network_mode none, a healthcheck, \
         no mount of the admin socket"
    );
}
