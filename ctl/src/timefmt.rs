//! RFC 3339 timestamps (UTC), as the access log, `segctl` and audit show
//! them: one spelling in one place, at the bottom of the module graph.

use std::time::{Duration, UNIX_EPOCH};

/// 9999-12-31T23:59:59Z: RFC 3339 has no spelling for later years.
pub const LAST_RFC3339_SECS: u64 = 253_402_300_799;

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch. A stamp past year
/// 9999 is corrupt; it shows as the last one rather than panicking
/// (humantime refuses to format it).
pub fn rfc3339(secs: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(secs.min(LAST_RFC3339_SECS));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// `…T12:00:00.123Z` for milliseconds since the epoch.
pub fn rfc3339_ms(ms: u64) -> String {
    let ms = ms.min(LAST_RFC3339_SECS * 1000 + 999);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}
