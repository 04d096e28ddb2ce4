//! `segctl net` against the real engine, through a real controller: the
//! CLI holds no Docker connection of its own, the controller's one link
//! does the work. Created with the flags asked (checked with `docker network
//! inspect`), listed as table and JSON, refused while a container is on
//! it, removed; bad names and subnets are usage errors before anything is
//! sent; a missing controller is a clear failure.
//!
//! Takes `/run/seg-host-firewall.lock` (the controller starts its firewall
//! sync). Needs root, dockerd on /var/run/docker.sock and busybox-static;
//! fails, never skips, without them. Run: `cargo test -p segctl --test net_cli`.

mod segregation_support;

use segregation_support::*;
use std::process::Command;

fn inspect(name: &str, format: &str) -> String {
    ok(docker(None).args(["network", "inspect", "-f", format, name]))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A free /24 in 10.78.0.0/16: another run's network may hold one.
fn create_on_a_free_subnet(ctl: &Controller, name: &str) -> String {
    for _ in 0..8 {
        let subnet = format!("10.78.{}.0/24", fastrand::u8(1..255));
        let out = ctl.segctl(&["net", "create", name, "--internal", "--no-icc", "--subnet", &subnet]);
        if out.status.success() {
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(said.starts_with(&format!("created network {name} (")), "{said}");
            return subnet;
        }
        assert!(stderr(&out).contains("overlap"), "segctl net create failed: {}", stderr(&out));
    }
    panic!("no free 10.78.x.0/24 after 8 tries");
}

#[test]
fn networks_are_created_listed_and_removed_through_the_controller() {
    let _lock = HostLock::take();
    let _reset = FirewallReset;
    build_image();
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), None, None);
    let (net, box_name) = (format!("segt-net-{}", tag()), format!("segt-net-{}-c", tag()));
    let mut rm_net = docker(None);
    rm_net.args(["network", "rm", &net]);
    let mut rm_box = docker(None);
    rm_box.args(["rm", "-f", &box_name]);
    let _cleanup = Cleanup(vec![rm_box, rm_net]);

    let subnet = create_on_a_free_subnet(&ctl, &net);
    let seen = inspect(
        &net,
        r#"{{.Internal}} {{index .Options "com.docker.network.bridge.enable_icc"}} {{index .Labels "seg.managed"}} {{range .IPAM.Config}}{{.Subnet}}{{end}}"#,
    );
    assert_eq!(seen, format!("true false true {subnet}"));
    let again = ctl.segctl(&["net", "create", &net]);
    assert!(!again.status.success() && stderr(&again).contains("already exists"), "{}", stderr(&again));

    let listed: serde_json::Value = serde_json::from_str(&ctl.ok(&["net", "ls", "-o", "json"])).unwrap();
    let mine = listed.as_array().unwrap().iter().find(|n| n["name"] == net.as_str()).expect("listed");
    assert_eq!(
        (&mine["internal"], &mine["icc"], &mine["managed"]),
        (&true.into(), &false.into(), &true.into())
    );
    assert_eq!(mine["subnets"], serde_json::json!([subnet]));
    assert!(mine["bridge"].as_str().unwrap().starts_with("br-"), "{mine}");
    let table = ctl.ok(&["net", "ls"]);
    assert!(table.lines().any(|l| l.starts_with(&format!("{net} (seg)"))), "{table}");

    ok(docker(None).args(["run", "-d", "--name", &box_name, "--network", &net, IMAGE, "sleep", "600"]));
    let busy = ctl.segctl(&["net", "rm", &net]);
    assert!(!busy.status.success(), "removed a network in use");
    assert!(
        stderr(&busy).contains(&format!("still has 1 container(s) attached: {box_name}")),
        "{}",
        stderr(&busy)
    );
    ok(docker(None).args(["rm", "-f", &box_name]));
    assert_eq!(ctl.ok(&["net", "rm", &net]).trim(), format!("removed network {net}"));
    assert!(!run(docker(None).args(["network", "inspect", &net])).status.success(), "still there");
    let gone = ctl.segctl(&["net", "rm", &net]);
    assert!(stderr(&gone).contains("does not exist"), "{}", stderr(&gone));

    let log = std::fs::read_to_string(ctl.state_dir.join("access.log")).unwrap();
    for action in ["network_create", "network_list", "network_remove"] {
        assert!(log.contains(&format!("\"action\":\"{action}\"")), "{action} not in the access log:\n{log}");
    }
}

#[test]
fn bad_names_and_subnets_are_usage_errors_and_no_controller_is_a_clear_failure() {
    let dir = tempfile::tempdir().unwrap();
    let segctl = |args: &[&str]| run(Command::new(SEGCTL).args(args).arg("--run-dir").arg(dir.path()));
    for (args, needle) in [
        (&["net", "create", "bridge"][..], "predefined"),
        (&["net", "create", "-x"][..], "unexpected argument"),
        (&["net", "create", "a/b"][..], "is not allowed"),
        (&["net", "create", "okname", "--subnet", "10.0.0.1/8"][..], "invalid subnet"),
    ] {
        let out = segctl(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    for args in [&["net", "ls"][..], &["net", "create", "okname"][..], &["net", "rm", "okname"][..]] {
        let out = segctl(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("Start it with `segctl node run`"), "{args:?}: {}", stderr(&out));
    }
}
