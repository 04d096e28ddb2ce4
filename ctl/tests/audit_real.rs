//! `segctl audit` against the real engine: a fixture set of deliberately bad
//! containers, each hardened like the example's sidecar except for one flaw,
//! must each be flagged by exactly the right checks; the hardened one passes
//! every container check; the JSON validates against docs/audit-schema.json.
//!
//! Needs root and a running dockerd (the test fails loudly otherwise). It
//! builds two images FROM scratch with the host's /bin/busybox, starts its
//! containers as `segt-audit-*-<pid>` and removes them on the way out (Drop).
//! It never touches /etc/docker/daemon.json (temp copies only). One test
//! (`--fix` with a running controller) turns ICC on docker0 off: it holds
//! /run/seg-host-firewall.lock throughout and turns ICC back on and removes
//! seg's chains on the way out (Drop).

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use support::{build_busybox_image, build_image, docker, docker_cli, Guard};

const BASE_IMAGE: &str = "segt-audit-busybox:1";
const SETUID_IMAGE: &str = "segt-audit-setuid:1";
const SECRET_VALUE: &str = "Tr0ub4dor-and-3-never-printed";

fn build_images() {
    build_busybox_image(BASE_IMAGE);
    // One setuid file that stays, one setgid bit removed in a later layer
    // (copy-up) and one setuid file deleted later (whiteout): only the first
    // is in the container's filesystem.
    build_image(
        SETUID_IMAGE,
        &format!(
            "FROM {BASE_IMAGE}\n\
             RUN [\"/bin/busybox\", \"sh\", \"-c\", \"cp /bin/busybox /bin/suid-probe && chmod 4755 /bin/suid-probe \
             && cp /bin/busybox /bin/sgid-probe && chmod 2755 /bin/sgid-probe && cp /bin/busybox /bin/gone && chmod 4755 /bin/gone\"]\n\
             RUN [\"/bin/busybox\", \"rm\", \"/bin/gone\"]\n\
             RUN [\"/bin/busybox\", \"chmod\", \"0755\", \"/bin/sgid-probe\"]\n"
        ),
        false,
    );
}

/// The hardened flags of examples/secrets' sidecar, minus what `drop` names.
fn hardened_args(drop: &[&str]) -> Vec<String> {
    let all: [(&str, &[&str]); 9] = [
        ("user", &["--user", "1000:1000"]),
        ("read-only", &["--read-only"]),
        ("cap-drop", &["--cap-drop", "ALL"]),
        ("nnp", &["--security-opt", "no-new-privileges:true"]),
        ("network", &["--network", "none"]),
        ("memory", &["--memory", "32m"]),
        ("cpus", &["--cpus", "0.2"]),
        ("pids", &["--pids-limit", "32"]),
        ("health", &["--health-cmd", "/bin/true", "--health-interval", "60s"]),
    ];
    all.iter().filter(|(k, _)| !drop.contains(k)).flat_map(|(_, a)| a.iter().map(|s| s.to_string())).collect()
}

struct Case {
    name: &'static str,
    drop: &'static [&'static str],
    extra: &'static [&'static str],
    image: &'static str,
    /// The check ids that must flag it (WARN or INFO), and no others.
    flagged: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case { name: "hardened", drop: &[], extra: &[], image: BASE_IMAGE, flagged: &[] },
    Case {
        name: "privileged",
        drop: &[],
        extra: &["--privileged"],
        image: BASE_IMAGE,
        flagged: &["cis-5.5-privileged"],
    },
    Case {
        name: "root",
        drop: &["user"],
        extra: &["--user", "0:0"],
        image: BASE_IMAGE,
        flagged: &["cis-4.1-user"],
    },
    Case {
        name: "env",
        drop: &[],
        extra: &["-e", "PASSWORD=Tr0ub4dor-and-3-never-printed"],
        image: BASE_IMAGE,
        flagged: &["seg-secrets-env"],
    },
    Case {
        name: "hostnet",
        drop: &["network"],
        extra: &["--network", "host"],
        image: BASE_IMAGE,
        flagged: &["cis-5.10-host-network"],
    },
    Case {
        name: "sock",
        drop: &[],
        extra: &["-v", "/var/run/docker.sock:/var/run/docker.sock"],
        image: BASE_IMAGE,
        flagged: &["cis-5.32-docker-sock"],
    },
    Case {
        name: "nolimits",
        drop: &["memory", "cpus", "pids"],
        extra: &[],
        image: BASE_IMAGE,
        flagged: &["cis-5.11-memory", "cis-5.12-cpu", "cis-5.29-pids-limit"],
    },
    // `restart: always` without limits (here: no memory limit) — docker-bench passes it.
    Case {
        name: "restart",
        drop: &["memory"],
        extra: &["--restart", "always"],
        image: BASE_IMAGE,
        flagged: &["cis-5.11-memory", "cis-5.15-restart"],
    },
    Case {
        name: "restart-limited",
        drop: &[],
        extra: &["--restart", "always"],
        image: BASE_IMAGE,
        flagged: &[],
    },
    Case { name: "setuid", drop: &[], extra: &[], image: SETUID_IMAGE, flagged: &["seg-setid-files"] },
    Case {
        name: "ports",
        drop: &["network"],
        extra: &["--network", "bridge", "-p", "80"],
        image: BASE_IMAGE,
        flagged: &["cis-5.14-ports-any-address", "cis-5.30-docker0"],
    },
];

fn start(fixtures: &mut Guard, case: &Case) -> String {
    let name = format!("segt-audit-{}-{}", case.name, std::process::id());
    let _ = docker(&["rm", "-f", &name]);
    let mut args: Vec<String> =
        ["run", "-d", "--name", &name, "--label", "segt-audit=1"].map(String::from).to_vec();
    args.extend(hardened_args(case.drop));
    args.extend(case.extra.iter().map(|s| s.to_string()));
    args.extend([case.image.to_owned(), "/bin/sleep".into(), "600".into()]);
    fixtures.push(&name);
    docker_cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    name
}

fn segctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_segctl")).args(args).output().unwrap()
}

fn preflight() {
    assert!(
        rustix::process::geteuid().is_root(),
        "audit_real needs root (it reads overlay2 layers): run as root"
    );
    let out = docker(&["info", "--format", "{{.Driver}}"]);
    assert!(out.status.success(), "dockerd is not running: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "overlay2", "these fixtures expect overlay2");
}

/// (check id, level) of every finding whose first object is container `name`.
fn findings_of<'a>(report: &'a Value, name: &str) -> Vec<(&'a str, &'a str)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["objects"][0]["kind"] == "container" && f["objects"][0]["name"] == name)
        .map(|f| (f["id"].as_str().unwrap(), f["level"].as_str().unwrap()))
        .collect()
}

#[test]
fn bad_containers_are_flagged_by_exactly_the_right_checks() {
    preflight();
    build_images();
    let mut fixtures = Guard::containers();
    let names: Vec<String> = CASES.iter().map(|c| start(&mut fixtures, c)).collect();
    let empty = tempfile::tempdir().unwrap(); // no policies, no controller: hermetic
    let dir = empty.path().to_str().unwrap();
    let mut args = vec!["audit", "-o", "json", "--fail-on", "never", "--state-dir", dir, "--run-dir", dir];
    for n in &names {
        args.extend(["--container", n.as_str()]);
    }
    let out = segctl(&args);
    assert!(out.status.success(), "segctl audit: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.contains(SECRET_VALUE), "the secret value was printed");
    let report: Value = serde_json::from_str(&stdout).expect("JSON output");
    assert_eq!(report["host"]["containers"], CASES.len());
    let icc_off = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["id"] == "cis-2.2-icc" && f["level"] == "PASS");
    let apparmor = !report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["id"] == "cis-5.2-apparmor" && f["level"] == "NOTE");
    for (case, name) in CASES.iter().zip(&names) {
        assert_case(&report, case, name, icc_off, apparmor);
    }
    let setuid = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "seg-setid-files" && f["level"] == "WARN")
        .unwrap();
    assert_eq!(
        setuid["detail"], "1 file(s): /bin/suid-probe (4755 0:0)",
        "whiteouts and copy-ups are honoured"
    );
    let env = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "seg-secrets-env" && f["level"] == "WARN");
    assert_eq!(env.unwrap()["detail"], "environment variables PASSWORD (name looks like a secret)");
    assert_eq!(report["controller"]["reachable"], false);
    assert!(report["degraded"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["check"] == "seg-secrets-reachable" && d["needs"] == "controller"));
    validate(&report);
    other_formats_and_exit_codes(&names, dir);
    fix_on_a_temp_daemon_json(dir);
}

/// The CLI's `--fix` path on a temp daemon.json (never /etc/docker: other
/// tests share this host). The live half (ICC flipping to PASS on the running
/// engine) is left to the firewall's `segctl icc` issue.
fn fix_on_a_temp_daemon_json(dir: &str) {
    let dj = Path::new(dir).join("daemon.json");
    std::fs::write(&dj, "{\"log-level\": \"info\"}\n").unwrap();
    let dj = dj.to_str().unwrap();
    let args = ["audit", "--fix", "--daemon-json", dj, "--state-dir", dir, "--run-dir", dir];
    let dry = segctl(&[&args[..], &["--dry-run"]].concat());
    assert!(dry.status.success());
    assert!(String::from_utf8_lossy(&dry.stdout).contains("set \"icc\": false in"), "{dry:?}");
    assert_eq!(
        std::fs::read_to_string(dj).unwrap(),
        "{\"log-level\": \"info\"}\n",
        "--dry-run changes nothing"
    );
    let first = segctl(&args);
    let text = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(first.status.success() && text.contains("  1. done"), "{text}");
    assert_eq!(std::fs::read_to_string(dj).unwrap(), "{\n  \"log-level\": \"info\",\n  \"icc\": false\n}\n");
    let second = segctl(&args);
    let text = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(
        second.status.success()
            && (text.contains("Nothing to change now.") || text.contains("Nothing to fix")),
        "{text}"
    );
    assert!(!text.contains("daemon.json (was"), "a second --fix plans no file change: {text}");
}

/// One fixture is flagged (WARN or INFO) by exactly its checks, and every
/// container check and seg's per-container checks decided on it.
fn assert_case(report: &Value, case: &Case, name: &str, icc_off: bool, apparmor: bool) {
    let found = findings_of(report, name);
    let flagged: BTreeSet<&str> =
        found.iter().filter(|(_, l)| matches!(*l, "WARN" | "INFO")).map(|(i, _)| *i).collect();
    let want: BTreeSet<&str> = case.flagged.iter().copied().collect();
    assert_eq!(flagged, want, "{}: {found:?}", case.name);
    let notes: Vec<_> = found.iter().filter(|(_, l)| *l == "NOTE").collect();
    assert!(notes.is_empty(), "{}: undecided checks {notes:?}", case.name);
    // Every container check and seg's per-container checks ran on it.
    let ids: BTreeSet<&str> = found.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids.len(), if apparmor { 23 } else { 22 }, "{}: {ids:?}", case.name);
    if case.name == "ports" {
        let docker0 = found.iter().find(|(i, _)| *i == "cis-5.30-docker0").unwrap().1;
        assert_eq!(docker0, if icc_off { "INFO" } else { "WARN" });
    }
}

fn validate(report: &Value) {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/audit-schema.json"))
            .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::draft202012::new(&schema).expect("valid schema");
    let errors: Vec<String> =
        validator.iter_errors(report).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

fn other_formats_and_exit_codes(names: &[String], dir: &str) {
    let base = ["audit", "--state-dir", dir, "--run-dir", dir];
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend(extra);
        for n in names {
            a.extend(["--container", n.as_str()]);
        }
        segctl(&a)
    };
    let table = with(&[]);
    assert_eq!(table.status.code(), Some(3), "WARN findings with --fail-on warn (default) exit 3");
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.contains("CONTAINERS — score")
            && text.contains("cis-5.5-privileged")
            && !text.contains(SECRET_VALUE)
    );
    let sarif = with(&["-o", "sarif", "--fail-on", "never"]);
    assert!(sarif.status.success());
    let sarif: Value = serde_json::from_slice(&sarif.stdout).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    assert!(sarif["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["ruleId"] == "cis-5.5-privileged"));
    let only = with(&["-o", "json", "--check", "5.5", "--fail-on", "never"]);
    let only: Value = serde_json::from_slice(&only.stdout).unwrap();
    assert!(only["findings"].as_array().unwrap().iter().all(|f| f["id"] == "cis-5.5-privileged"));
    let missing = segctl(&["audit", "--container", "segt-audit-no-such-container"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr)
        .contains("no running container `segt-audit-no-such-container`"));
}

/// A controller on the real engine that turns ICC on docker0 back on before
/// it is killed, however the test ends.
struct IccOnAtExit(support::node::Node);

impl Drop for IccOnAtExit {
    fn drop(&mut self) {
        let out = self.0.cli(&["icc", "enable"]);
        if !out.status.success() {
            eprintln!("could not turn ICC back on: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// The cis-2.2-icc finding of a JSON audit of that check alone, and the
/// audit's exit status.
fn icc_finding(args: &[&str]) -> (Option<i32>, Value) {
    let out = segctl(&[&["audit", "-o", "json", "--check", "cis-2.2-icc"], args].concat());
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON output ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let found: Vec<&Value> =
        report["findings"].as_array().unwrap().iter().filter(|f| f["id"] == "cis-2.2-icc").collect();
    assert_eq!(found.len(), 1, "{report:#}");
    (out.status.code(), found[0].clone())
}

/// `segctl audit --fix` on the real engine with a running controller: ICC
/// on docker0 goes off live (the controller's rule) and in a temp
/// daemon.json, the audit turns from WARN to PASS, and a second `--fix`
/// changes nothing. ICC is turned back on at the end (and on failure).
#[test]
fn fix_turns_icc_off_live_and_persisted_and_is_idempotent_with_iptables() {
    icc_fix("iptables");
}

#[test]
fn fix_turns_icc_off_live_and_persisted_and_is_idempotent_with_nftables() {
    icc_fix("nftables");
}

fn icc_fix(backend: &str) {
    preflight();
    let _lock = support::host::HostLock::take();
    let _reset = support::host::FirewallReset;
    let node = IccOnAtExit(support::node::Node::start_with(Some(support::SOCKET), &["--firewall", backend]));
    let node = &node.0;
    node.ok(&["icc", "enable"]);
    let bridge = docker_cli(&[
        "network",
        "inspect",
        "bridge",
        "-f",
        "{{index .Options \"com.docker.network.bridge.enable_icc\"}}",
    ]);
    assert_eq!(bridge, "true", "this test needs dockerd's own ICC on (no \"icc\": false in its config)");

    let dir = tempfile::tempdir().unwrap();
    let dj = dir.path().join("daemon.json");
    std::fs::write(&dj, "{\n  \"log-level\": \"warn\",\n  \"storage-driver\": \"overlay2\"\n}\n").unwrap();
    let (run, state) = (node.run_dir(), node.path("state"));
    let args = [
        "--run-dir",
        run.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--daemon-json",
        dj.to_str().unwrap(),
    ];

    let (code, before) = icc_finding(&args);
    assert_eq!(before["level"], "WARN", "{before:#}");
    assert_eq!(code, Some(3), "a WARN finding exits 3");

    let fix = segctl(&[&["audit", "--fix"], &args[..]].concat());
    let plan = String::from_utf8_lossy(&fix.stdout).into_owned();
    assert!(fix.status.success(), "{plan}{}", String::from_utf8_lossy(&fix.stderr));
    assert!(
        plan.contains("Plan:")
            && plan.contains(&format!("set \"icc\": false in {}", dj.display()))
            && plan.contains("drop docker0-to-docker0 traffic now (the controller's ICC rule)")
            && plan.contains("  1. done")
            && plan.contains("  2. done")
            && !plan.contains("pending"),
        "{plan}"
    );

    let (code, after) = icc_finding(&args);
    assert_eq!(after["level"], "PASS", "{after:#}");
    assert_eq!(code, Some(0));
    assert!(after["detail"].as_str().unwrap().contains("segctl icc disable"), "{after:#}");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&dj).unwrap()).unwrap();
    assert_eq!(json, serde_json::json!({"log-level": "warn", "storage-driver": "overlay2", "icc": false}));
    let status = node.ok(&["icc", "status", "--daemon-json", dj.to_str().unwrap()]);
    assert!(status.contains("off (rule in force)"), "{status}");

    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&dj).unwrap();
    let again = segctl(&[&["audit", "--fix"], &args[..]].concat());
    let text = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(again.status.success(), "{text}{}", String::from_utf8_lossy(&again.stderr));
    assert!(
        text.contains("Nothing to fix: what seg owns is already as it should be.") && !text.contains("Plan:"),
        "{text}"
    );
    let meta2 = std::fs::metadata(&dj).unwrap();
    assert_eq!(
        (meta2.ino(), meta2.mtime(), meta2.mtime_nsec()),
        (meta.ino(), meta.mtime(), meta.mtime_nsec())
    );

    node.ok(&["icc", "enable"]);
    let (_, restored) = icc_finding(&args[..4]);
    assert_eq!(restored["level"], "WARN", "ICC is back on: {restored:#}");
}
