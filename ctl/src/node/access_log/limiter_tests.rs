//! The limiter against a hand-driven clock: no sleeps.

use super::*;

const T0: u64 = 1_000_000;

fn refusal(container: Option<&str>, uid: u32, code: &str) -> Entry {
    let mut e = Entry::new(Socket::Agent, "read");
    e.container_id = container.map(str::to_owned);
    e.uid = Some(uid);
    e.outcome = RequestOutcome::Denied;
    e.reason = format!("{code}: refused");
    e
}

/// Calls `check` `n` times at `at_ms` and counts the lines written.
fn written(l: &mut Limiter, e: &Entry, n: usize, at_ms: u64) -> usize {
    (0..n).filter(|_| l.check(e, at_ms) == Verdict::Write).count()
}

#[test]
fn allowed_lines_always_pass() {
    let mut l = Limiter::new(Limits::default(), T0);
    let ok = Entry::new(Socket::Agent, "read");
    assert_eq!(written(&mut l, &ok, 10_000, T0), 10_000);
    assert_eq!(l.tracked(), 0);
    assert!(l.due(T0 + 60_000).is_empty());
}

#[test]
fn one_key_gets_a_burst_then_one_a_second() {
    let mut l = Limiter::new(Limits::default(), T0);
    let e = refusal(Some("c1"), 0, "no_identity");
    assert_eq!(written(&mut l, &e, 100, T0), 10);
    assert_eq!(written(&mut l, &e, 100, T0 + 999), 0);
    assert_eq!(written(&mut l, &e, 100, T0 + 1_000), 1);
    assert_eq!(written(&mut l, &e, 100, T0 + 3_000), 2);
    // A long pause refills only up to the burst.
    assert_eq!(written(&mut l, &e, 100, T0 + 600_000), 10);
}

#[test]
fn keys_are_socket_caller_and_code() {
    let mut l = Limiter::new(Limits::default(), T0);
    assert_eq!(written(&mut l, &refusal(Some("c1"), 0, "no_identity"), 20, T0), 10);
    assert_eq!(written(&mut l, &refusal(Some("c2"), 0, "no_identity"), 20, T0), 10);
    assert_eq!(written(&mut l, &refusal(Some("c1"), 0, "not_granted"), 20, T0), 10);
    // Host callers are keyed by uid.
    assert_eq!(written(&mut l, &refusal(None, 1000, "not_a_container"), 20, T0), 10);
    assert_eq!(written(&mut l, &refusal(None, 1001, "not_a_container"), 20, T0), 10);
    let mut admin = refusal(None, 1000, "not_a_container");
    admin.socket = Socket::Admin;
    assert_eq!(written(&mut l, &admin, 20, T0), 10);
    assert_eq!(l.tracked(), 6);
}

#[test]
fn the_global_ceiling_binds_many_callers() {
    let mut l = Limiter::new(Limits::default(), T0);
    // 1,000 containers, 5 refusals each, in the same instant: 100 lines in all.
    let total: usize =
        (0..1_000).map(|i| written(&mut l, &refusal(Some(&format!("c{i}")), 0, "x"), 5, T0)).sum();
    assert_eq!(total, 100);
    // One second later: 100 more at most, however many ask.
    let total: usize =
        (0..1_000).map(|i| written(&mut l, &refusal(Some(&format!("c{i}")), 0, "x"), 5, T0 + 1_000)).sum();
    assert!(total <= 100, "{total}");
    // Everything refused was counted: 5,000 + 5,000 asked, `written` lines.
    let counted: u64 = l.drain().iter().map(|s| s.count).sum();
    assert_eq!(counted as usize + 100 + total, 10_000);
}

#[test]
fn a_summary_comes_when_the_flood_ends() {
    let mut l = Limiter::new(Limits::default(), T0);
    let e = refusal(Some("c1"), 0, "no_identity");
    written(&mut l, &e, 50, T0);
    written(&mut l, &e, 50, T0 + 500);
    assert!(l.due(T0 + 2_499).is_empty(), "quiet for less than 2 s");
    let due = l.due(T0 + 2_500);
    assert_eq!(due.len(), 1);
    let s = &due[0];
    assert_eq!((s.count, s.first_ms, s.last_ms, s.ongoing), (90, T0, T0 + 500, false));
    assert_eq!(
        s.key,
        Key { socket: Socket::Agent, caller: Caller::Container("c1".into()), code: "no_identity".into() }
    );
    assert_eq!(s.outcome, RequestOutcome::Denied);
    assert!(l.due(T0 + 10_000).is_empty(), "reported once");
}

#[test]
fn a_lasting_flood_is_reported_every_ten_seconds() {
    let mut l = Limiter::new(Limits::default(), T0);
    let e = refusal(Some("c1"), 0, "no_identity");
    let mut reports = Vec::new();
    // 100 refusals every 100 ms for 35 s, the due check every second.
    for step in 0..350u64 {
        let now = T0 + step * 100;
        written(&mut l, &e, 100, now);
        if step % 10 == 0 {
            reports.extend(l.due(now));
        }
    }
    assert_eq!(reports.len(), 3, "{reports:?}");
    // Due 10 s after the first suppression of the report; checked once a second.
    assert!(reports.iter().all(|s| s.ongoing && s.last_ms - s.first_ms <= 11_000), "{reports:?}");
    reports.extend(l.due(T0 + 40_000));
    assert_eq!(reports.len(), 4);
    assert!(!reports[3].ongoing);
    // Every refusal is either a line or counted.
    let counted: u64 = reports.iter().map(|s| s.count).sum();
    assert_eq!(counted, 35_000 - (10 + 34));
}

#[test]
fn keys_are_capped_and_idle_ones_forgotten() {
    let limits = Limits { max_keys: 3, global_burst: 1_000, ..Default::default() };
    let mut l = Limiter::new(limits, T0);
    for i in 0..10 {
        written(&mut l, &refusal(Some(&format!("c{i}")), 0, "x"), 20, T0);
    }
    // Three keys, plus the overflow key that counts everyone else.
    assert_eq!(l.tracked(), 4);
    let due = l.due(T0 + 2_000);
    let overflow = due.iter().find(|s| s.key.caller == Caller::Overflow).expect("overflow summary");
    assert_eq!(overflow.count, 7 * 20 - 10);
    assert_eq!(overflow.identity, None);
    // Once quiet and refilled, keys are dropped: memory goes back to nothing.
    assert!(l.due(T0 + 60_000).is_empty());
    assert_eq!(l.tracked(), 0);
}

#[test]
fn a_clock_stepping_back_does_not_refill() {
    let mut l = Limiter::new(Limits::default(), T0);
    let e = refusal(Some("c1"), 0, "x");
    assert_eq!(written(&mut l, &e, 20, T0 + 5_000), 10);
    assert_eq!(written(&mut l, &e, 20, T0), 0);
    assert_eq!(written(&mut l, &e, 20, T0 + 5_999), 0);
    assert_eq!(written(&mut l, &e, 20, T0 + 6_000), 1);
}

#[test]
fn the_code_is_the_reason_up_to_the_colon() {
    let mut e = refusal(Some("c1"), 0, "not_granted");
    assert_eq!(Key::of(&e).code, "not_granted");
    e.reason = "x".repeat(500);
    assert_eq!(Key::of(&e).code.len(), MAX_CODE_LEN);
}
