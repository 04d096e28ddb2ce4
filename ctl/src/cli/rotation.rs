//! `segctl secret rotate|status|hook`: rotate a secret into every running
//! consumer, see who has which version, and manage rotation hooks.

use super::duration::{format_ms, parse_ms};
use super::Output;
use crate::client::AdminClient;
use crate::table::Table;
use anyhow::{bail, Context, Result};
use seg_common::api::{RotateResult, SecretStatus, MAX_GRACE_MS, MAX_WAIT_MS};
use seg_common::name::SecretName;
use seg_common::secret::SecretBytes;
use std::time::Duration;

/// `--wait` without `--timeout` waits this long.
pub const DEFAULT_WAIT_MS: u64 = 30_000;

pub fn parse_grace(raw: &str) -> Result<u64, String> {
    let ms = parse_ms(raw).map_err(|e| e.to_string())?;
    if ms > MAX_GRACE_MS {
        return Err(format!("grace period {raw} is too long: use 0s to 24h"));
    }
    Ok(ms)
}

pub fn parse_wait(raw: &str) -> Result<u64, String> {
    let ms = parse_ms(raw).map_err(|e| e.to_string())?;
    if !(100..=MAX_WAIT_MS).contains(&ms) {
        return Err(format!("timeout {raw} is out of range: use 100ms to 1h"));
    }
    Ok(ms)
}

/// What `rotate` was asked to do besides storing the value.
pub struct RotateOpts {
    pub ttl_ms: Option<u64>,
    pub grace_ms: Option<u64>,
    /// `Some(timeout)` with `--wait`.
    pub wait_ms: Option<u64>,
}

pub async fn rotate(
    client: &AdminClient,
    name: &SecretName,
    value: &SecretBytes,
    o: RotateOpts,
) -> Result<()> {
    let mut query: Vec<String> = Vec::new();
    query.extend(o.ttl_ms.map(|t| format!("ttl_ms={t}")));
    query.extend(o.grace_ms.map(|g| format!("grace_ms={g}")));
    let path =
        format!("/v1/secrets/{name}/rotate{}{}", if query.is_empty() { "" } else { "?" }, query.join("&"));
    let done: RotateResult = client
        .send_value("POST", &path, value)
        .await
        .with_context(|| format!("cannot rotate secret {name}"))?;
    let hook = done
        .pre_rotate
        .as_ref()
        .map(|h| format!(" (pre-rotate hook: {} in {} ms)", h.status, h.duration_ms))
        .unwrap_or_default();
    println!(
        "rotated secret {name} to version {}{hook}; pushed to {} consumer(s)",
        done.version, done.consumers
    );
    let Some(wait_ms) = o.wait_ms else { return Ok(()) };
    let path = format!("/v1/secrets/{name}/status?version={}&wait_ms={wait_ms}", done.version);
    let st: SecretStatus = client
        .get_within(&path, Duration::from_millis(wait_ms) + Duration::from_secs(30))
        .await
        .with_context(|| format!("cannot follow the rotation of {name}"))?;
    let late = lagging(&st);
    if !late.is_empty() {
        bail!(
            "after {}: {} of {} consumer(s) do not have version {} of {name}: {}",
            format_ms(wait_ms),
            late.len(),
            st.consumers.iter().filter(|c| c.watching).count(),
            st.wanted,
            late.join(", ")
        );
    }
    let slowest = st.consumers.iter().filter_map(|c| c.acked_at_ms).max();
    let after = slowest
        .map(|t| format!(" (the last {} ms after the rotation)", t.saturating_sub(done.rotated_at_ms)));
    let watching = st.consumers.iter().filter(|c| c.watching).count();
    let idle = st.consumers.len() - watching;
    let idle = if idle > 0 { format!("; {idle} not watching (stopped?) not counted") } else { String::new() };
    println!(
        "all {watching} consumer(s) have version {} on disk{}{idle}",
        st.wanted,
        after.unwrap_or_default()
    );
    Ok(())
}

/// The watching consumers without the wanted version, described.
pub fn lagging(st: &SecretStatus) -> Vec<String> {
    st.consumers
        .iter()
        .filter(|c| c.watching && c.version.is_none_or(|v| v < st.wanted))
        .map(|c| {
            let has =
                c.version.map(|v| format!("has v{v}")).unwrap_or_else(|| "has not acknowledged any".into());
            format!(
                "{} ({}, {}, {has})",
                c.container_name,
                seg_common::api::short_id(&c.container_id),
                c.identity
            )
        })
        .collect()
}

pub async fn status(client: &AdminClient, name: &SecretName, output: Output) -> Result<()> {
    let st: SecretStatus = client
        .get(&format!("/v1/secrets/{name}/status"))
        .await
        .with_context(|| format!("cannot get the status of secret {name}"))?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&st)?),
        Output::Table => print!("{}", status_table(&st)),
    }
    Ok(())
}

pub use crate::timefmt::rfc3339_ms as time_ms;

pub fn status_table(st: &SecretStatus) -> String {
    let rotated = st.rotated_at_ms.map(|t| format!(", rotated {}", time_ms(t))).unwrap_or_default();
    let mut out = format!("secret {}: version {}{rotated}\n", st.name, st.version);
    if let Some(p) = &st.previous {
        let until = p.until_ms.map(time_ms).unwrap_or_default();
        let line = if p.readable {
            format!(
                "previous version {}: readable until every consumer has v{}, at most until {until}\n",
                p.version, st.version
            )
        } else {
            format!("previous version {}: no longer readable\n", p.version)
        };
        out.push_str(&line);
    }
    if st.consumers.is_empty() {
        out.push_str("no consumers: no sidecar watches it or reported having it\n");
        return out;
    }
    // A NODE column only in a cluster (consumers on several nodes).
    let nodes = st.consumers.iter().any(|c| c.node.is_some());
    let mut header = vec!["CONTAINER", "NAME", "SERVICE"];
    header.extend(nodes.then_some("NODE"));
    header.extend(["VERSION", "ACKNOWLEDGED", "STREAM", "LAST HOOK"]);
    let mut table = Table::new(2).header(header);
    for c in &st.consumers {
        let mut cells = vec![
            seg_common::api::short_id(&c.container_id),
            c.container_name.clone(),
            c.identity.to_string(),
        ];
        cells.extend(nodes.then(|| c.node.clone().unwrap_or_else(|| "-".into())));
        cells.extend([
            c.version.map_or("-".into(), |v| v.to_string()),
            c.acked_at_ms.map_or("-".into(), time_ms),
            if c.watching { "open" } else { "closed" }.into(),
            c.last_hook.clone().unwrap_or_else(|| "-".into()),
        ]);
        table.row(cells);
    }
    out.push_str(&table.render());
    out.push_str(&format!(
        "{} of {} have version {}\n",
        st.consumers.iter().filter(|c| c.version.is_some_and(|v| v >= st.wanted)).count(),
        st.consumers.len(),
        st.wanted
    ));
    out
}

#[cfg(test)]
mod tests {
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
            node: None,
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
            let cmd =
                parse(&["rotate", "db", "--generate", "32", "--wait", "--timeout", "10s", "--grace", "0s"])
                    .unwrap();
            let SecretCmd::Rotate { wait, timeout, grace, .. } = cmd else { panic!() };
            assert_eq!((wait, timeout, grace), (true, Some(10_000), Some(0)));
            assert!(parse(&["rotate", "db"]).is_err(), "a source is required");
            assert!(
                parse(&["rotate", "db", "--generate", "3", "--timeout", "5s"]).is_err(),
                "--timeout needs --wait"
            );
        }
    }

    #[test]
    fn times_are_rfc3339_with_milliseconds() {
        assert_eq!(time_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(time_ms(u64::MAX), "9999-12-31T23:59:59.999Z");
    }
}
