//! The TLS recipe (`examples/tls-reload`) end to end with the real nginx:
//! the server starts with the certificate and key from its sidecar's file,
//! and after a rotation a post-rotate exec hook (`nginx -s reload`, in every
//! replica, found by compose labels) makes it serve the new certificate —
//! with connections kept working during the reload and no restart.

use seg_e2e::serde_norway::Value as Yaml;
use seg_e2e::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const RECIPE: &str = "examples/tls-reload/docker-compose.yml";
const IMAGE: &str = "seg-nginx:dev";
const PEM: &str = "tls.pem";

fn build_image() {
    let script = workspace_root().join("scripts/build-nginx-image");
    let out = run(Command::new(&script).arg(IMAGE), Duration::from_secs(300));
    assert!(out.success(), "{} failed: {}", script.display(), out.text());
}

fn recipe() -> Project {
    let path = workspace_root().join(RECIPE);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: Yaml = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{RECIPE}: {e}"));
    Project::new(doc)
}

fn sh(script: &str) -> Out {
    run(Command::new("sh").args(["-c", script]), Duration::from_secs(30))
}

/// A fresh self-signed certificate and its key as one PEM, and the
/// certificate's SHA-256 fingerprint.
fn certificate(dir: &Path, n: u32) -> (Vec<u8>, String) {
    let (crt, key) = (dir.join(format!("{n}.crt")), dir.join(format!("{n}.key")));
    let out = sh(&format!(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=web -days 1 \
         -keyout {} -out {} 2>&1",
        key.display(),
        crt.display()
    ));
    assert!(out.success(), "openssl req: {}", out.text());
    let pem = [std::fs::read(&crt).unwrap(), std::fs::read(&key).unwrap()].concat();
    (pem, fingerprint_of(&format!("openssl x509 -in {} -noout -fingerprint -sha256", crt.display())))
}

fn fingerprint_of(script: &str) -> String {
    let out = sh(script);
    out.stdout_str().trim().rsplit('=').next().unwrap_or_default().to_owned()
}

/// The fingerprint of the certificate the server presents now.
fn served(ip: &str) -> String {
    fingerprint_of(&format!(
        "openssl s_client -connect {ip}:8443 -servername web </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
    ))
}

fn lifetime(id: &str) -> String {
    docker_ok(&["inspect", "-f", "{{.Id}} {{.State.StartedAt}} restarts={{.RestartCount}}", id])
}

#[test]
fn nginx_serves_the_rotated_certificate_after_a_post_rotate_exec_reload() {
    let _serial = begin();
    build_image();
    // Created before the controller, so it is dropped (the table removed) after it stopped.
    let _table = SegTable;
    let ctl = Controller::start();
    let dir = tempfile::tempdir().unwrap();
    let (pem1, fp1) = certificate(dir.path(), 1);
    let (pem2, fp2) = certificate(dir.path(), 2);
    let mut project = recipe();
    ctl.put(PEM, &pem1, &["--ttl", "10m"]);
    project.apply_short_form(&ctl);
    let target = project.target("web");
    ctl.segctl_ok(&["secret", "hook", PEM, "--post-rotate-exec", &target, "--", "nginx", "-s", "reload"]);
    project.up();
    let web = project.container("web");
    let ip = docker_ok(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &web]);
    wait_until(Duration::from_secs(30), "nginx to serve the first certificate", || {
        (served(&ip) == fp1).then_some(())
    });
    let before = (lifetime(&web), lifetime(&project.container("web-secrets")));

    let started = Instant::now();
    let out = ctl.segctl_value(&["secret", "rotate", PEM], &pem2, &["--wait", "--timeout", "20s"]);
    assert!(out.success(), "rotate failed: {}", out.text());
    wait_until(Duration::from_secs(20), "nginx to serve the new certificate", || {
        // Every handshake during the reload succeeds, with one certificate or the other.
        let now = served(&ip);
        assert!(
            now == fp1 || now == fp2,
            "a handshake failed during the reload ({now:?})\n{}",
            project.all_logs()
        );
        (now == fp2).then_some(())
    });
    eprintln!("rotation to the new certificate being served: {:?}", started.elapsed());
    let run = ctl.wait_access("the post-rotate exec reload", Duration::from_secs(10), |e| {
        e["action"] == "hook" && e["hook"]["kind"] == "post-rotate" && e["hook"]["action"] == "exec"
    });
    assert_eq!((run["hook"]["status"].as_str(), run["version"].as_u64()), (Some("exit 0"), Some(2)), "{run}");
    assert_eq!(
        (lifetime(&web), lifetime(&project.container("web-secrets"))),
        before,
        "a container restarted"
    );
    let pem_text = String::from_utf8_lossy(&pem2).into_owned();
    let key_line =
        pem_text.lines().skip_while(|l| !l.contains("PRIVATE KEY")).nth(1).expect("a key in the PEM");
    let log = std::fs::read_to_string(ctl.access_log_path()).unwrap();
    assert!(!log.contains(key_line), "the private key reached the access log");
}
