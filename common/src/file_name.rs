//! The file a secret is written to in the app's tmpfs when it is not the
//! secret's own name (`SEG_SECRETS=tls.key:server.key` for the sidecar, a
//! compose `file:`). Apps expect names like `server.key` or
//! `POSTGRES_PASSWORD`, so upper case is allowed; otherwise the rule is the
//! secret names' one, `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`: no `/`, no `..`,
//! no hidden file (the writer's temp files start with `.`).

use crate::name::MAX_NAME_LEN;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileNameError {
    #[error("file name is empty")]
    Empty,
    #[error("file name is {0} bytes long; the limit is {MAX_NAME_LEN}")]
    TooLong(usize),
    #[error("file name {0:?} must start with a letter or a digit")]
    BadStart(String),
    #[error("file name {name:?} has {ch:?} at byte {pos}; allowed are letters, digits, '.', '_' and '-'")]
    BadChar { name: String, ch: char, pos: usize },
}

/// A validated file name (one path component).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileName(String);

impl FileName {
    pub fn parse(raw: &str) -> Result<FileName, FileNameError> {
        let first = raw.chars().next().ok_or(FileNameError::Empty)?;
        if raw.len() > MAX_NAME_LEN {
            return Err(FileNameError::TooLong(raw.len()));
        }
        // Echoed in errors: keep hostile input short there.
        let shown = || raw.chars().take(64).collect::<String>();
        if !first.is_ascii_alphanumeric() {
            return Err(FileNameError::BadStart(shown()));
        }
        for (pos, ch) in raw.char_indices() {
            if !(ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-')) {
                return Err(FileNameError::BadChar { name: shown(), ch, pos });
            }
        }
        Ok(FileName(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass_and_paths_do_not() {
        for ok in ["server.key", "POSTGRES_PASSWORD", "a", "tls-2.pem"] {
            assert_eq!(FileName::parse(ok).unwrap().as_str(), ok);
        }
        assert_eq!(FileName::parse(""), Err(FileNameError::Empty));
        assert_eq!(FileName::parse(".."), Err(FileNameError::BadStart("..".into())));
        assert_eq!(FileName::parse(".hidden"), Err(FileNameError::BadStart(".hidden".into())));
        assert_eq!(
            FileName::parse("a/b"),
            Err(FileNameError::BadChar { name: "a/b".into(), ch: '/', pos: 1 })
        );
        assert!(matches!(FileName::parse(&"x".repeat(129)), Err(FileNameError::TooLong(129))));
    }
}
