//! `segctl secret rotate|status|hook`: rotate a secret into every running
//! consumer, see who has which version, and manage rotation hooks.

use super::client::AdminClient;
use super::duration::{format_ms, parse_ms};
use super::Output;
use crate::node::access_log::rfc3339;
use anyhow::{bail, Context, Result};
use seg_common::api::{
    HookSpec, Hooks, RotateResult, SecretStatus, SetHooks, DEFAULT_HOOK_TIMEOUT_MS, MAX_GRACE_MS,
    MAX_HOOK_TIMEOUT_MS, MAX_WAIT_MS, MIN_HOOK_TIMEOUT_MS,
};
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

pub fn parse_hook_timeout(raw: &str) -> Result<u64, String> {
    let ms = parse_ms(raw).map_err(|e| e.to_string())?;
    if !(MIN_HOOK_TIMEOUT_MS..=MAX_HOOK_TIMEOUT_MS).contains(&ms) {
        return Err(format!("hook timeout {raw} is out of range: use 100ms to 10m"));
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
    println!("all {watching} consumer(s) have version {} on disk{}{idle}", st.wanted, after.unwrap_or_default());
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
                crate::node::agent::short_id(&c.container_id),
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

/// `…T12:00:00.123Z` for milliseconds since the epoch.
pub fn time_ms(ms: u64) -> String {
    let secs = rfc3339(ms / 1000);
    format!("{}.{:03}Z", secs.trim_end_matches('Z'), ms % 1000)
}

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
    let head = ["CONTAINER", "NAME", "SERVICE", "VERSION", "ACKNOWLEDGED", "STREAM", "LAST HOOK"];
    let rows: Vec<[String; 7]> = st
        .consumers
        .iter()
        .map(|c| {
            [
                crate::node::agent::short_id(&c.container_id),
                c.container_name.clone(),
                c.identity.to_string(),
                c.version.map_or("-".into(), |v| v.to_string()),
                c.acked_at_ms.map_or("-".into(), time_ms),
                if c.watching { "open" } else { "closed" }.into(),
                c.last_hook.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let width = |i: usize| rows.iter().map(|r| r[i].len()).chain([head[i].len()]).max().unwrap_or(0);
    let widths: Vec<usize> = (0..6).map(width).collect();
    let mut line = |cells: [&str; 7]| {
        for (i, w) in widths.iter().enumerate() {
            out.push_str(&format!("{:<w$}  ", cells[i]));
        }
        out.push_str(cells[6]);
        out.push('\n');
    };
    line(head);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6]]);
    }
    out.push_str(&format!(
        "{} of {} have version {}\n",
        st.consumers.iter().filter(|c| c.version.is_some_and(|v| v >= st.wanted)).count(),
        st.consumers.len(),
        st.wanted
    ));
    out
}

/// What `segctl secret hook` was asked to change.
pub struct HookArgs {
    pub pre_rotate: Option<String>,
    pub post_rotate: Option<String>,
    pub timeout_ms: Option<u64>,
    pub no_pre_rotate: bool,
    pub no_post_rotate: bool,
}

pub async fn hook(client: &AdminClient, name: &SecretName, a: HookArgs, output: Output) -> Result<()> {
    let path = format!("/v1/secrets/{name}/hooks");
    let changing = a.pre_rotate.is_some() || a.post_rotate.is_some() || a.no_pre_rotate || a.no_post_rotate;
    let hooks: Hooks = if changing {
        let timeout_ms = a.timeout_ms.unwrap_or(DEFAULT_HOOK_TIMEOUT_MS);
        let spec = |command: String| HookSpec { command, timeout_ms };
        let change = SetHooks {
            pre_rotate: a.pre_rotate.map(spec),
            post_rotate: a.post_rotate.map(spec),
            clear_pre_rotate: a.no_pre_rotate,
            clear_post_rotate: a.no_post_rotate,
        };
        client
            .call("PUT", &path, Some(&change))
            .await
            .with_context(|| format!("cannot set the hooks of {name}"))?
    } else {
        if a.timeout_ms.is_some() {
            bail!("--timeout applies to a hook set in the same command: add --pre-rotate CMD or --post-rotate CMD");
        }
        client.get(&path).await.with_context(|| format!("cannot read the hooks of {name}"))?
    };
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&hooks)?),
        Output::Table => print!("{}", hooks_table(name, &hooks)),
    }
    Ok(())
}

pub fn hooks_table(name: &SecretName, hooks: &Hooks) -> String {
    let show = |h: &Option<HookSpec>| match h {
        Some(h) => format!("{} (timeout {})", h.command, format_ms(h.timeout_ms)),
        None => "-".into(),
    };
    format!(
        "{name}\n  pre-rotate   {}\n  post-rotate  {}\n",
        show(&hooks.pre_rotate),
        show(&hooks.post_rotate)
    )
}

#[cfg(test)]
#[path = "rotation_tests.rs"]
mod tests;
