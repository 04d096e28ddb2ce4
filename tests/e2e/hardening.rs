//! The writer cannot be tricked: a symlink planted at the secret's name is
//! replaced, not followed; names that are paths are refused everywhere.

use seg_e2e::*;
use serde_norway::Value;
use std::time::Duration;

#[test]
fn a_planted_symlink_is_replaced_not_followed() {
    let _serial = begin();
    let ctl = Controller::start();
    let mut doc = example_yaml(&ctl);
    add_tmpfs_volume(&mut doc, "decoy");
    // Plants /run/secrets/db-password -> /run/decoy/target before the sidecar
    // starts, and keeps both tmpfs mounted.
    add_service(
        &mut doc,
        "planter",
        &format!(
            r#"
image: {BUSYBOX_IMAGE}
user: "1000:1000"
network_mode: none
volumes: ["secrets:/run/secrets", "decoy:/run/decoy"]
command:
  - sh
  - -c
  - |
    trap 'exit 0' TERM
    echo original > /run/decoy/target
    ln -s /run/decoy/target /run/secrets/db-password
    while sleep 1; do :; done
healthcheck: {{test: ["CMD", "test", "-L", "/run/secrets/db-password"], interval: 1s, retries: 30}}
"#
        ),
    );
    // The sidecar starts after the plant and can reach (and write) the target.
    let sidecar = service_mut(&mut doc, "app-secrets");
    let vols = sidecar.get_mut("volumes").and_then(Value::as_sequence_mut).unwrap();
    vols.push("decoy:/run/decoy".into());
    sidecar.insert(
        "depends_on".into(),
        serde_norway::from_str("{planter: {condition: service_healthy}}").unwrap(),
    );
    let project = Project::new(doc);
    project.deliver(&ctl, &random_text(32), &[]);

    let link = project.exec("planter", &["test", "-L", SECRET_FILE]);
    assert!(!link.success(), "the symlink is still there");
    let kind = project.exec_ok("planter", &["stat", "-c", "%F %a %u", SECRET_FILE]);
    assert_eq!(String::from_utf8_lossy(&kind).trim(), "regular file 400 1000");
    let target = project.exec_ok("planter", &["cat", "/run/decoy/target"]);
    assert_eq!(target, b"original\n", "the symlink target was written through");
    let decoy = project.exec_ok("planter", &["ls", "-A", "/run/decoy"]);
    assert_eq!(String::from_utf8_lossy(&decoy).trim(), "target");
}

#[test]
fn names_that_are_paths_are_refused_by_segctl_and_the_sidecar() {
    let _serial = begin();
    let ctl = Controller::start();
    for bad in ["../x", "a/b", "..", "/etc/passwd", ".hidden"] {
        let out = ctl.segctl(&["secret", "put", bad, "--generate", "16"]);
        assert!(!out.success(), "segctl secret put {bad:?} succeeded");
        assert_ne!(out.code(), 101, "segctl panicked on {bad:?}: {}", out.stderr);
        assert!(out.stderr.to_lowercase().contains("name"), "unclear message for {bad:?}: {}", out.stderr);
    }
    assert!(ctl.list().is_empty(), "a bad name was stored: {:?}", ctl.list());

    for bad in ["../x", "a/b", "db-password,../../etc/shadow"] {
        let c = Container::sidecar(&ctl, bad, &["--label", "seg.service=app"]);
        let code = c.wait_exit(Duration::from_secs(20));
        let logs = c.logs();
        assert_ne!(code, 0, "the sidecar accepted SEG_SECRETS={bad:?}: {logs}");
        assert!(logs.to_lowercase().contains("name"), "unclear message for {bad:?}: {logs}");
    }
}
