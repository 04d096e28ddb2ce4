//! Secret names. They become file names in the app's tmpfs, so the rule is
//! strict: `[a-z0-9][a-z0-9._-]{0,127}`. That excludes `/`, `..` as a whole
//! name, leading dots (hidden files, temp files of the writer) and anything
//! a shell or a path join could misread.

use std::fmt;

/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Largest accepted secret value (Swarm's limit is 500 KB; ours is 512 KiB).
pub const MAX_VALUE_LEN: usize = 512 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("secret name is empty")]
    Empty,
    #[error("secret name is {0} bytes long; the limit is {MAX_NAME_LEN}")]
    TooLong(usize),
    #[error("secret name {0:?} must start with a lowercase letter or a digit")]
    BadStart(String),
    #[error("secret name {name:?} has {ch:?} at byte {pos}; allowed are a-z, 0-9, '.', '_' and '-'")]
    BadChar { name: String, ch: char, pos: usize },
}

/// A validated secret name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretName(String);

impl SecretName {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        validate(raw)?;
        Ok(SecretName(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks `raw` against `[a-z0-9][a-z0-9._-]{0,127}`.
pub fn validate(raw: &str) -> Result<(), NameError> {
    let first = raw.chars().next().ok_or(NameError::Empty)?;
    if raw.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(raw.len()));
    }
    // Names are echoed in errors; keep hostile input short and printable there.
    let shown = || raw.chars().take(64).collect::<String>();
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(NameError::BadStart(shown()));
    }
    for (pos, ch) in raw.char_indices() {
        let ok = ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-');
        if !ok {
            return Err(NameError::BadChar { name: shown(), ch, pos });
        }
    }
    Ok(())
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::str::FromStr for SecretName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SecretName::parse(s)
    }
}

impl serde::Serialize for SecretName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for SecretName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        SecretName::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["a", "0", "db-password", "tls.key", "a_b", &"x".repeat(128)] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_paths_dots_and_oddities() {
        let long = "x".repeat(129);
        for bad in ["", "..", ".", "../etc/passwd", "a/b", ".hidden", "-x", "A", "a b", "é", "a\0b", &long] {
            assert!(validate(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn error_names_the_offending_character() {
        let err = validate("db/pass").unwrap_err().to_string();
        assert!(err.contains("'/'") && err.contains("byte 2"), "{err}");
    }
}
