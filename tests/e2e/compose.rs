//! The short compose form, for real: a compose file with only `x-seg.secrets`
//! (and numeric `user:`s), `segctl compose` writing the override, docker-compose
//! 1.29 accepting it and bringing the app up, and `segctl policy apply -f`
//! granting and revoking to match the declaration — never touching a grant
//! made by hand, and changing nothing when the declaration is bad.

use seg_e2e::serde_norway::Value;
use seg_e2e::*;
use std::process::Command;
use std::time::Duration;

const PW: &str = "compose-pw";
const PW_FILE: &str = "/run/secrets/compose-pw";
/// A second secret, for app only, written under another file name.
const KEY: &str = "compose-key";
const KEY_FILE: &str = "/run/secrets/server.key";

/// Two services, both getting [`PW`] (`to` replaces the list), and app
/// also [`KEY`] in a file of another name.
fn short_form(project: &str, to: &str) -> Value {
    let text = format!(
        "services:\n\
         \x20 app: {{ image: {BUSYBOX_IMAGE}, user: \"1000:1000\", network_mode: none, command: [sleep, \"600\"] }}\n\
         \x20 db: {{ image: {BUSYBOX_IMAGE}, user: \"1001\", network_mode: none, command: [sleep, \"600\"] }}\n\
         x-seg:\n\
         \x20 version: 1\n\
         \x20 project: {project}\n\
         \x20 secrets:\n\
         \x20   {PW}: {{ to: {to} }}\n\
         \x20   {KEY}: {{ to: [app], file: server.key }}\n"
    );
    serde_norway::from_str(&text).expect("yaml")
}

fn grants_of(ctl: &Controller, name: &str) -> Vec<String> {
    let list = ctl.list();
    let secret = list.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no secret {name}"));
    let mut grants: Vec<String> =
        secret["grants"].as_array().expect("grants").iter().map(|g| g.as_str().unwrap().to_owned()).collect();
    grants.sort();
    grants
}

#[test]
fn short_form_delivers_and_policy_apply_grants_and_revokes_to_match() {
    let _serial = begin();
    assert!(SegTable::listing().is_empty(), "seg's nftables table is on the host before the test");
    let _table = SegTable;
    let ctl = Controller::start_with(&["--firewall", "nftables"]);
    let mut project = Project::new(short_form("placeholder", "[app, db]"));
    project.rewrite(short_form(&project.name, "[app, db]"));
    let file = project.file().to_str().unwrap().to_owned();
    let value = random_text(24);
    ctl.put(PW, value.as_slice(), &[]);
    let key = random_text(24);
    ctl.put(KEY, key.as_slice(), &[]);
    // A grant made by hand to another service: no declaration may take it away.
    let by_hand = project.target("worker");
    ctl.grant(PW, &by_hand);

    let seg_file = project.generate_override(&ctl);
    project.add_override(seg_file.clone());
    let generated = std::fs::read_to_string(&seg_file).unwrap();
    assert!(generated.contains(&format!("{}:/run/seg/agent:ro", ctl.agent_dir().display())), "{generated}");
    let config = project.compose(&["config"]);
    assert!(config.success(), "docker-compose config refused the override: {}", config.text());
    assert!(config.stdout_str().contains("condition: service_healthy"), "{}", config.stdout_str());

    let diff = ctl.segctl_ok(&["policy", "diff", "-f", &file]);
    let (app, db) = (project.target("app"), project.target("db"));
    assert!(diff.contains(&format!("+ grant {PW} to {app}\n+ grant {PW} to {db}\n")), "{diff}");
    assert_eq!(grants_of(&ctl, PW), std::slice::from_ref(&by_hand), "diff changed the grants");
    let applied = ctl.segctl_ok(&["policy", "apply", "-f", &file]);
    assert!(applied.contains(&format!("granted {PW} to {app}\ngranted {PW} to {db}\n")), "{applied}");
    let mut all = vec![app.clone(), db.clone(), by_hand.clone()];
    all.sort();
    assert_eq!(grants_of(&ctl, PW), all);

    project.up();
    project.wait_for_file("app", PW_FILE, value.as_slice(), Duration::from_secs(30));
    project.wait_for_file("db", PW_FILE, value.as_slice(), Duration::from_secs(30));
    // `file: server.key`: the secret is there under that name only.
    project.wait_for_file("app", KEY_FILE, key.as_slice(), Duration::from_secs(30));
    assert_eq!(project.read_file("app", &format!("/run/secrets/{KEY}")), None, "not under its own name");
    let stat = project.exec_ok("db", &["stat", "-c", "%a %u", PW_FILE]);
    assert_eq!(String::from_utf8_lossy(&stat).trim(), "400 1001", "owned by db's own user");

    // db leaves `to:`: its grant goes and its sidecar wipes the file; app's stays.
    project.rewrite(short_form(&project.name, "[app]"));
    let diff = ctl.segctl_ok(&["policy", "diff", "-f", &file]);
    assert!(diff.contains(&format!("- grant {PW} to {db}\n")) && !diff.contains("+ grant"), "{diff}");
    let applied = ctl.segctl_ok(&["policy", "apply", "-f", &file]);
    assert!(applied.contains(&format!("revoked {PW} to {db}\n")), "{applied}");
    project.wait_for_absence("db", PW_FILE, Duration::from_secs(30));
    assert_eq!(project.read_file("app", PW_FILE).as_deref(), Some(value.as_slice()));
    let mut left = vec![app.clone(), by_hand.clone()];
    left.sort();
    assert_eq!(grants_of(&ctl, PW), left, "the hand-made grant must stay");

    bad_declarations_change_nothing(&ctl, &project, &left);

    let removed = ctl.segctl_ok(&["policy", "rm", &project.name]);
    assert!(removed.contains(&format!("revoked {PW} to {app}\n")), "{removed}");
    assert_eq!(grants_of(&ctl, PW), [by_hand], "rm revokes only what the declaration made");
}

/// Each bad `x-seg.secrets` is refused with its file:line:column (or the
/// missing secret's name) and leaves grants and firewall as they were.
fn bad_declarations_change_nothing(ctl: &Controller, project: &Project, grants: &[String]) {
    let file = project.file().to_str().unwrap().to_owned();
    let rules = SegTable::listing();
    let doc = |to: &str, extra: &str| {
        let mut text = seg_e2e::serde_norway::to_string(&short_form(&project.name, to)).unwrap();
        text.push_str(extra);
        text
    };
    let cases = [
        (doc("[app, nosuch]", ""), "is not a service of this compose file"),
        (doc("[app, app]", ""), "is named twice"),
        (doc("[app]", "").replace(&format!("{PW}:"), "../pw:"), "must start with a lowercase letter"),
        (doc("[app]", "").replace("to:", "mode: '0600'\n      to:"), "use a read-only octal mode"),
    ];
    for (text, want) in &cases {
        std::fs::write(&file, text).unwrap();
        let out = ctl.segctl(&["policy", "apply", "-f", &file]);
        let err = out.text();
        assert!(!out.success() && err.contains(want), "{want}: {err}\n{text}");
        let located = format!("{file}:");
        let rest = err.split(&located).nth(1).unwrap_or_else(|| panic!("no {located} in: {err}"));
        let mut pos = rest.split(':').take(2).map(|n| n.parse::<usize>());
        assert!(pos.all(|n| n.is_ok()), "no line:column after the file name: {err}");
    }
    // A secret the store does not hold: refused by the controller, by name.
    let text = doc("[app]", "    compose-missing: { to: [db] }\n");
    std::fs::write(&file, &text).unwrap();
    let out = ctl.segctl(&["policy", "apply", "-f", &file]);
    assert!(
        !out.success() && out.text().contains("the store does not hold: compose-missing"),
        "{}",
        out.text()
    );
    assert_eq!(grants_of(ctl, PW), grants, "a refused declaration changed the grants");
    assert_eq!(SegTable::listing(), rules, "a refused declaration changed the firewall");
    project.rewrite(short_form(&project.name, "[app]"));
}

/// `docker-compose config` of the shipped short form plus its generated
/// override equals that of the same app written by hand, but for the
/// volume's name and the one setting the long form leaves at its default.
#[test]
fn the_example_short_form_configures_like_the_long_form() {
    let _serial = begin();
    let dir = workspace_root().join("examples/secrets");
    let config = |files: &[&str]| {
        let mut cmd = Command::new("docker-compose");
        cmd.current_dir(&dir).args(["-p", "segdemo"]);
        for f in files {
            cmd.args(["-f", f]);
        }
        let out = run(cmd.arg("config"), DOCKER_TIMEOUT);
        assert!(out.success(), "docker-compose config {files:?}: {}", out.text());
        out.stdout_str()
    };
    let short = config(&["docker-compose.yml", "docker-compose.seg.yml"]);
    let by_hand = config(&["by-hand.yml"]);
    let short = short
        .replace("app-secrets:/run/secrets", "secrets:/run/secrets")
        .replace("\n  app-secrets:\n    driver_opts", "\n  secrets:\n    driver_opts");
    let short = short.replace("      SEG_MODE: '0400'\n", "");
    assert_eq!(short, by_hand, "the generated form differs from by-hand.yml");
}
