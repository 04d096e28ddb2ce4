//! The PostgreSQL recipe (`examples/postgres`) end to end with the real
//! server and client (Debian's PostgreSQL 15 in `seg-postgres:dev`, built by
//! `scripts/build-postgres-image`): the server starts with its password from
//! its sidecar's file, a client connects with the password from its own
//! sidecar, and a rotation under load changes the role's password through
//! the pre-rotate exec hook — with the value in no argv, no environment and
//! not in the server's log even with `log_statement=all` — after which the
//! client connects with the new password, and no container restarted.

use seg_e2e::serde_norway::Value as Yaml;
use seg_e2e::*;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const RECIPE: &str = "examples/postgres/docker-compose.yml";
const IMAGE: &str = "seg-postgres:dev";
/// The hook the recipe documents (README.md, docs/segctl.md), byte for byte
/// what the shell passes after `sh -c` there.
const SET_PASSWORD: &str = r#"IFS= read -r pw || [ -n "$pw" ]; printf "%s\n%s\n" "$pw" "$pw" | exec psql -X -q -v ON_ERROR_STOP=1 -c "\\password postgres""#;

/// Builds the image if its inputs changed (a no-op otherwise).
fn build_image() {
    let script = workspace_root().join("scripts/build-postgres-image");
    let out = run(Command::new(&script).arg(IMAGE), Duration::from_secs(300));
    assert!(out.success(), "{} failed: {}", script.display(), out.text());
}

/// The recipe pointed at `ctl`, the server logging every statement.
fn recipe() -> Project {
    let path = workspace_root().join(RECIPE);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut doc: Yaml = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{RECIPE}: {e}"));
    let command = Yaml::Sequence(vec!["-c".into(), "log_statement=all".into()]);
    service_mut(&mut doc, "db").insert("command".into(), command);
    Project::new(doc)
}

/// Id, start time and restart count: what a restart or redeploy changes.
fn lifetime(id: &str) -> String {
    docker_ok(&["inspect", "-f", "{{.Id}} {{.State.StartedAt}} restarts={{.RestartCount}}", id])
}

fn client_lines(project: &Project, since: Option<u64>) -> Vec<String> {
    let id = project.container("client");
    let since = since.map(|s| s.to_string());
    let mut args = vec!["logs"];
    if let Some(s) = &since {
        args.extend(["--since", s]);
    }
    args.push(&id);
    docker(&args).stdout_str().lines().filter(|l| l.starts_with("client: ")).map(str::to_owned).collect()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Connects from the client container with `password` on stdin; true if accepted.
fn connects_with(project: &Project, password: &[u8]) -> bool {
    let script = r#"IFS= read -r pw || [ -n "$pw" ]; printf 'db:5432:*:postgres:%s\n' "$pw" > /tmp/probe; chmod 600 /tmp/probe; PGPASSFILE=/tmp/probe psql -X -h db -U postgres -d postgres -Atc 'select 1'"#;
    let id = project.container("client");
    let mut cmd = Command::new("docker");
    cmd.args(["exec", "-i", &id, "sh", "-c", script]);
    run_with_stdin(&mut cmd, Some(password), Duration::from_secs(20)).success()
}

#[test]
fn postgres_rotates_its_password_under_load_without_restarts_or_leaks() {
    let _serial = begin();
    build_image();
    // Created before the controller, so it is dropped (the table removed) after it stopped.
    let _table = SegTable;
    let ctl = Controller::start();
    let mut project = recipe();
    let v1 = random_text(32);
    ctl.put(SECRET_NAME, &v1, &["--ttl", "10m"]);
    project.apply_short_form(&ctl);
    let target = project.target("db");
    let hook = ["secret", "hook", SECRET_NAME, "--pre-rotate-exec", &target, "--exec-user", "postgres"];
    ctl.segctl_ok(&[&hook[..], &["--timeout", "20s", "--", "sh", "-c", SET_PASSWORD]].concat());
    project.up();
    wait_until(Duration::from_secs(60), "the client to connect with the first password", || {
        client_lines(&project, None).iter().any(|l| l == "client: ok").then_some(())
    });
    let services = ["db", "db-secrets", "client", "client-secrets"];
    let before: Vec<String> = services.iter().map(|s| lifetime(&project.container(s))).collect();

    let v2 = random_text(32);
    let started = Instant::now();
    let out = ctl.segctl_value(&["secret", "rotate", SECRET_NAME], &v2, &["--wait", "--timeout", "30s"]);
    let took = started.elapsed();
    assert!(out.success(), "rotate failed ({}): {}\n{}", out.code(), out.text(), project.all_logs());
    assert!(out.text().contains("exit 0 in 1 container(s)"), "{}", out.text());
    let after_rotation = unix_now();

    // The client keeps working with the new password, read from its sidecar.
    std::thread::sleep(Duration::from_secs(3));
    let later = client_lines(&project, Some(after_rotation + 1));
    assert!(later.iter().any(|l| l == "client: ok"), "no connection after the rotation: {later:?}");
    assert!(!later.iter().any(|l| l.contains("FAILED")), "connections fail after the rotation: {later:?}");
    let all = client_lines(&project, None);
    let failed = all.iter().filter(|l| l.contains("FAILED")).count();
    eprintln!(
        "rotation (hook + distribution + acks) took {took:?}; the client made {} connection attempts, {failed} refused \
         (between the server's change and the client's sidecar having v2)",
        all.len()
    );
    assert!(connects_with(&project, &v2), "the new password is refused");
    assert!(!connects_with(&project, &v1), "the old password still works");
    let now: Vec<String> = services.iter().map(|s| lifetime(&project.container(s))).collect();
    assert_eq!(now, before, "a container restarted or was replaced");

    // Neither password is in the server's log, although every statement is logged.
    let server_log = project.logs("db");
    assert!(
        server_log.contains("ALTER USER postgres PASSWORD 'SCRAM-SHA-256$"),
        "the change was not logged:\n{server_log}"
    );
    for (v, which) in [(&v1, "first"), (&v2, "new")] {
        assert!(
            !server_log.contains(std::str::from_utf8(v).unwrap()),
            "the {which} password is in the server log"
        );
    }
    let access = std::fs::read_to_string(ctl.access_log_path()).unwrap();
    assert!(!access.contains(std::str::from_utf8(&v2).unwrap()), "the value reached the access log");
}
