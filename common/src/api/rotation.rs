//! The rotation part of the wire contract: the push stream, acknowledged
//! versions, post-rotate notifications (agent socket) and rotation, hooks
//! and consumer status (admin socket). Nothing here ever carries a value.
//!
//! Agent socket:
//! - `GET /v1/watch[?secrets=a,b]` → `200`, chunked, one [`WatchEvent`] JSON
//!   object per line, for as long as the connection lives. The first event is
//!   [`WatchEvent::Hello`]; [`WatchEvent::Ping`] comes every `ping_ms`.
//! - `GET /v1/secrets/{name}?version=N` → that version while it is current, or
//!   while it is the previous one and its grace period is open (`410` after).
//! - `POST /v1/ack` [`AckRequest`] → `204`: "this version is on my disk".
//! - `POST /v1/notify` [`NotifyRequest`] → [`NotifyResult`]: run the
//!   post-rotate action the sidecar declared.
//!
//! Admin socket:
//! - `POST /v1/secrets/{name}/rotate[?ttl_ms=N&grace_ms=N]` body = value →
//!   [`RotateResult`]
//! - `GET /v1/secrets/{name}/hooks` → [`Hooks`]; `PUT …/hooks` [`SetHooks`] → [`Hooks`]
//! - `GET /v1/secrets/{name}/status[?version=N&wait_ms=N]` → [`SecretStatus`];
//!   with `wait_ms`, answers once every online consumer has `version` (default:
//!   the current one) or when `wait_ms` has passed.

use super::{GrantedSecret, Identity};
use crate::name::SecretName;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A pre- or post-rotate command runs at most this long by default…
pub const DEFAULT_HOOK_TIMEOUT_MS: u64 = 30_000;
/// …and never longer than this (nor shorter than 100 ms).
pub const MAX_HOOK_TIMEOUT_MS: u64 = 600_000;
pub const MIN_HOOK_TIMEOUT_MS: u64 = 100;
/// Longest hook command line accepted.
pub const MAX_HOOK_COMMAND_LEN: usize = 4096;
/// The previous version stays readable until every consumer acknowledged
/// the new one, but at most this long (unless `--grace` says otherwise).
pub const DEFAULT_GRACE_MS: u64 = 10 * 60 * 1000;
/// Longest grace period accepted.
pub const MAX_GRACE_MS: u64 = 24 * 3600 * 1000;
/// Longest `wait_ms` of a status request.
pub const MAX_WAIT_MS: u64 = 3600 * 1000;

/// One line of the watch stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WatchEvent {
    /// First line: what the caller may read now, and how often pings come.
    Hello { secrets: Vec<GrantedSecret>, ping_ms: u64 },
    /// A new current version (a rotation, or a new grant): fetch it.
    Version { name: SecretName, version: u64, ttl_ms: u64 },
    /// No longer granted to the caller: wipe it now.
    Revoked { name: SecretName },
    /// The secret was removed: wipe it now.
    Removed { name: SecretName },
    /// Keep-alive; a stream silent for three ping intervals is dead.
    Ping,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckRequest {
    pub name: SecretName,
    pub version: u64,
}

/// A secret whose bytes on disk changed, with the version now there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    pub name: SecretName,
    pub version: u64,
}

/// What a sidecar asks the controller to do after files changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyRequest {
    /// `signal:HUP`, `http://SERVICE[:PORT]/PATH` or `command`.
    pub action: String,
    /// The service to signal or POST to (same project); default: the one the
    /// sidecar acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub secrets: Vec<Changed>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyResult {
    pub action: String,
    /// Containers signalled, URLs posted to, or commands run.
    pub targets: Vec<String>,
}

/// A post-rotate action as a sidecar declares it (`SEG_ON_ROTATE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostRotate {
    /// Send this signal (canonical `SIGHUP` form) to the app's containers.
    Signal(&'static str),
    /// POST `{"secrets":[{"name","version"}]}` to this URL; its host is a
    /// service of the sidecar's own project.
    Http(HttpTarget),
    /// Run the post-rotate command the operator registered for each changed
    /// secret (`segctl secret hook NAME --post-rotate CMD`).
    Command,
}

/// Signals a sidecar may ask for: the conventional "reload" signals only,
/// so a sidecar cannot stop or kill its app.
pub const ALLOWED_SIGNALS: [&str; 4] = ["SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// A compose service name (resolved to its container's address).
    pub service: String,
    pub port: u16,
    /// Starts with `/`.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad post-rotate action {shown:?}: {why}")]
pub struct BadAction {
    pub shown: String,
    pub why: String,
}

impl PostRotate {
    /// Parses `signal:HUP` (or `signal:SIGHUP`), `http://SERVICE[:PORT]/PATH`
    /// (also spelled `http:http://…`) or `command`.
    pub fn parse(raw: &str) -> Result<PostRotate, BadAction> {
        let bad = |why: &str| BadAction { shown: raw.chars().take(80).collect(), why: why.to_owned() };
        let raw = raw.trim();
        if raw == "command" {
            return Ok(PostRotate::Command);
        }
        if let Some(sig) = raw.strip_prefix("signal:") {
            let upper = sig.trim().to_ascii_uppercase();
            let want = format!("SIG{}", upper.trim_start_matches("SIG"));
            return ALLOWED_SIGNALS
                .iter()
                .find(|s| **s == want)
                .map(|s| PostRotate::Signal(s))
                .ok_or_else(|| bad("allowed signals are HUP, USR1, USR2 and WINCH"));
        }
        let url = raw.strip_prefix("http:").filter(|u| u.starts_with("http://")).unwrap_or(raw);
        if let Some(rest) = url.strip_prefix("http://") {
            return parse_http(rest).map(PostRotate::Http).map_err(|why| bad(&why));
        }
        Err(bad("use signal:HUP, http://SERVICE[:PORT]/PATH or command"))
    }
}

fn parse_http(rest: &str) -> Result<HttpTarget, String> {
    if rest.len() > 512 {
        return Err("the URL is longer than 512 characters".into());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if path.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'#') {
        return Err("the path has spaces, control characters or a fragment".into());
    }
    let (service, port) = match authority.split_once(':') {
        Some((s, p)) => (s, p.parse::<u16>().ok().filter(|p| *p > 0).ok_or("bad port")?),
        None => (authority, 80),
    };
    super::validate_label("service", service)
        .map_err(|e| format!("the host must be a service of the same project: {e}"))?;
    Ok(HttpTarget { service: service.to_owned(), port, path: path.to_owned() })
}

impl fmt::Display for PostRotate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PostRotate::Signal(s) => write!(f, "signal:{}", s.trim_start_matches("SIG")),
            PostRotate::Http(h) => write!(f, "http://{}:{}{}", h.service, h.port, h.path),
            PostRotate::Command => f.write_str("command"),
        }
    }
}

/// A hook: a host command run by the controller (`/bin/sh -c COMMAND`),
/// or, with `exec`, a command run inside the containers of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookSpec {
    /// The host command; for an exec hook, [`ExecHook::shown`] (display only).
    pub command: String,
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<super::ExecHook>,
}

impl HookSpec {
    /// Why this hook cannot be stored, if it cannot.
    pub fn problem(&self) -> Option<String> {
        if let Some(problem) = self.exec.as_ref().and_then(super::ExecHook::problem) {
            return Some(problem);
        }
        if self.command.trim().is_empty() {
            return Some("the hook command is empty".into());
        }
        if self.command.len() > MAX_HOOK_COMMAND_LEN {
            return Some(format!("the hook command is longer than {MAX_HOOK_COMMAND_LEN} bytes"));
        }
        if self.command.contains('\0') {
            return Some("the hook command contains a NUL byte".into());
        }
        if !(MIN_HOOK_TIMEOUT_MS..=MAX_HOOK_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Some(format!("hook timeout {} ms is out of range: use 100ms to 10m", self.timeout_ms));
        }
        None
    }
}

/// The hooks of one secret, kept with its metadata in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hooks {
    /// Runs with the new value on stdin before a rotation is distributed;
    /// a failure aborts the rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_rotate: Option<HookSpec>,
    /// Runs when a sidecar that declared `SEG_ON_ROTATE=command` reports a
    /// change; gets `{"secret","version","container_id",…}` on stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_rotate: Option<HookSpec>,
}

impl Hooks {
    pub fn is_empty(&self) -> bool {
        self.pre_rotate.is_none() && self.post_rotate.is_none()
    }
}

/// A change to a secret's hooks; fields left out keep their hook.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetHooks {
    #[serde(default)]
    pub pre_rotate: Option<HookSpec>,
    #[serde(default)]
    pub post_rotate: Option<HookSpec>,
    #[serde(default)]
    pub clear_pre_rotate: bool,
    #[serde(default)]
    pub clear_post_rotate: bool,
}

/// How one hook run ended, as reported and logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRun {
    /// `exit 0`, `exit 3`, `killed by signal 9`, `timed out after 1s`, …
    pub status: String,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateResult {
    pub name: SecretName,
    pub version: u64,
    /// The version it replaced, readable during the grace period.
    pub previous: Option<u64>,
    /// Online consumers told about the new version.
    pub consumers: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_rotate: Option<HookRun>,
    /// When the controller received the rotation, ms since the epoch.
    pub rotated_at_ms: u64,
}

/// The previous version of a secret and whether consumers may still read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousVersion {
    pub version: u64,
    pub readable: bool,
    /// The latest end of the grace period (it ends sooner once every
    /// consumer acknowledged the new version), ms since the epoch.
    pub until_ms: Option<u64>,
}

/// A container that consumes a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumer {
    pub container_id: String,
    pub container_name: String,
    pub identity: Identity,
    /// The version it reported on disk.
    pub version: Option<u64>,
    /// When it reported it, ms since the epoch.
    pub acked_at_ms: Option<u64>,
    /// It has a watch stream open now.
    pub watching: bool,
    /// The last post-rotate action run for it, and how it went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_hook: Option<String>,
    /// The cluster node whose sidecar stream it is on (`None` on one host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretStatus {
    pub name: SecretName,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousVersion>,
    pub consumers: Vec<Consumer>,
    /// The version waited for (the current one unless asked otherwise).
    pub wanted: u64,
    /// Every watching consumer has `wanted` (or newer) on disk.
    pub complete: bool,
    /// When the current version was rotated in by this controller, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_rotate_actions_parse_and_print() {
        assert_eq!(PostRotate::parse("signal:HUP").unwrap(), PostRotate::Signal("SIGHUP"));
        assert_eq!(PostRotate::parse("signal:sigusr1").unwrap(), PostRotate::Signal("SIGUSR1"));
        assert_eq!(PostRotate::parse("command").unwrap(), PostRotate::Command);
        let h = PostRotate::parse("http://app:8080/-/reload").unwrap();
        assert_eq!(h.to_string(), "http://app:8080/-/reload");
        let h = PostRotate::parse("http:http://app").unwrap();
        assert_eq!(h.to_string(), "http://app:80/");
        assert_eq!(PostRotate::parse("signal:HUP").unwrap().to_string(), "signal:HUP");
    }

    #[test]
    fn dangerous_or_odd_actions_are_refused() {
        for bad in [
            "signal:KILL",
            "signal:TERM",
            "exec:rm -rf /",
            "https://app/x",
            "http://10.0.0.1:99999/",
            "http://../x",
            "http://app/a b",
            "http://a.b@evil/x",
        ] {
            assert!(PostRotate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn events_are_tagged_json_lines() {
        let name = SecretName::parse("db").unwrap();
        let e = WatchEvent::Version { name: name.clone(), version: 3, ttl_ms: 1000 };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(text, r#"{"event":"version","name":"db","version":3,"ttl_ms":1000}"#);
        assert_eq!(serde_json::to_string(&WatchEvent::Ping).unwrap(), r#"{"event":"ping"}"#);
        assert_eq!(serde_json::from_str::<WatchEvent>(&text).unwrap(), e);
    }

    #[test]
    fn hook_specs_are_checked() {
        let ok = HookSpec { command: "true".into(), timeout_ms: 1000, exec: None };
        assert!(ok.problem().is_none());
        assert!(HookSpec { command: " ".into(), ..ok.clone() }.problem().is_some());
        assert!(HookSpec { timeout_ms: 10, ..ok.clone() }.problem().is_some());
        assert!(HookSpec { command: "x".repeat(5000), ..ok }.problem().is_some());
    }
}
