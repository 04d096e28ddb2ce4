//! Secrets do not outlive their lease or their sidecar; the store keeps
//! them sealed across controller restarts.

use seg_e2e::*;
use std::path::Path;
use std::time::Duration;

#[test]
fn lease_runs_out_while_the_controller_is_down_and_comes_back_with_it() {
    let _serial = begin();
    let mut ctl = Controller::start();
    let project = Project::example(&ctl);
    let value = random_text(32);
    project.deliver(&ctl, &value, &["--ttl", "2s"]);
    // Let a renewal or two go by: the lease must be kept alive while the controller is up.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        project.read_file("app", SECRET_FILE).as_deref(),
        Some(&value[..]),
        "file lost while renewing"
    );

    let status = ctl.stop();
    eprintln!("controller stopped: {status}");
    let gone_after = project.wait_for_absence("app", SECRET_FILE, Duration::from_secs(6));
    eprintln!("file wiped {gone_after:?} after the controller stopped (2 s lease)");
    assert!(gone_after <= Duration::from_millis(4500), "wiped only after {gone_after:?}");
    assert!(
        project.state("app-secrets").starts_with("running"),
        "the sidecar died: {}",
        project.state("app-secrets")
    );

    ctl.start_again();
    let start = std::time::Instant::now();
    project.wait_for_file("app", SECRET_FILE, &value, Duration::from_secs(30));
    eprintln!("file back {:?} after the controller restarted", start.elapsed());
}

#[test]
fn revoking_the_grant_wipes_the_file_within_the_lease() {
    let _serial = begin();
    let ctl = Controller::start();
    let project = Project::example(&ctl);
    let value = random_text(32);
    project.deliver(&ctl, &value, &["--ttl", "2s"]);

    ctl.segctl_ok(&["secret", "revoke", SECRET_NAME, "--from", &project.target("app")]);
    let gone_after = project.wait_for_absence("app", SECRET_FILE, Duration::from_secs(6));
    eprintln!("file wiped {gone_after:?} after the revoke (2 s lease)");
    assert!(gone_after <= Duration::from_millis(4500), "wiped only after {gone_after:?}");
    let refused = ctl.wait_access("the refused renewal", Duration::from_secs(5), |e| {
        e["socket"] == "agent" && e["outcome"] == "denied" && e["identity"] == project.target("app").as_str()
    });
    eprintln!("refusal logged: {refused}");
}

#[test]
fn sigterm_to_the_sidecar_wipes_its_files() {
    let _serial = begin();
    let ctl = Controller::start();
    let project = Project::example(&ctl);
    let value = random_text(32);
    project.deliver(&ctl, &value, &[]);

    let sidecar = project.container("app-secrets");
    docker_ok(&["kill", "-s", "TERM", &sidecar]);
    let gone_after = project.wait_for_absence("app", SECRET_FILE, Duration::from_secs(5));
    eprintln!("file wiped {gone_after:?} after SIGTERM");
    let state = wait_until(Duration::from_secs(10), "the sidecar to exit", || {
        let s = project.state("app-secrets");
        s.starts_with("exited").then_some(s)
    });
    assert!(state.ends_with("exit=0"), "the sidecar should exit cleanly on SIGTERM: {state}");
    let listing = project.exec_ok("app", &["ls", "-A", "/run/secrets"]);
    assert!(listing.is_empty(), "left behind: {}", String::from_utf8_lossy(&listing));
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let entry = entry.unwrap();
        let ty = entry.file_type().unwrap();
        if ty.is_dir() {
            files_under(&entry.path(), out);
        } else if ty.is_file() {
            out.push(entry.path());
        }
    }
}

fn assert_no_plaintext(state_dir: &Path, values: &[&[u8]]) -> usize {
    let mut files = Vec::new();
    files_under(state_dir, &mut files);
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        for value in values {
            let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
            let forms: [&[u8]; 2] = [value, hex.as_bytes()];
            for form in forms {
                assert!(
                    !bytes.windows(form.len()).any(|w| w == form),
                    "{} holds a secret value",
                    file.display()
                );
            }
        }
    }
    files.len()
}

#[test]
fn the_store_holds_no_plaintext_and_survives_a_restart() {
    let _serial = begin();
    let mut ctl = Controller::start();
    let text = random_text(40);
    let binary = random_bytes(64);
    ctl.put("db-password", &text, &[]);
    ctl.put("tls.key", &binary, &["--ttl", "10m"]);
    ctl.grant("db-password", "*/app");
    let n = assert_no_plaintext(&ctl.state_dir, &[&text, &binary]);
    assert!(n >= 3, "expected a master key and two sealed secrets, found {n} files");
    assert_eq!(mode_of(&ctl.state_dir), 0o700);
    assert_eq!(mode_of(&ctl.state_dir.join("master.key")), 0o600);

    ctl.restart();
    let names: Vec<String> =
        ctl.list().iter().map(|s| s["name"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(names, ["db-password", "tls.key"]);
    assert_eq!(ctl.admin_get("db-password"), (200, text.clone()));
    assert_eq!(ctl.admin_get("tls.key"), (200, binary.clone()));
    let got = ctl.segctl(&["secret", "get", "tls.key"]);
    assert!(got.success() && got.stdout == binary, "segctl secret get: {}", got.stderr);
    let grants = ctl.list()[0]["grants"].to_string();
    assert!(grants.contains("*/app"), "grant lost across the restart: {grants}");

    // A new version is sealed too, and the old one does not linger in the clear.
    let text2 = random_text(40);
    ctl.put("db-password", &text2, &[]);
    assert_no_plaintext(&ctl.state_dir, &[&text, &text2, &binary]);
    // The state (through the controller log too) never shows a value.
    assert_no_plaintext(ctl.base_dir(), &[&text, &text2, &binary]);
}
