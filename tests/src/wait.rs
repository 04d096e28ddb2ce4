//! Polling with a deadline. Every wait of the harness goes through [`poll`],
//! so they all try first, give up at the same point and differ only in what
//! they say when they do.

use std::time::{Duration, Instant};

/// Calls `f` every `every` until it returns `Some`; `None` once a call has
/// returned `None` after `timeout` had passed.
pub(crate) fn poll<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Polls `f` every 100 ms until it returns `Some` or `timeout` passes
/// (then panics naming `what`).
pub fn wait_until<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    poll(timeout, Duration::from_millis(100), f)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}
