//! Address ranges and the decisions a dispatch tree makes for them
//! (`nft_render.rs` flattens trees into these): a prefix as a range, the
//! parts of a domain inside and outside one, adjacent equal decisions
//! merged back whole.

use super::nft_cache::{Outcome, Span};
use crate::policy::{Cidr, Family};
use std::net::IpAddr;

pub(super) fn outcome((goto, target): &(bool, String)) -> Outcome {
    match (goto, target.as_str()) {
        (false, "RETURN") => Outcome::Return,
        (false, "DROP") => Outcome::Drop,
        (_, chain) => Outcome::Goto(chain.to_string()),
    }
}

pub(super) fn max(family: Family) -> u128 {
    match family {
        Family::V4 => u32::MAX as u128,
        Family::V6 => u128::MAX,
    }
}

pub(super) fn span(c: &Cidr) -> Span {
    let (width, host_bits) = (c.family().width(), c.family().width() - c.prefix_len());
    let start = match c.addr() {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    };
    let size_minus_one = if host_bits == 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
    debug_assert!(width >= host_bits);
    (start, start + size_minus_one)
}

/// The parts of `domain` inside and outside `s`.
pub(super) fn split(domain: &[Span], s: Span) -> (Vec<Span>, Vec<Span>) {
    let (mut inside, mut outside) = (Vec::new(), Vec::new());
    for &(a, b) in domain {
        if b < s.0 || a > s.1 {
            outside.push((a, b));
            continue;
        }
        inside.push((a.max(s.0), b.min(s.1)));
        if a < s.0 {
            outside.push((a, s.0 - 1));
        }
        if b > s.1 {
            outside.push((s.1 + 1, b));
        }
    }
    (inside, outside)
}

/// Adjacent ranges with the same decision as one (sorted input), so that
/// the pieces a tree cut a prefix into come back whole: equal decisions,
/// equal elements.
pub(super) fn merge(spans: Vec<(Span, Outcome)>) -> Vec<(Span, Outcome)> {
    let mut out: Vec<(Span, Outcome)> = Vec::new();
    for (s, o) in spans {
        match out.last_mut() {
            Some((last, lo)) if *lo == o && last.1.checked_add(1) == Some(s.0) => last.1 = s.1,
            _ => out.push((s, o)),
        }
    }
    out
}
