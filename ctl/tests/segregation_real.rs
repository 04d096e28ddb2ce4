//! Network segregation against the real engine: a `segctl node run`
//! controller, Docker, the kernel's iptables, and real connections made from
//! inside containers' network namespaces.
//!
//! - ICC off on docker0 at once, and back on (`segctl icc`), daemon.json
//!   kept intact (a temp copy; the real one is never touched);
//! - the shop example on a compose project, on both firewall backends
//!   (`--firewall iptables` and `--firewall nftables`): allowed and refused
//!   flows, the world through published ports, a replica started later,
//!   `verify`, `check`, `diff`, repairs after tampering, a controller
//!   restart, every malformed policy refused with the live rules unchanged
//!   (byte-identical), and switching backends back and forth with no stale
//!   rules left behind;
//!
//! dockerd restarts are in `segregation_dockerd.rs`.
//!
//! Tests that change the host's firewall take `/run/seg-host-firewall.lock`
//! and remove seg's chains when done. Needs root, dockerd on
//! /var/run/docker.sock, docker-compose and busybox-static; fails, never
//! skips, without them. Run: `cargo test -p segctl --test segregation_real`.

mod segregation_support;

use seg_common::api::policy::Reach::{Blocked, Reachable};
use segregation_support::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[test]
fn icc_on_docker0_goes_off_at_once_and_back_on_with_iptables() {
    icc_goes_off_at_once_and_back_on("iptables");
}

#[test]
fn icc_on_docker0_goes_off_at_once_and_back_on_with_nftables() {
    icc_goes_off_at_once_and_back_on("nftables");
}

/// seg's docker0 ICC drop, as `backend` holds it.
fn icc_rule_live(backend: &str) -> bool {
    match backend {
        "nftables" => seg_table().contains("SEG-ICC-docker0") && seg_table().contains("\"oifname\""),
        _ => seg_rules(None).contains("-A SEG-ICC-docker0 -i docker0 -o docker0 -j DROP"),
    }
}

fn icc_goes_off_at_once_and_back_on(backend: &str) {
    let _lock = HostLock::take();
    let _reset = FirewallReset;
    build_image();
    let dir = tempfile::tempdir().unwrap();
    let ctl = controller(dir.path(), backend);
    let (a, b) = (format!("segt-icc-{}-a", tag()), format!("segt-icc-{}-b", tag()));
    let _cleanup = Cleanup(vec![docker_rm(None, &a), docker_rm(None, &b)]);
    for (name, cmd) in
        [(&a, ["nc", "-ll", "-p", "7000", "-e", "cat"]), (&b, ["sleep", "600", "", "", "", ""])]
    {
        let cmd: Vec<&str> = cmd.into_iter().filter(|c| !c.is_empty()).collect();
        ok(docker(None).args(["run", "-d", "--name", name, "--network", "bridge", IMAGE]).args(cmd));
    }
    let a_ip = ip_of(None, &a, "bridge");
    assert_eq!(reach(None, &b, a_ip, 7000), Reachable, "docker0 starts with ICC on");

    let out = ctl.ok(&["icc", "disable"]);
    assert!(out.contains("disabled"), "{out}");
    assert_eq!(reach(None, &b, a_ip, 7000), Blocked, "off at once, no daemon restart");
    let status = ctl.ok(&["icc", "status", "--daemon-json", "/nonexistent/daemon.json"]);
    assert!(status.contains("off (rule in force)"), "{status}");
    assert!(icc_rule_live(backend), "{backend}: the ICC rule is not live");

    // --persist keeps every other key; an unreadable file refuses the whole
    // request with nothing changed.
    let file = dir.path().join("daemon.json");
    std::fs::write(&file, "{\n  \"log-level\": \"warn\",\n  \"storage-driver\": \"overlay2\"\n}\n").unwrap();
    let path = file.to_str().unwrap();
    let out = ctl.ok(&["icc", "disable", "--persist", "--daemon-json", path]);
    assert!(out.contains("\"icc\": false"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(json, serde_json::json!({"log-level": "warn", "storage-driver": "overlay2", "icc": false}));
    std::fs::write(&file, "{ nope").unwrap();
    let refused = ctl.segctl(&["icc", "enable", "--persist", "--daemon-json", path]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("nothing was changed"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "{ nope");
    assert_eq!(reach(None, &b, a_ip, 7000), Blocked, "the refused request changed nothing");

    ctl.ok(&["icc", "enable"]);
    assert_eq!(reach(None, &b, a_ip, 7000), Reachable, "back on at once");
    assert_eq!(seg_rules(None), "-A DOCKER-USER -j RETURN", "nothing to enforce: no seg chain left");
    assert!(!seg_table().contains("SEG-"), "nothing to enforce: no seg table left");
    let log = std::fs::read_to_string(ctl.state_dir.join("access.log")).unwrap();
    assert!(log.contains("\"action\":\"icc_set\"") && log.contains("docker0 icc disabled"), "{log}");
}

fn docker_rm(host: Option<&str>, name: &str) -> Command {
    let mut c = docker(host);
    c.args(["rm", "-f", name]);
    c
}

/// The shop example as a compose project of its own: the example compose
/// file with the test image and random host ports, in a directory named
/// after the project, and the example policy naming that project.
struct Shop {
    project: String,
    compose: std::path::PathBuf,
    policy: std::path::PathBuf,
}

impl Shop {
    fn new(dir: &Path) -> Shop {
        let project = format!("segtshop{}", tag());
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop");
        let compose_text = std::fs::read_to_string(examples.join("docker-compose.yml")).unwrap();
        let compose_text = compose_text
            .replace("seg-busybox:dev", IMAGE)
            .replace("\"8080:8080\"", "\"8080\"")
            .replace("\"5432:5432\"", "\"5432\"");
        std::fs::create_dir_all(dir.join(&project)).unwrap();
        let compose = dir.join(&project).join("docker-compose.yml");
        std::fs::write(&compose, compose_text).unwrap();
        let policy_text = std::fs::read_to_string(examples.join("policy.yaml")).unwrap();
        let policy_text = policy_text.replace("project: shop ", &format!("project: {project} "));
        let policy = dir.join("shop.yaml");
        std::fs::write(&policy, policy_text).unwrap();
        Shop { project, compose, policy }
    }

    fn compose(&self, args: &[&str]) -> String {
        ok(Command::new("docker-compose")
            .arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(&self.compose)
            .args(args))
    }

    fn down(&self) -> Command {
        let mut c = Command::new("docker-compose");
        c.arg("-p").arg(&self.project).arg("-f").arg(&self.compose).args(["down", "-v", "-t", "1"]);
        c
    }

    fn container(&self, service: &str, n: u32) -> String {
        format!("{}_{service}_{n}", self.project)
    }

    fn net(&self, key: &str) -> String {
        format!("{}_{key}", self.project)
    }

    fn host_port(&self, service: &str, port: u16) -> u16 {
        let out = ok(docker(None).args(["port", &self.container(service, 1), &format!("{port}/tcp")]));
        out.lines()
            .next()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("a host port")
    }
}

fn controller(dir: &Path, backend: &str) -> Controller {
    Controller::start_with(dir, None, None, &["--resync-interval", "1s", "--firewall", backend])
}

#[test]
fn the_shop_policy_is_enforced_on_a_compose_project_with_iptables() {
    shop_is_enforced("iptables");
}

#[test]
fn the_shop_policy_is_enforced_on_a_compose_project_with_nftables() {
    shop_is_enforced("nftables");
}

fn shop_is_enforced(backend: &str) {
    let _lock = HostLock::take();
    let _reset = FirewallReset;
    build_image();
    let dir = tempfile::tempdir().unwrap();
    let shop = Shop::new(dir.path());
    let _down = Cleanup(vec![shop.down()]);
    let ctl = controller(dir.path(), backend);
    shop.compose(&["up", "-d"]);
    let policy = shop.policy.to_str().unwrap();
    let out = ctl.ok(&["policy", "apply", "-f", policy]);
    assert!(out.contains(&format!("policy {} applied", shop.project)), "{out}");

    let (web, api, db) = (shop.container("web", 1), shop.container("api", 1), shop.container("db", 1));
    let api_ip = ip_of(None, &api, &shop.net("default"));
    let db_ip = ip_of(None, &db, &shop.net("backend"));
    let web_ip = ip_of(None, &web, &shop.net("default"));
    assert_eq!(reach(None, &web, api_ip, 9000), Reachable, "web → api:9000");
    assert_eq!(reach(None, &api, db_ip, 5432), Reachable, "api → db:5432");
    assert_eq!(reach(None, &web, db_ip, 5432), Blocked, "web → db");
    assert_eq!(reach(None, &db, ip_of(None, &api, &shop.net("backend")), 9000), Blocked, "db → api");
    assert_eq!(reach(None, &api, web_ip, 8080), Blocked, "api's egress names db only");

    let world = World::new(tag());
    assert_eq!(reach(None, &db, world.ip, 80), Blocked, "db → the world");
    assert_eq!(world.reach_host(shop.host_port("web", 8080)), Reachable, "the world → web's published port");
    assert_eq!(world.reach_host(shop.host_port("db", 5432)), Blocked, "the world → db's published port");

    check_verify_and_diff(&ctl, &shop, backend);
    a_replica_started_later_is_covered(&ctl, &shop, db_ip);
    tampering_is_repaired(&ctl, backend);
    let ctl = rules_survive_a_controller_restart(ctl, dir.path(), &shop, db_ip, backend);
    malformed_policies_change_nothing(&ctl, backend);
    let ctl = switching_backends_leaves_no_stale_rules(ctl, dir.path(), &shop, db_ip, backend);

    let out = ctl.ok(&["policy", "rm", &shop.project]);
    assert!(out.contains("removed"), "{out}");
    assert_eq!(seg_rules(None), "-A DOCKER-USER -j RETURN");
    assert!(!seg_table().contains("SEG-"), "no seg table left: {}", seg_table());
    assert_eq!(reach(None, &web, db_ip, 5432), Blocked, "still no network in common");
    let log = std::fs::read_to_string(ctl.state_dir.join("access.log")).unwrap();
    assert!(
        log.contains("\"action\":\"policy_apply\"") && log.contains("\"action\":\"policy_remove\""),
        "{log}"
    );
}

fn check_verify_and_diff(ctl: &Controller, shop: &Shop, backend: &str) {
    let deny = ctl.ok(&["policy", "check", "--from", "web", "--to", "db", "--port", "5432/tcp"]);
    assert!(deny.starts_with("DENY") && deny.contains("services.db: default deny"), "{deny}");
    let allow = ctl.ok(&[
        "policy",
        "check",
        "--from",
        "api",
        "--to",
        &format!("{}/db", shop.project),
        "--port",
        "5432",
    ]);
    assert!(allow.starts_with("ALLOW") && allow.contains("services.db.ingress[0]"), "{allow}");
    let verify = ctl.ok(&["policy", "verify", &shop.project]);
    assert!(verify.contains("6 flow(s) probed") && verify.contains("0 mismatch(es)"), "{verify}");
    for (from, to, seen) in [
        ("web", "api", "reachable reachable"),
        ("api", "db", "reachable reachable"),
        ("web", "db", "blocked   blocked"),
    ] {
        let row = verify
            .lines()
            .find(|l| l.starts_with(&shop.container(from, 1)) && l.contains(&shop.container(to, 1)));
        assert!(row.is_some_and(|r| r.contains(seen)), "{from} → {to}:\n{verify}");
    }
    let before = live_rules(backend);
    let policy = shop.policy.to_str().unwrap();
    let same = ctl.segctl(&["policy", "diff", "-f", policy]);
    assert!(same.status.success() && same.stdout.is_empty(), "{same:?}");
    assert!(String::from_utf8_lossy(&same.stderr).contains("no change"));
    // The compose file's `x-seg:` (project: its directory's name) is the same policy.
    let inline = ctl.segctl(&["policy", "diff", "-f", shop.compose.to_str().unwrap()]);
    assert!(inline.status.success() && inline.stdout.is_empty(), "{inline:?}");
    let wider = shop.policy.with_file_name("wider.yaml");
    let text = std::fs::read_to_string(&shop.policy).unwrap().replace("from: [api]", "from: [api, web]");
    std::fs::write(&wider, text).unwrap();
    let diff = ctl.ok(&["policy", "diff", "-f", wider.to_str().unwrap()]);
    let script = match backend {
        "nftables" => diff.starts_with("# nft -f -\n") && diff.contains("inet seg"),
        _ => diff.starts_with("# iptables-restore --noflush\n*filter\n") && diff.contains("-A SEG-IN-"),
    };
    assert!(script, "{backend}: {diff}");
    assert_eq!(live_rules(backend), before, "diff writes nothing");
}

fn a_replica_started_later_is_covered(ctl: &Controller, shop: &Shop, db_ip: std::net::IpAddr) {
    shop.compose(&["up", "-d", "--scale", "api=2"]);
    let api2 = shop.container("api", 2);
    let web = shop.container("web", 1);
    let api2_ip = ip_of(None, &api2, &shop.net("default"));
    eventually("api_2 reaches db and web reaches api_2, with no command", Duration::from_secs(10), || {
        reach(None, &api2, db_ip, 5432) == Reachable && reach(None, &web, api2_ip, 9000) == Reachable
    });
    assert_eq!(reach(None, &api2, ip_of(None, &web, &shop.net("default")), 8080), Blocked);
    assert!(ctl.log_text().contains("Docker events applied to the rules"));
}

/// Another tool flushes seg's rules (a chain and the jump; the nftables
/// table and its hook): put back by the kernel's change notification (or,
/// at worst, the 1 s resync).
fn tampering_is_repaired(ctl: &Controller, backend: &str) {
    let healthy = live_rules(backend);
    let repairs = || {
        let log = ctl.log_text();
        log.matches("resync rewrote").count()
            + log.matches("changed by another tool and are repaired").count()
    };
    let tamperings: Vec<Vec<String>> = match backend {
        "nftables" => vec![
            vec!["nft".into(), "flush table inet seg".into()],
            vec!["nft".into(), "flush chain inet seg SEG-FORWARD\ndelete chain inet seg SEG-FORWARD".into()],
        ],
        _ => {
            let chain = healthy
                .lines()
                .find_map(|l| l.strip_prefix(":SEG-IN-"))
                .map(|c| format!("SEG-IN-{}", c.split_whitespace().next().unwrap()))
                .expect("a service's ingress chain");
            vec![
                vec!["iptables".into(), "-F".into(), chain],
                vec!["iptables".into(), "-D".into(), "DOCKER-USER".into(), "-j".into(), "SEG-FORWARD".into()],
            ]
        }
    };
    for tamper in tamperings {
        let repaired_before = repairs();
        if tamper[0] == "nft" {
            let mut nft = Command::new("nft");
            nft.args(["-f", "-"]).stdin(std::process::Stdio::piped());
            let mut child = nft.spawn().unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(tamper[1].as_bytes()).unwrap();
            assert!(child.wait().unwrap().success(), "nft {}", tamper[1]);
        } else {
            ok(Command::new(&tamper[0]).args(&tamper[1..]));
        }
        // The repair may come before we look (two processes apart): then
        // its log line proves it.
        let seen_broken = live_rules(backend) != healthy;
        eventually("seg's rules are restored", Duration::from_secs(5), || live_rules(backend) == healthy);
        assert!(seen_broken || repairs() > repaired_before, "{tamper:?} was neither seen nor repaired");
    }
}

fn rules_survive_a_controller_restart(
    ctl: Controller,
    dir: &Path,
    shop: &Shop,
    db_ip: std::net::IpAddr,
    backend: &str,
) -> Controller {
    let before = live_rules(backend);
    ctl.stop();
    assert_eq!(live_rules(backend), before, "rules stay while the controller is down");
    assert_eq!(reach(None, &shop.container("web", 1), db_ip, 5432), Blocked, "fail closed");
    assert_eq!(reach(None, &shop.container("api", 1), db_ip, 5432), Reachable);
    let ctl = controller(dir, backend);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(live_rules(backend), before, "adopted, not rebuilt");
    assert!(ctl.ok(&["policy", "ls"]).contains(&shop.project));
    assert!(
        !ctl.log_text().contains("resync rewrote"),
        "nothing to repair after a restart:\n{}",
        ctl.log_text()
    );
    ctl
}

/// The whole ruleset as the kernel lists it, handles included: a write of
/// any kind changes it.
fn ruleset_bytes() -> (Vec<u8>, Vec<u8>) {
    let nft = run(Command::new("nft").args(["-a", "list", "ruleset"])).stdout;
    let ipt = run(Command::new("iptables-save").args(["-t", "filter"])).stdout;
    // Counters move with traffic; the rules are what must not.
    let ipt = String::from_utf8_lossy(&ipt)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with(':'))
        .collect::<Vec<_>>()
        .join("\n");
    (nft, ipt.into_bytes())
}

fn malformed_policies_change_nothing(ctl: &Controller, backend: &str) {
    let before = live_rules(backend);
    let bytes = ruleset_bytes();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files: Vec<_> =
        std::fs::read_dir(golden.join("bad-policies")).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    assert!(files.len() >= 20);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = segctl::client::AdminClient::new(&ctl.run_dir);
    for file in files {
        let rel = format!("bad-policies/{}", file.file_name().unwrap().to_string_lossy());
        let want = std::fs::read_to_string(file.with_extension("err")).unwrap();
        let out = run(Command::new(SEGCTL)
            .current_dir(&golden)
            .args(["policy", "apply", "-f", &rel, "--run-dir"])
            .arg(&ctl.run_dir));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want.trim()), "{rel}: {err}");
        // The controller refuses it too (not only segctl's own check).
        let source = seg_common::api::policy::PolicySource {
            file: rel.clone(),
            text: std::fs::read_to_string(&file).unwrap(),
            dir_project: None,
        };
        let refused = rt.block_on(client.call::<serde_json::Value>("POST", "/v1/policies", Some(&source)));
        let msg = refused.expect_err(&rel).to_string();
        assert_eq!(msg, want.trim(), "{rel}");
    }
    assert_eq!(live_rules(backend), before, "the live rules are unchanged");
    assert!(ruleset_bytes() == bytes, "{backend}: the ruleset is not byte-identical");
}

/// The controller restarted on the other backend and back: the policy is
/// enforced throughout, and each time the other backend's rules are gone.
fn switching_backends_leaves_no_stale_rules(
    ctl: Controller,
    dir: &Path,
    shop: &Shop,
    db_ip: std::net::IpAddr,
    backend: &str,
) -> Controller {
    let other = if backend == "nftables" { "iptables" } else { "nftables" };
    let (web, api) = (shop.container("web", 1), shop.container("api", 1));
    let mut ctl = ctl;
    for now in [other, backend] {
        ctl.stop();
        ctl = controller(dir, now);
        eventually(
            &format!("{now} holds the rules and the other backend none"),
            Duration::from_secs(10),
            || {
                let (ipt, nft) = (seg_rules(None), seg_table());
                match now {
                    "nftables" => nft.contains("SEG-IN-") && !ipt.contains("SEG-"),
                    _ => ipt.contains(":SEG-IN-") && !nft.contains("SEG-"),
                }
            },
        );
        assert_eq!(reach(None, &web, db_ip, 5432), Blocked, "{now}: web → db");
        assert_eq!(reach(None, &api, db_ip, 5432), Reachable, "{now}: api → db");
    }
    ctl
}

#[test]
fn the_default_backend_is_nftables_where_the_kernel_takes_it() {
    let _lock = HostLock::take();
    let _reset = FirewallReset;
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), None, None);
    let status = ctl.ok(&["status", "--exit-zero"]);
    let line = status.lines().find(|l| l.starts_with("firewall")).unwrap_or_else(|| panic!("{status}"));
    // This kernel and nft 1.0.6 take seg's table (the probe), so `auto` is nftables.
    assert!(line.contains("nftables") && line.contains("(Docker: iptables)"), "{line}");
    assert!(ctl.log_text().contains("backend=\"nftables\" setting=auto"), "{}", ctl.log_text());
}
