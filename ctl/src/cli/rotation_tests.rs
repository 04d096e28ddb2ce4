use super::*;
use seg_common::api::{Consumer, Identity, PreviousVersion};

fn consumer(name: &str, version: Option<u64>, watching: bool) -> Consumer {
    Consumer {
        container_id: format!("{name}0123456789abcdef"),
        container_name: name.into(),
        identity: Identity { project: Some("shop".into()), service: "app".into() },
        version,
        acked_at_ms: version.map(|_| 1_700_000_000_123),
        watching,
        last_hook: None,
    }
}

fn status(consumers: Vec<Consumer>) -> SecretStatus {
    SecretStatus {
        name: SecretName::parse("db").unwrap(),
        version: 3,
        previous: Some(PreviousVersion { version: 2, readable: true, until_ms: Some(1_700_000_600_000) }),
        consumers,
        wanted: 3,
        complete: false,
        rotated_at_ms: Some(1_700_000_000_000),
    }
}

#[test]
fn lagging_names_watching_consumers_without_the_version() {
    let st = status(vec![
        consumer("a", Some(3), true),
        consumer("b", Some(2), true),
        consumer("c", None, true),
        consumer("gone", Some(1), false),
    ]);
    let late = lagging(&st);
    assert_eq!(late.len(), 2, "{late:?}");
    assert!(late[0].starts_with("b (b0123456789a, shop/app, has v2)"), "{late:?}");
    assert!(late[1].contains("has not acknowledged any"), "{late:?}");
}

#[test]
fn the_status_table_shows_versions_times_and_the_grace_period() {
    let text = status_table(&status(vec![
        consumer("shop-app-1", Some(3), true),
        consumer("shop-app-2", None, false),
    ]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "secret db: version 3, rotated 2023-11-14T22:13:20.000Z");
    assert!(lines[1].contains("previous version 2: readable until every consumer has v3"), "{text}");
    assert!(lines[2].starts_with("CONTAINER"), "{text}");
    assert!(
        lines[3].contains("shop-app-1")
            && lines[3].contains("2023-11-14T22:13:20.123Z")
            && lines[3].contains("open"),
        "{text}"
    );
    assert!(lines[4].contains("closed") && lines[4].contains(" - "), "{text}");
    assert_eq!(lines[5], "1 of 2 have version 3");
    assert!(status_table(&status(vec![])).contains("no consumers"));
}

#[test]
fn durations_are_range_checked() {
    assert_eq!(parse_grace("0s"), Ok(0));
    assert!(parse_grace("2d").is_err());
    assert_eq!(parse_wait("30s"), Ok(30_000));
    assert!(parse_wait("2h").is_err());
    assert!(parse_hook_timeout("50ms").is_err());
    assert_eq!(parse_hook_timeout("10m"), Ok(600_000));
}

#[test]
fn hooks_show_command_and_timeout() {
    let hooks = Hooks {
        pre_rotate: Some(HookSpec { command: "psql -f rotate.sql".into(), timeout_ms: 30_000 }),
        post_rotate: None,
    };
    let text = hooks_table(&SecretName::parse("db").unwrap(), &hooks);
    assert_eq!(text, "db\n  pre-rotate   psql -f rotate.sql (timeout 30s)\n  post-rotate  -\n");
}

mod parsing {
    use crate::cli::secret::{SecretArgs, SecretCmd};
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        s: SecretArgs,
    }

    fn parse(args: &[&str]) -> Result<SecretCmd, clap::Error> {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).map(|t| t.s.cmd)
    }

    #[test]
    fn rotate_takes_one_source_and_wait_options() {
        let cmd = parse(&["rotate", "db", "--generate", "32", "--wait", "--timeout", "10s", "--grace", "0s"])
            .unwrap();
        let SecretCmd::Rotate { wait, timeout, grace, .. } = cmd else { panic!() };
        assert_eq!((wait, timeout, grace), (true, Some(10_000), Some(0)));
        assert!(parse(&["rotate", "db"]).is_err(), "a source is required");
        assert!(
            parse(&["rotate", "db", "--generate", "3", "--timeout", "5s"]).is_err(),
            "--timeout needs --wait"
        );
    }

    #[test]
    fn hook_flags_conflict_sensibly() {
        assert!(parse(&["hook", "db", "--pre-rotate", "true", "--timeout", "5s"]).is_ok());
        assert!(parse(&["hook", "db", "--pre-rotate", "true", "--no-pre-rotate"]).is_err());
        assert!(parse(&["hook", "db", "--no-pre-rotate", "--post-rotate", "x"]).is_ok());
        assert!(parse(&["status", "db", "-o", "json"]).is_ok());
    }
}

#[test]
fn times_are_rfc3339_with_milliseconds() {
    assert_eq!(time_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    assert_eq!(time_ms(u64::MAX), "9999-12-31T23:59:59.999Z");
}
