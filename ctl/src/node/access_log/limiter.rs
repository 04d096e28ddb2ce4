//! Rate limit of refusal lines, so a caller that floods a socket with
//! refused requests cannot fill the disk through the access log.
//!
//! Lines with outcome `allowed` always pass. Refusals and errors pass
//! through two token buckets: one per [`Key`] (socket, caller, error code)
//! and one shared by every key, so a thousand containers cannot each spend
//! a budget of their own. What does not pass is counted per key and turned
//! into a [`Summary`] once the key has been quiet for a while, or every
//! `report_ms` while the flood lasts.
//!
//! Pure and clock-injected: every call takes `now_ms` (milliseconds since
//! the epoch), so tests drive time without sleeping. A clock that steps back
//! only pauses the refill.

use super::{Entry, RequestOutcome, Socket};
use std::collections::HashMap;

/// Budgets of the limiter. Rates are lines per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Refusal lines one key may write in a burst…
    pub burst: u32,
    /// …and then per second.
    pub per_sec: u32,
    /// Refusal lines all keys together may write in a burst…
    pub global_burst: u32,
    /// …and then per second.
    pub global_per_sec: u32,
    /// Keys tracked at once; refusals of callers beyond it share one
    /// overflow key per socket, so memory stays bounded under any flood.
    pub max_keys: usize,
    /// A key's suppression has ended once it had nothing suppressed for this long.
    pub quiet_ms: u64,
    /// While a suppression lasts, a summary at least this often.
    pub report_ms: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            burst: 10,
            per_sec: 1,
            global_burst: 100,
            global_per_sec: 100,
            max_keys: 1024,
            quiet_ms: 2_000,
            report_ms: 10_000,
        }
    }
}

/// Who a refusal is charged to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    /// An identified (possibly unlabelled) container, by short id.
    Container(String),
    /// A caller that is not (or not yet) a known container, by uid.
    Uid(u32),
    Unknown,
    /// Callers beyond [`Limits::max_keys`], together.
    Overflow,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub socket: Socket,
    pub caller: Caller,
    /// The error code (the part of `reason` before the first `:`).
    pub code: String,
}

/// Codes are short identifiers; a longer prefix is cut so a key stays small.
const MAX_CODE_LEN: usize = 64;

impl Key {
    pub fn of(entry: &Entry) -> Key {
        let caller = match (&entry.container_id, entry.uid) {
            (Some(id), _) => Caller::Container(id.clone()),
            (None, Some(uid)) => Caller::Uid(uid),
            (None, None) => Caller::Unknown,
        };
        let code = entry.reason.split_once(':').map_or(entry.reason.as_str(), |(code, _)| code);
        Key { socket: entry.socket, caller, code: code.trim().chars().take(MAX_CODE_LEN).collect() }
    }

    fn overflow(socket: Socket) -> Key {
        Key { socket, caller: Caller::Overflow, code: "*".into() }
    }
}

/// A token bucket in thousandths of a token, so integer refills stay exact.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli: u64,
    at_ms: u64,
}

impl Bucket {
    fn full(cap: u32, now_ms: u64) -> Bucket {
        Bucket { milli: u64::from(cap) * 1000, at_ms: now_ms }
    }

    /// `per_sec` tokens a second is `per_sec` thousandths a millisecond.
    fn refill(&mut self, cap: u32, per_sec: u32, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.at_ms);
        let cap = u64::from(cap) * 1000;
        self.milli = cap.min(self.milli.saturating_add(elapsed.saturating_mul(u64::from(per_sec))));
        self.at_ms = self.at_ms.max(now_ms);
    }

    fn has_one(&self) -> bool {
        self.milli >= 1000
    }

    fn take(&mut self) {
        self.milli -= 1000;
    }

    fn is_full(&self, cap: u32) -> bool {
        self.milli >= u64::from(cap) * 1000
    }
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    count: u64,
    first_ms: u64,
    last_ms: u64,
}

#[derive(Debug)]
struct KeyState {
    bucket: Bucket,
    pending: Option<Pending>,
    /// Of the last refusal seen, for the summary line.
    identity: Option<String>,
    outcome: RequestOutcome,
}

/// What the lines suppressed for one key add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub key: Key,
    pub identity: Option<String>,
    pub outcome: RequestOutcome,
    pub count: u64,
    pub first_ms: u64,
    pub last_ms: u64,
    /// The suppression still lasts (a periodic report, more may follow).
    pub ongoing: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Write,
    Suppress,
}

#[derive(Debug)]
pub struct Limiter {
    limits: Limits,
    keys: HashMap<Key, KeyState>,
    global: Bucket,
}

impl Limiter {
    pub fn new(limits: Limits, now_ms: u64) -> Limiter {
        Limiter { limits, keys: HashMap::new(), global: Bucket::full(limits.global_burst, now_ms) }
    }

    /// Decides whether `entry` is written; a suppressed one is counted.
    pub fn check(&mut self, entry: &Entry, now_ms: u64) -> Verdict {
        if entry.outcome == RequestOutcome::Allowed {
            return Verdict::Write;
        }
        let mut key = Key::of(entry);
        if !self.keys.contains_key(&key) && self.keys.len() >= self.limits.max_keys {
            key = Key::overflow(entry.socket);
        }
        let overflow = key.caller == Caller::Overflow;
        let limits = self.limits;
        let state = self.keys.entry(key).or_insert_with(|| KeyState {
            bucket: Bucket::full(limits.burst, now_ms),
            pending: None,
            identity: None,
            outcome: entry.outcome,
        });
        state.bucket.refill(limits.burst, limits.per_sec, now_ms);
        self.global.refill(limits.global_burst, limits.global_per_sec, now_ms);
        state.identity = if overflow { None } else { entry.identity.clone() };
        state.outcome = entry.outcome;
        if state.bucket.has_one() && self.global.has_one() {
            state.bucket.take();
            self.global.take();
            return Verdict::Write;
        }
        let p = state.pending.get_or_insert(Pending { count: 0, first_ms: now_ms, last_ms: now_ms });
        p.count += 1;
        p.last_ms = now_ms;
        Verdict::Suppress
    }

    /// The summaries due at `now_ms` (suppressions that ended, or that have
    /// lasted `report_ms` since their last report); forgets idle keys.
    pub fn due(&mut self, now_ms: u64) -> Vec<Summary> {
        let limits = self.limits;
        let mut out = Vec::new();
        for (key, state) in &mut self.keys {
            let Some(p) = state.pending else { continue };
            let ended = now_ms.saturating_sub(p.last_ms) >= limits.quiet_ms;
            if ended || now_ms.saturating_sub(p.first_ms) >= limits.report_ms {
                out.push(summary(key, state, p, !ended));
                state.pending = None;
            }
        }
        // A key with nothing pending and a full bucket is the same as no key.
        self.keys.retain(|_, s| {
            s.bucket.refill(limits.burst, limits.per_sec, now_ms);
            s.pending.is_some() || !s.bucket.is_full(limits.burst)
        });
        sort(&mut out);
        out
    }

    /// Every pending summary, due or not (at shutdown).
    pub fn drain(&mut self) -> Vec<Summary> {
        let mut out: Vec<Summary> = (self.keys.iter_mut())
            .filter_map(|(key, state)| state.pending.take().map(|p| summary(key, state, p, false)))
            .collect();
        sort(&mut out);
        out
    }

    /// Keys tracked now (bounded by `max_keys` + one overflow key per socket).
    pub fn tracked(&self) -> usize {
        self.keys.len()
    }
}

fn summary(key: &Key, state: &KeyState, p: Pending, ongoing: bool) -> Summary {
    Summary {
        key: key.clone(),
        identity: state.identity.clone(),
        outcome: state.outcome,
        count: p.count,
        first_ms: p.first_ms,
        last_ms: p.last_ms,
        ongoing,
    }
}

/// Oldest first, so the log reads in time order.
fn sort(out: &mut [Summary]) {
    out.sort_by_key(|s| (s.first_ms, s.last_ms));
}

#[cfg(test)]
#[path = "limiter_tests.rs"]
mod tests;
