//! Human durations for lease TTLs: `500ms`, `2s`, `5m`, `1h`, `1d`, and
//! sums such as `1h30m`. A bare number is refused: "5" could mean seconds
//! or minutes, and guessing wrong on a lease is costly.

use seg_common::api::{MAX_TTL_MS, MIN_TTL_MS};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("duration is empty; write e.g. 30s, 5m or 1h")]
    Empty,
    #[error("{0:?} is not a duration; write a number and a unit (ms, s, m, h, d), e.g. 30s, 5m, 1h30m")]
    Malformed(String),
    #[error("{0:?} is too long a duration")]
    Overflow(String),
}

/// The units we document. humantime knows more (`min`, `weeks`, `us`, …)
/// and fractions; a lease TTL keeps to these whole units.
const UNITS: [&str; 5] = ["ms", "s", "m", "h", "d"];

/// Parses a duration into milliseconds.
pub fn parse_ms(raw: &str) -> Result<u64, DurationError> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed(raw.chars().take(40).collect());
    let overflow = || DurationError::Overflow(raw.chars().take(40).collect());
    // humantime also takes spaces, signs' neighbours and `1.5h`; refuse
    // anything but digit runs followed by one of our units.
    let units_ok =
        text.split(|c: char| c.is_ascii_digit()).filter(|u| !u.is_empty()).all(|u| UNITS.contains(&u));
    if !units_ok
        || !text.starts_with(|c: char| c.is_ascii_digit())
        || text.ends_with(|c: char| c.is_ascii_digit())
    {
        return Err(malformed());
    }
    let d = humantime::parse_duration(text).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => overflow(),
        _ => malformed(),
    })?;
    u64::try_from(d.as_millis()).map_err(|_| overflow())
}

/// Formats milliseconds compactly: `500ms`, `2s`, `5m`, `1h30m`, `1d`.
pub fn format_ms(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let units = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s"), (1, "ms")];
    let mut out = String::new();
    let mut left = ms;
    for (size, unit) in units {
        if left >= size {
            out.push_str(&format!("{}{unit}", left / size));
            left %= size;
        }
    }
    out
}

/// Parses a lease TTL and checks it is within what the controller accepts,
/// so the mistake is caught before anything is sent.
pub fn parse_ttl(raw: &str) -> Result<u64, String> {
    let ms = parse_ms(raw).map_err(|e| e.to_string())?;
    if !(MIN_TTL_MS..=MAX_TTL_MS).contains(&ms) {
        return Err(format!("lease TTL {raw} is out of range: use 1s to 24h"));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse_ms("500ms"), Ok(500));
        assert_eq!(parse_ms("2s"), Ok(2000));
        assert_eq!(parse_ms("5m"), Ok(300_000));
        assert_eq!(parse_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_ms("1d"), Ok(86_400_000));
        assert_eq!(parse_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_ms(" 90s "), Ok(90_000));
    }

    #[test]
    fn refuses_junk() {
        for bad in ["5", "s", "5x", "1.5h", "-1s", "5 m", "1h30", "ms5", "5min", "1w", "1h 30m"] {
            assert!(matches!(parse_ms(bad), Err(DurationError::Malformed(_))), "{bad}");
        }
        assert_eq!(parse_ms(""), Err(DurationError::Empty));
        assert!(matches!(parse_ms("99999999999999999999d"), Err(DurationError::Overflow(_))));
        assert!(matches!(parse_ms("9999999999999999d"), Err(DurationError::Overflow(_))));
    }

    #[test]
    fn formats_round_trip() {
        for ms in [500, 2000, 300_000, 5_400_000, 86_400_000, 90_061_001] {
            assert_eq!(parse_ms(&format_ms(ms)), Ok(ms), "{}", format_ms(ms));
        }
        assert_eq!(format_ms(5_400_000), "1h30m");
    }

    #[test]
    fn ttl_range_is_checked() {
        assert_eq!(parse_ttl("5m"), Ok(300_000));
        assert!(parse_ttl("500ms").unwrap_err().contains("use 1s to 24h"));
        assert!(parse_ttl("2d").is_err());
        assert_eq!(parse_ttl("24h"), Ok(MAX_TTL_MS));
    }
}
