//! Who is refused: another service of the same project running the very
//! same sidecar, a container without identity labels, and any process on the
//! host. Every refusal is in the access log.

use seg_e2e::*;
use std::time::Duration;

/// A controller holding the example's secret, granted to every `app` service.
fn granted_to_any_app() -> Controller {
    let ctl = Controller::start();
    ctl.put(SECRET_NAME, &random_text(16), &[]);
    ctl.grant(SECRET_NAME, "*/app");
    ctl
}

#[test]
fn another_service_of_the_project_is_refused() {
    let _serial = begin();
    let ctl = Controller::start();
    let mut doc = example_yaml(&ctl);
    add_tmpfs_volume(&mut doc, "intruder-secrets");
    // The attacker: the real sidecar image, asking for the app's secret, but
    // as service `intruder` (no seg.for label).
    add_service(
        &mut doc,
        "intruder",
        &format!(
            r#"
image: {SIDECAR_IMAGE}
user: "1000:1000"
read_only: true
network_mode: none
environment: {{SEG_SECRETS: db-password, SEG_DIR: /run/secrets}}
volumes: ["intruder-secrets:/run/secrets", "{}"]
ulimits: {{memlock: {{soft: 1048576, hard: 1048576}}}}
"#,
            ctl.agent_volume()
        ),
    );
    // Sees what the intruder could write.
    add_service(
        &mut doc,
        "observer",
        &format!(
            r#"
image: {BUSYBOX_IMAGE}
user: "1000:1000"
network_mode: none
volumes: ["intruder-secrets:/run/secrets:ro"]
command: ["sh", "-c", "trap 'exit 0' TERM; while sleep 1; do :; done"]
"#
        ),
    );
    let project = Project::new(doc);
    let value = random_text(32);
    // The granted service gets it...
    project.deliver(&ctl, &value, &[]);
    // ...the intruder is refused, and says so.
    let intruder = project.target("intruder");
    let denied = ctl.wait_access("the intruder's refusal", Duration::from_secs(20), |e| {
        e["socket"] == "agent" && e["identity"] == intruder.as_str() && e["outcome"] == "denied"
    });
    eprintln!("refusal logged: {denied}");
    let logs = wait_until(Duration::from_secs(10), "the intruder to log the refusal", || {
        let l = project.logs("intruder");
        (l.contains("not_granted") || l.contains("not granted")).then_some(l)
    });
    assert!(!logs.as_bytes().windows(value.len()).any(|w| w == value), "the intruder's log holds the value");
    std::thread::sleep(Duration::from_secs(1));
    let listing = project.exec_ok("observer", &["ls", "-A", "/run/secrets"]);
    assert!(listing.is_empty(), "the intruder wrote: {}", String::from_utf8_lossy(&listing));
    let log = std::fs::read(ctl.access_log_path()).unwrap();
    assert!(!log.windows(value.len()).any(|w| w == value), "the access log holds the value");
}

#[test]
fn a_container_without_identity_labels_is_refused() {
    let _serial = begin();
    let ctl = granted_to_any_app();
    let c = Container::sidecar(&ctl, SECRET_NAME, &[]);
    let denied = ctl.wait_access("the unlabelled container's refusal", Duration::from_secs(20), |e| {
        e["socket"] == "agent"
            && e["outcome"] == "denied"
            && e["container_id"].as_str().is_some_and(|id| id.len() >= 12 && c.id.starts_with(id))
    });
    eprintln!("refusal logged: {denied}");
}

#[test]
fn a_host_process_is_refused_with_not_a_container() {
    let _serial = begin();
    let ctl = granted_to_any_app();
    let sock = ctl.agent_socket();
    for path in ["/v1/secrets/db-password", "/v1/whoami", "/v1/secrets"] {
        let (status, body) = agent_get(&sock, path);
        assert_eq!(status, 403, "GET {path}: {}", String::from_utf8_lossy(&body));
        assert_eq!(error_code(&body), "not_a_container", "GET {path}: {}", String::from_utf8_lossy(&body));
    }
    let me = std::process::id();
    let denied = ctl.wait_access("the host process's refusal", Duration::from_secs(5), |e| {
        e["socket"] == "agent" && e["outcome"] == "denied" && e["pid"] == me
    });
    eprintln!("refusal logged: {denied}");
    // The agent socket is open to all (attestation decides); the admin socket is root-only.
    assert_eq!(mode_of(&sock), 0o666);
    assert_eq!(mode_of(&ctl.admin_socket()), 0o600);
}
