use super::*;

fn opts() -> Options {
    Options {
        agent_dir: "/run/seg/agent".into(),
        image: DEFAULT_IMAGE.into(),
        file: "docker-compose.yml".into(),
    }
}

/// Compares with a golden file; `SEG_BLESS=1` rewrites it.
fn golden(path: &str, got: &str) {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    if std::env::var_os("SEG_BLESS").is_some() {
        std::fs::write(&full, got).unwrap();
    }
    let want = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
    assert_eq!(got, want, "{path} differs (SEG_BLESS=1 rewrites it)");
}

#[test]
fn the_example_generates_its_golden_override() {
    let text = include_str!("../../../examples/secrets/docker-compose.yml");
    golden("examples/secrets/docker-compose.seg.yml", &generate(text, &opts()).unwrap());
}

const THREE: &str = "\
services:
  db: { image: pg, user: \"999:999\", depends_on: [cache] }
  app: { image: app, user: 1000 }
  web: { image: web, user: www-data }
  cache: { image: redis }
x-seg:
  version: 1
  secrets:
    db-password: { to: [db, app] }
    api-token: { to: [app] }
";

#[test]
fn every_service_gets_its_own_sidecar_volume_and_mode() {
    let opts = Options { agent_dir: "/srv/seg run/agent".into(), ..opts() };
    let text = THREE.replace(
        "    api-token: { to: [app] }\n",
        "    api-token: { to: [app] }\n    tls.key: { to: [web], mode: \"0440\", file: server.key }\n",
    );
    let text = text.replace("user: www-data", "user: \"33:33\"");
    golden("ctl/src/compose/golden/three.seg.yml", &generate(&text, &opts).unwrap());
    let plan = plan(&text, &opts).unwrap();
    let app = plan.iter().find(|d| d.service == "app").unwrap();
    assert_eq!(
        (app.secrets.join(","), app.user.to_string()),
        ("api-token,db-password".into(), "1000".into())
    );
    let web = plan.iter().find(|d| d.service == "web").unwrap();
    assert_eq!(web.secrets, ["tls.key:server.key"], "the sidecar writes tls.key to server.key");
}

#[test]
fn refusals_say_where_and_what_to_write() {
    let err = |text: &str| generate(text, &opts()).unwrap_err().to_string();
    let e = err(&THREE.replace("[db, app]", "[db, web]"));
    assert_eq!(
        e,
        "docker-compose.yml:4:28: `user: www-data` in services.web.user is not numeric: seg gives the secrets \
         tmpfs to the app's uid, so write the ids, e.g. `user: \"1000:1000\"` (`id -u NAME` in the image tells them)"
    );
    let e = err(&THREE.replace("[db, app]", "[db, cache]"));
    assert!(e.starts_with("docker-compose.yml:5:10: service `cache` gets secrets but has no `user:`"), "{e}");
    let e = err(&THREE.replace("  cache:", "  app-secrets:").replace("[cache]", "[app-secrets]"));
    assert!(e.contains("would add the service `app-secrets`, but the file has one already"), "{e}");
    let e = err(&format!("{THREE}volumes:\n  db-secrets: {{}}\n"));
    assert!(e.contains("would add the volume `db-secrets`"), "{e}");
    let e =
        err(&THREE
            .replace("  secrets:\n    db-password: { to: [db, app] }\n    api-token: { to: [app] }\n", ""));
    assert!(e.contains("`x-seg:` has no `secrets:`"), "{e}");
    let e = err(&THREE.replace("[db, app]", "[db, ap]"));
    assert!(e.starts_with("docker-compose.yml:9:29: `ap` is not a service of this compose file"), "{e}");
    let bad = Options { agent_dir: "run/seg".into(), ..opts() };
    assert!(generate(THREE, &bad).unwrap_err().to_string().contains("must be an absolute path"));
}

#[test]
fn users_are_numeric_ids() {
    assert_eq!(parse_user("1000:1001").unwrap(), User { uid: 1000, gid: Some(1001) });
    assert_eq!(parse_user("0").unwrap(), User { uid: 0, gid: None });
    for bad in ["", ":", "1000:", "app", "1000:staff", "-1", "99999999999"] {
        assert!(parse_user(bad).is_err(), "{bad}");
    }
}
