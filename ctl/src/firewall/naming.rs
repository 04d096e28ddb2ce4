//! Chain names. Every seg chain starts with `SEG-` (the only chains seg ever
//! touches), is at most 28 characters (iptables' limit), and is derived from
//! what it holds, never from a position in a list: a name stays the same
//! while its content does, so only changed chains are rewritten.

use seg_common::api::Identity;

pub const PREFIX: &str = "SEG-";
/// The chain `DOCKER-USER` jumps to.
pub const TOP: &str = "SEG-FORWARD";
/// Dispatch on the destination address (ingress checks).
pub const INGRESS: &str = "SEG-INGRESS";
/// Dispatch on the source address (egress checks).
pub const EGRESS: &str = "SEG-EGRESS";
pub const DOCKER_USER: &str = "DOCKER-USER";
pub const MAX_LEN: usize = 28;

pub fn fits(name: &str) -> bool {
    name.len() <= MAX_LEN
}

/// FNV-1a, 64 bits, as `digits` hex digits: stable across runs and builds.
pub fn hash_hex(text: &str, digits: usize) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")[..digits.min(16)].to_string()
}

/// `SEG-IN-shop-db-1a2b3c`: kind, a readable part, and a hash of the full
/// identity (the readable part may be cut, or collide after sanitizing).
pub fn service_chain(kind: &str, id: &Identity) -> String {
    let full = id.to_string();
    let readable: String =
        full.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    let head = format!("{PREFIX}{kind}-");
    let room = MAX_LEN - head.len() - 7;
    let cut: String = readable.chars().take(room).collect();
    format!("{head}{cut}-{}", hash_hex(&full, 6))
}

/// Prefix for the inner chains of a tree owned by `owner` (`SEG-1a2b3c-`).
pub fn owned_prefix(owner: &str) -> String {
    format!("{PREFIX}{}-", hash_hex(owner, 6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_distinct() {
        let a = service_chain("IN", &Identity::new(Some("shop"), "db"));
        assert!(a.starts_with("SEG-IN-shop-db-") && a.len() == "SEG-IN-shop-db-".len() + 6, "{a}");
        let long = service_chain("OUT", &Identity::new(Some("a-very-long-project-name"), "and-service"));
        assert_eq!(long.len(), MAX_LEN, "{long}");
        let x = service_chain("IN", &Identity::new(Some("a-b"), "c"));
        let y = service_chain("IN", &Identity::new(Some("a"), "b-c"));
        assert_ne!(x, y);
        assert_eq!(hash_hex("", 4), "cbf2");
    }
}
