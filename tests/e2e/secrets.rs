//! The example as users run it: the app reads exactly the bytes that were
//! put, from a tmpfs, mode 0400, owned by 1000:1000; a rotation reaches the
//! running app without redeploying it.

use seg_e2e::*;
use std::time::Duration;

#[test]
fn example_delivers_the_secret_to_the_app() {
    let _serial = begin();
    let ctl = Controller::start();
    let project = Project::example(&ctl);
    // Binary on purpose: NUL, newlines, high bytes must all arrive intact.
    let mut value = random_bytes(48);
    value[..4].copy_from_slice(b"\0\n\r\xff");
    project.deliver(&ctl, &value, &[]);

    let stat = project.exec_ok("app", &["stat", "-c", "%a %u %g %F", SECRET_FILE]);
    assert_eq!(String::from_utf8_lossy(&stat).trim(), "400 1000 1000 regular file");
    let fs_type = project.exec_ok("app", &["stat", "-f", "-c", "%T", "/run/secrets"]);
    assert_eq!(String::from_utf8_lossy(&fs_type).trim(), "tmpfs");
    let mounts = String::from_utf8(project.exec_ok("app", &["cat", "/proc/mounts"])).unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("/run/secrets"))
        .unwrap_or_else(|| panic!("/run/secrets is not a mount point in app:\n{mounts}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[2], "tmpfs", "{line}");
    assert!(fields[3].split(',').any(|o| o == "ro"), "the app's mount should be read-only: {line}");

    // Only the secret: no temp files, no backups left by the writer.
    let listing = project.exec_ok("app", &["ls", "-A", "/run/secrets"]);
    assert_eq!(String::from_utf8_lossy(&listing).trim(), "db-password");
    let write = project.exec("app", &["sh", "-c", "echo x > /run/secrets/db-password"]);
    assert!(!write.success(), "the app could overwrite its secret");

    // What a user sees in the app's log.
    let logs = wait_until(Duration::from_secs(15), "the app to log the secret", || {
        let l = project.logs("app");
        l.contains("app: read /run/secrets/db-password: 48 bytes").then_some(l)
    });
    assert!(logs.contains("mode/owner 400 1000:1000") && logs.contains("fs tmpfs"), "{logs}");

    let listed = ctl.list();
    let entry = listed
        .iter()
        .find(|s| s["name"] == "db-password")
        .unwrap_or_else(|| panic!("db-password missing from secret ls: {listed:?}"));
    let grants = entry["grants"].to_string();
    assert!(grants.contains(&project.target("app")), "grants: {grants}");

    let read = ctl.wait_access("the sidecar's allowed read", Duration::from_secs(5), |e| {
        e["socket"] == "agent"
            && e["outcome"] == "allowed"
            && e["secret"] == "db-password"
            && e["identity"] == project.target("app").as_str()
    });
    assert!(read["container_id"].as_str().is_some_and(|c| c.len() >= 12), "{read}");
}

#[test]
fn rotation_reaches_the_running_app_without_a_redeploy() {
    let _serial = begin();
    let ctl = Controller::start();
    let project = Project::example(&ctl);
    let v1 = random_text(32);
    project.deliver(&ctl, &v1, &["--ttl", "3s"]);
    let app_before = project.container("app");
    let sidecar_before = project.container("app-secrets");

    let v2 = random_text(40);
    ctl.put(SECRET_NAME, &v2, &[]);
    // The sidecar renews well within the 3 s lease and picks up the new version.
    project.wait_for_file("app", SECRET_FILE, &v2, Duration::from_secs(15));
    assert_eq!(project.container("app"), app_before);
    assert_eq!(project.container("app-secrets"), sidecar_before);
    assert!(project.state("app-secrets").starts_with("running healthy"), "{}", project.state("app-secrets"));
}
