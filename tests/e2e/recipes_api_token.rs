//! The API-token recipe (`examples/api-token`) end to end: an app that
//! caches its token reloads it after a rotation because a post-rotate exec
//! hook signals every running replica — found by compose labels, after the
//! consumers acknowledged — and nothing restarts.

use seg_e2e::serde_norway::Value as Yaml;
use seg_e2e::*;
use std::process::Command;
use std::time::Duration;

const RECIPE: &str = "examples/api-token/docker-compose.yml";
const TOKEN: &str = "api-token";

fn recipe() -> Project {
    let path = workspace_root().join(RECIPE);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: Yaml = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{RECIPE}: {e}"));
    Project::new(doc)
}

/// The first 12 hex digits of sha256(value), as the app logs them.
fn sha_prefix(value: &[u8]) -> String {
    let out = run_with_stdin(&mut Command::new("sha256sum"), Some(value), Duration::from_secs(10));
    assert!(out.success(), "sha256sum: {}", out.text());
    out.stdout_str()[..12].to_owned()
}

fn lifetime(id: &str) -> String {
    docker_ok(&["inspect", "-f", "{{.Id}} {{.State.StartedAt}} restarts={{.RestartCount}}", id])
}

fn wait_loaded(project: &Project, value: &[u8]) {
    let want = format!("app: token loaded, sha256 {}", sha_prefix(value));
    wait_until(Duration::from_secs(30), &format!("the app to log {want:?}"), || {
        project.logs("app").contains(&want).then_some(())
    });
}

#[test]
fn a_cached_token_is_reloaded_by_a_post_rotate_exec_hook_in_each_replica() {
    let _serial = begin();
    // Created before the controller, so it is dropped (the table removed) after it stopped.
    let _table = SegTable;
    let ctl = Controller::start();
    let mut project = recipe();
    let v1 = random_text(40);
    ctl.put(TOKEN, &v1, &["--ttl", "10m"]);
    project.apply_short_form(&ctl);
    let target = project.target("app");
    ctl.segctl_ok(&["secret", "hook", TOKEN, "--post-rotate-exec", &target, "--", "kill", "-HUP", "1"]);
    project.up();
    wait_loaded(&project, &v1);
    let out = project.compose(&["up", "-d", "--no-recreate", "--scale", "app=2"]);
    assert!(out.success(), "scaling the app to 2: {}", out.text());
    let ids: Vec<String> =
        project.compose(&["ps", "-q", "app"]).stdout_str().split_whitespace().map(str::to_owned).collect();
    assert_eq!(ids.len(), 2, "two app replicas");
    let before: Vec<String> = ids.iter().map(|id| lifetime(id)).collect();

    let v2 = random_text(40);
    let started = std::time::Instant::now();
    let out = ctl.segctl_value(&["secret", "rotate", TOKEN], &v2, &["--wait", "--timeout", "20s"]);
    assert!(out.success(), "rotate failed: {}", out.text());
    let want = format!("app: token loaded, sha256 {}", sha_prefix(&v2));
    for id in &ids {
        wait_until(Duration::from_secs(20), &format!("replica {id} to reload the token"), || {
            docker(&["logs", id]).stdout_str().contains(&want).then_some(())
        });
    }
    eprintln!("rotation to reload in both replicas: {:?}", started.elapsed());
    let runs: Vec<_> = ctl
        .access_log()
        .into_iter()
        .filter(|e| {
            e["action"] == "hook" && e["hook"]["kind"] == "post-rotate" && e["hook"]["action"] == "exec"
        })
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    for r in &runs {
        assert_eq!(
            (r["version"].as_u64(), r["outcome"].as_str(), r["hook"]["status"].as_str()),
            (Some(2), Some("allowed"), Some("exit 0"))
        );
    }
    let after: Vec<String> = ids.iter().map(|id| lifetime(id)).collect();
    assert_eq!(after, before, "a replica restarted");
    let log = std::fs::read_to_string(ctl.access_log_path()).unwrap();
    assert!(!log.contains(std::str::from_utf8(&v2).unwrap()), "the token reached the access log");
}
