use super::super::{parse_compose, PolicyError};
use super::*;

const APP: &str = "\
services:
  db: { image: pg, user: \"999:999\" }
  app: { image: app, user: \"1000\" }
  web: { image: web }
x-seg:
  version: 1
  secrets:
    db-password: { to: [db, app] }
    tls.key: { to: [web], mode: \"0440\" }
";

fn parsed(text: &str) -> Secrets {
    parse_compose(text, "docker-compose.yml", Some("shop")).unwrap().secrets
}

fn located(text: &str) -> String {
    match parse_compose(text, "docker-compose.yml", Some("shop")).unwrap_err() {
        e @ PolicyError::Invalid { .. } => e.to_string(),
        other => panic!("expected a located error, got {other}"),
    }
}

#[test]
fn reads_services_and_modes() {
    let s = parsed(APP);
    let pw = SecretName::parse("db-password").unwrap();
    assert_eq!(s.0[&pw], SecretDecl { to: vec!["app".into(), "db".into()], mode: DEFAULT_MODE, file: None });
    assert_eq!(s.0[&SecretName::parse("tls.key").unwrap()].mode, FileMode(0o440));
    let by = s.by_service();
    assert_eq!(by.keys().collect::<Vec<_>>(), ["app", "db", "web"]);
    assert_eq!(by["web"].1.to_string(), "0440");
    // A bare service, and a mode written as a YAML number.
    let s = parsed(&APP.replace("{ to: [web], mode: \"0440\" }", "{ to: web, mode: 0444 }"));
    assert_eq!(s.0[&SecretName::parse("tls.key").unwrap()].mode, FileMode(0o444));
    let none = APP.split("  secrets:").next().unwrap().to_string();
    assert!(parsed(&none).is_empty());
}

#[test]
fn bad_input_is_located() {
    let cases = [
        (
            "[db, app]",
            "[db, ap]",
            "docker-compose.yml:8:29: `ap` is not a service of this compose file (services: app, db, web)",
        ),
        ("[db, app]", "[db, db]", "docker-compose.yml:8:29: `db` is named twice in x-seg.secrets.db-password.to[1]"),
        ("[db, app]", "[]", "docker-compose.yml:8:24: empty `to:` in x-seg.secrets.db-password.to: name at least one service"),
        (
            "db-password:",
            "../pw:",
            "docker-compose.yml:8:5: secret name \"../pw\" must start with a lowercase letter or a digit (in x-seg.secrets)",
        ),
        (
            "db-password:",
            "a/b:",
            "docker-compose.yml:8:5: secret name \"a/b\" has '/' at byte 1; allowed are a-z, 0-9, '.', '_' and '-' (in x-seg.secrets)",
        ),
        (
            "mode: \"0440\"",
            "mode: \"0640\"",
            "docker-compose.yml:9:33: mode `0640` in x-seg.secrets.tls.key.mode: use a read-only octal mode: 0400, 0440 or 0444",
        ),
        (
            "mode: \"0440\"",
            "path: server.key",
            "docker-compose.yml:9:27: unknown key `path` in x-seg.secrets.tls.key: a secret has `to:` and optionally `mode:` and `file:`",
        ),
        (
            "mode: \"0440\"",
            "file: ../server.key",
            "docker-compose.yml:9:33: file name \"../server.key\" must start with a letter or a digit (in x-seg.secrets.tls.key.file)",
        ),
        (
            "mode: \"0440\"",
            "file: keys/server.key",
            "docker-compose.yml:9:33: file name \"keys/server.key\" has '/' at byte 4; allowed are letters, digits, '.', '_' and '-' (in x-seg.secrets.tls.key.file)",
        ),
    ];
    let mut wrong = Vec::new();
    for (from, to, want) in cases {
        let got = located(&APP.replacen(from, to, 1));
        if got != want {
            wrong.push(format!("{from} -> {to}:\n  got  {got}\n  want {want}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn one_mode_per_service() {
    let text = APP.replace("[web]", "[web, app]");
    assert_eq!(
        located(&text),
        "docker-compose.yml:9:38: service `app` gets `db-password` with mode 0400 and `tls.key` with mode 0440 \
         (x-seg.secrets.tls.key.mode): one sidecar writes a service's files with one mode; give both the same `mode:`"
    );
    // Mode first: the clash is found at the service.
    let text = APP.replace("{ to: [web], mode: \"0440\" }", "{ mode: \"0440\", to: [web, app] }");
    assert!(located(&text).starts_with("docker-compose.yml:9:40: service `app` gets"), "{}", located(&text));
    // No mode on the second: the default clashes, found at its declaration.
    let text = APP
        .replace("{ to: [db, app] }", "{ to: [db, app], mode: \"0444\" }")
        .replace("{ to: [web], mode: \"0440\" }", "{ to: [web, app] }");
    assert!(
        located(&text).contains("gets `db-password` with mode 0444 and `tls.key` with mode 0400"),
        "{}",
        located(&text)
    );
    // The same mode twice is fine.
    let text =
        APP.replace("{ to: [db, app] }", "{ to: [db, app], mode: \"0440\" }").replace("[web]", "[web, app]");
    assert_eq!(parsed(&text).by_service()["app"].0.len(), 2);
}

/// `file:` names the secret's file; two secrets of one service never share
/// a file (by `file:` or by a secret's own name).
#[test]
fn a_file_name_is_the_secrets_and_no_two_secrets_share_one() {
    let text =
        APP.replace("{ to: [web], mode: \"0440\" }", "{ to: [web], mode: \"0440\", file: server.key }");
    let tls = SecretName::parse("tls.key").unwrap();
    let decl = &parsed(&text).0[&tls];
    assert_eq!(decl.file.as_ref().map(|f| f.as_str()), Some("server.key"));
    assert_eq!(decl.sidecar_entry(&tls), "tls.key:server.key");
    let pw = SecretName::parse("db-password").unwrap();
    assert_eq!(parsed(&text).0[&pw].sidecar_entry(&pw), "db-password");
    let clash = APP.replace("{ to: [web], mode: \"0440\" }", "{ to: [app], file: db-password }");
    assert_eq!(
        located(&clash),
        "docker-compose.yml:9:14: `db-password` and `tls.key` would both be /run/secrets/db-password in service `app` \
         (x-seg.secrets.tls.key): give one of them another `file:`"
    );
}
