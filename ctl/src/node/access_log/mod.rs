//! The access log: one JSON line per request on either socket, appended to
//! `<state>/access.log` (0600) with a single `write` per line so lines from
//! concurrent requests never interleave. It records who asked for what and
//! what was decided — never a secret value (entries are built from names,
//! versions and error messages, none of which carry values).
//!
//! Hook runs are logged too (action `hook`), with a `hook` object: which
//! hook, what it acted on, how it ended and how long it took.
//!
//! The log cannot be used to fill the disk: refusals and errors are rate
//! limited ([`limiter`]; what is dropped is counted and written as one
//! `suppressed` line per caller), and the file is rotated by size and
//! reopened on SIGHUP ([`sink`]). Lines with outcome `allowed` are never
//! dropped.

pub mod limiter;
pub mod sink;
#[cfg(test)]
mod tests;

use limiter::{Caller, Limiter, Limits, Summary, Verdict};
use serde::Serialize;
use sink::{Rotation, Sink};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Socket {
    Agent,
    Admin,
    /// The cluster endpoint (TCP, mutual TLS): joins, renewals, refusals.
    Cluster,
}

/// How a request ended, the `outcome` field of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestOutcome {
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
    /// A pre-rotate hook's line: the version the rotation would create (it
    /// does not exist yet, and never will if the hook fails).
    pub attempted_version: Option<u64>,
    pub outcome: RequestOutcome,
    pub reason: String,
    /// Set on hook runs only.
    pub hook: Option<HookLog>,
    /// Set on `suppressed` summary lines only.
    pub suppressed: Option<SuppressedLog>,
}

/// One hook run: `{"kind":"pre-rotate","action":"command","target":"…",
/// "status":"exit 0","duration_ms":12}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookLog {
    /// `pre-rotate` or `post-rotate`.
    pub kind: &'static str,
    /// `command`, `exec`, `signal:HUP`, `http://app:8080/reload`.
    pub action: String,
    /// What it acted on: the command line, a container, a URL; for `exec`,
    /// the service (`PROJECT/SERVICE`).
    pub target: String,
    /// An exec hook's container (`name (short id)`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// `exit 0`, `exit 3`, `timed out after 30s`, `ok`, `HTTP 500`, …
    pub status: String,
    pub duration_ms: u64,
}

/// What a `suppressed` line sums up: `{"count":2345,"code":"no_identity",
/// "first":"…","last":"…","ongoing":true}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SuppressedLog {
    /// Lines not written since the key's previous summary.
    pub count: u64,
    /// Their error code (`*` for the overflow key).
    pub code: String,
    /// When the first and the last of them happened.
    pub first: String,
    pub last: String,
    /// The flood still lasts: more summaries for this key will follow.
    pub ongoing: bool,
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
            attempted_version: None,
            outcome: RequestOutcome::Allowed,
            reason: String::new(),
            hook: None,
            suppressed: None,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    attempted_version: Option<u64>,
    outcome: RequestOutcome,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hook: Option<&'a HookLog>,
    #[serde(skip_serializing_if = "Option::is_none")]
    suppressed: Option<&'a SuppressedLog>,
}

/// Renders one entry as a JSON line (with the trailing newline), stamped
/// with milliseconds: several lines of one rotation fall in one second.
pub fn render(entry: &Entry, now_ms: u64) -> String {
    let line = Line {
        ts: crate::timefmt::rfc3339_ms(now_ms),
        socket: entry.socket,
        action: entry.action,
        identity: entry.identity.as_deref().unwrap_or("-"),
        container_id: entry.container_id.as_deref().unwrap_or("-"),
        pid: entry.pid,
        uid: entry.uid,
        secret: entry.secret.as_deref(),
        version: entry.version,
        attempted_version: entry.attempted_version,
        outcome: entry.outcome,
        reason: &entry.reason,
        hook: entry.hook.as_ref(),
        suppressed: entry.suppressed.as_ref(),
    };
    // Serializing plain strings and numbers cannot fail.
    let mut text = serde_json::to_string(&line).unwrap_or_default();
    text.push('\n');
    text
}

/// The `suppressed` line of a summary: the key's fields, the count and the
/// time span in a `suppressed` object, and a reason in the usual
/// `code: message` form.
pub fn summary_entry(s: &Summary) -> Entry {
    let mut e = Entry::new(s.key.socket, "suppressed");
    e.identity = s.identity.clone();
    match &s.key.caller {
        Caller::Container(id) => e.container_id = Some(id.clone()),
        Caller::Uid(uid) => e.uid = Some(*uid),
        Caller::Unknown | Caller::Overflow => {}
    }
    e.outcome = s.outcome;
    e.reason = match s.key.caller {
        Caller::Overflow => format!(
            "{}: {} refusal line(s) of callers beyond the tracked ones were suppressed (rate limit)",
            s.key.code, s.count
        ),
        _ => format!("{}: {} similar line(s) were suppressed (rate limit)", s.key.code, s.count),
    };
    e.suppressed = Some(SuppressedLog {
        count: s.count,
        code: s.key.code.clone(),
        first: crate::timefmt::rfc3339_ms(s.first_ms),
        last: crate::timefmt::rfc3339_ms(s.last_ms),
        ongoing: s.ongoing,
    });
    e
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open the access log {path}: {cause}")]
pub struct OpenError {
    pub path: PathBuf,
    pub cause: io::Error,
}

/// Size-based rotation and the refusal rate limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    pub rotation: Rotation,
    pub limits: Limits,
}

pub struct AccessLog {
    path: PathBuf,
    state: Mutex<State>,
    /// Sees every entry, also those the rate limit keeps out of the file
    /// (the metrics count what happened, not what was written).
    observer: std::sync::OnceLock<Arc<dyn Observer>>,
}

/// Something that counts entries (`node::metrics`).
pub trait Observer: Send + Sync {
    fn observe(&self, entry: &Entry);
}

struct State {
    sink: Sink,
    limiter: Limiter,
}

impl AccessLog {
    /// Opens (creating with mode 0600) `path` for appending, with the
    /// default rotation and rate limit.
    pub fn open(path: &Path) -> Result<AccessLog, OpenError> {
        AccessLog::open_with(path, Options::default())
    }

    pub fn open_with(path: &Path, opts: Options) -> Result<AccessLog, OpenError> {
        let sink =
            Sink::open(path, opts.rotation).map_err(|cause| OpenError { path: path.to_owned(), cause })?;
        let limiter = Limiter::new(opts.limits, now_ms());
        Ok(AccessLog {
            path: path.to_owned(),
            state: Mutex::new(State { sink, limiter }),
            observer: std::sync::OnceLock::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the entry, unless it is a refusal over the rate limit (then it
    /// is only counted). A failing log write is reported through tracing
    /// but does not fail the request: the decision has already been made.
    pub fn record(&self, entry: &Entry) {
        self.record_at(entry, now_ms());
    }

    /// Hands every entry to `observer` from now on (once).
    pub fn observe_with(&self, observer: Arc<dyn Observer>) {
        let _ = self.observer.set(observer);
    }

    pub(crate) fn record_at(&self, entry: &Entry, now_ms: u64) {
        if let Some(observer) = self.observer.get() {
            observer.observe(entry);
        }
        let mut state = self.lock();
        if state.limiter.check(entry, now_ms) == Verdict::Suppress {
            return;
        }
        let line = render(entry, now_ms);
        tracing::debug!("access: {}", line.trim_end());
        state.sink.write_line(line.as_bytes());
    }

    /// Writes the summaries that are due (called every second by [`spawn_upkeep`]).
    pub fn flush_summaries(&self) {
        self.flush_at(now_ms());
    }

    pub(crate) fn flush_at(&self, now_ms: u64) {
        let mut state = self.lock();
        let due = state.limiter.due(now_ms);
        write_summaries(&mut state.sink, &due, now_ms);
    }

    /// Opens the file at its path again (SIGHUP, after logrotate moved it).
    pub fn reopen(&self) -> io::Result<()> {
        self.lock().sink.reopen()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn write_summaries(sink: &mut Sink, due: &[Summary], now_ms: u64) {
    for s in due {
        let line = render(&summary_entry(s), now_ms);
        tracing::debug!("access: {}", line.trim_end());
        sink.write_line(line.as_bytes());
    }
}

impl Drop for AccessLog {
    /// What is still counted is written on the way out, not lost.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        let pending = state.limiter.drain();
        write_summaries(&mut state.sink, &pending, now_ms());
    }
}

/// Starts the access log's upkeep: due `suppressed` summaries are written
/// every second, and SIGHUP reopens the file at its path (logrotate's
/// `create` style). Holds the log weakly: it ends when the log is dropped.
pub fn spawn_upkeep(log: &Arc<AccessLog>) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let weak = Arc::downgrade(log);
    let mut hup = signal(SignalKind::hangup())
        .map_err(|e| tracing::error!("cannot handle SIGHUP ({e}): the access log will not be reopened on it"))
        .ok();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let hup_recv = async {
                let got = match hup.as_mut() {
                    Some(h) => h.recv().await.is_some(),
                    None => false,
                };
                if !got {
                    std::future::pending::<()>().await;
                }
            };
            let reopen = tokio::select! {
                _ = tick.tick() => false,
                _ = hup_recv => true,
            };
            let Some(log) = weak.upgrade() else { return };
            if reopen {
                match log.reopen() {
                    Ok(()) => tracing::info!("SIGHUP: reopened the access log {}", log.path().display()),
                    Err(e) => tracing::error!(
                        "SIGHUP: cannot reopen the access log {} ({e}); still writing to the old file",
                        log.path().display()
                    ),
                }
            } else {
                log.flush_summaries();
            }
        }
    })
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub use crate::timefmt::rfc3339;
