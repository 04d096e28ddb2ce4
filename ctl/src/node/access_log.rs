//! The access log: one JSON line per request on either socket, appended to
//! `<state>/access.log` (0600) with a single `write` per line so lines from
//! concurrent requests never interleave. It records who asked for what and
//! what was decided — never a secret value (entries are built from names,
//! versions and error messages, none of which carry values).
//!
//! Hook runs are logged too (action `hook`), with a `hook` object: which
//! hook, what it acted on, how it ended and how long it took.

use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Socket {
    Agent,
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allowed,
    Denied,
    Error,
}

/// One request as it is logged. `identity` and `container_id` are `None`
/// for callers that are not (or not yet) identified containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub socket: Socket,
    pub action: &'static str,
    pub identity: Option<String>,
    pub container_id: Option<String>,
    pub pid: Option<i32>,
    pub uid: Option<u32>,
    pub secret: Option<String>,
    pub version: Option<u64>,
    pub outcome: Outcome,
    pub reason: String,
    /// Set on hook runs only.
    pub hook: Option<HookLog>,
}

/// One hook run: `{"kind":"pre-rotate","action":"command","target":"…",
/// "status":"exit 0","duration_ms":12}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookLog {
    /// `pre-rotate` or `post-rotate`.
    pub kind: &'static str,
    /// `command`, `signal:HUP`, `http://app:8080/reload`.
    pub action: String,
    /// What it acted on: the command line, a container, a URL.
    pub target: String,
    /// `exit 0`, `exit 3`, `timed out after 30s`, `ok`, `HTTP 500`, …
    pub status: String,
    pub duration_ms: u64,
}

impl Entry {
    pub fn new(socket: Socket, action: &'static str) -> Entry {
        Entry {
            socket,
            action,
            identity: None,
            container_id: None,
            pid: None,
            uid: None,
            secret: None,
            version: None,
            outcome: Outcome::Allowed,
            reason: String::new(),
            hook: None,
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    socket: Socket,
    action: &'a str,
    identity: &'a str,
    container_id: &'a str,
    pid: Option<i32>,
    uid: Option<u32>,
    secret: Option<&'a str>,
    version: Option<u64>,
    outcome: Outcome,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hook: Option<&'a HookLog>,
}

/// Renders one entry as a JSON line (with the trailing newline).
pub fn render(entry: &Entry, now_secs: u64) -> String {
    let line = Line {
        ts: rfc3339(now_secs),
        socket: entry.socket,
        action: entry.action,
        identity: entry.identity.as_deref().unwrap_or("-"),
        container_id: entry.container_id.as_deref().unwrap_or("-"),
        pid: entry.pid,
        uid: entry.uid,
        secret: entry.secret.as_deref(),
        version: entry.version,
        outcome: entry.outcome,
        reason: &entry.reason,
        hook: entry.hook.as_ref(),
    };
    // Serializing plain strings and numbers cannot fail.
    let mut text = serde_json::to_string(&line).unwrap_or_default();
    text.push('\n');
    text
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open the access log {path}: {source}")]
pub struct OpenError {
    pub path: PathBuf,
    pub source: io::Error,
}

pub struct AccessLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AccessLog {
    /// Opens (creating with mode 0600) `path` for appending.
    pub fn open(path: &Path) -> Result<AccessLog, OpenError> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| OpenError { path: path.to_owned(), source })?;
        Ok(AccessLog { path: path.to_owned(), file: Mutex::new(file) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the entry. A failing log write is reported through tracing
    /// but does not fail the request: the decision has already been made.
    pub fn record(&self, entry: &Entry) {
        let line = render(entry, now_secs());
        tracing::debug!("access: {}", line.trim_end());
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(err) = file.write_all(line.as_bytes()) {
            tracing::error!("cannot append to the access log {}: {err}", self.path.display());
        }
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (UTC). Hand-rolled
/// (days-to-civil conversion) to avoid a date crate for one format.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Howard Hinnant's algorithm: days since 1970-01-01 → (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn line_has_the_documented_fields() {
        let mut e = Entry::new(Socket::Agent, "read");
        e.identity = Some("shop/app".into());
        e.container_id = Some("0123456789ab".into());
        e.pid = Some(42);
        e.secret = Some("db".into());
        e.version = Some(3);
        e.outcome = Outcome::Denied;
        e.reason = "not granted".into();
        let line = render(&e, 0);
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ts"], "1970-01-01T00:00:00Z");
        assert_eq!(v["socket"], "agent");
        assert_eq!(v["action"], "read");
        assert_eq!(v["identity"], "shop/app");
        assert_eq!(v["container_id"], "0123456789ab");
        assert_eq!(v["pid"], 42);
        assert_eq!(v["secret"], "db");
        assert_eq!(v["version"], 3);
        assert_eq!(v["outcome"], "denied");
        assert_eq!(v["reason"], "not granted");
    }

    #[test]
    fn hook_runs_carry_a_hook_object() {
        let mut e = Entry::new(Socket::Admin, "hook");
        e.secret = Some("db".into());
        e.hook = Some(HookLog {
            kind: "pre-rotate",
            action: "command".into(),
            target: "psql -c …".into(),
            status: "exit 3".into(),
            duration_ms: 12,
        });
        let v: serde_json::Value = serde_json::from_str(&render(&e, 0)).unwrap();
        assert_eq!(v["hook"]["kind"], "pre-rotate");
        assert_eq!(v["hook"]["status"], "exit 3");
        assert_eq!(v["hook"]["duration_ms"], 12);
        let plain: serde_json::Value =
            serde_json::from_str(&render(&Entry::new(Socket::Admin, "list"), 0)).unwrap();
        assert!(plain.get("hook").is_none());
    }

    #[test]
    fn unidentified_callers_show_a_dash() {
        let v: serde_json::Value =
            serde_json::from_str(&render(&Entry::new(Socket::Admin, "list"), 0)).unwrap();
        assert_eq!(v["identity"], "-");
        assert_eq!(v["container_id"], "-");
        assert_eq!(v["outcome"], "allowed");
    }

    #[test]
    fn file_is_private_and_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(&path).unwrap();
        log.record(&Entry::new(Socket::Admin, "status"));
        drop(log);
        AccessLog::open(&path).unwrap().record(&Entry::new(Socket::Admin, "list"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
