//! Policy errors, each naming the file and, when the YAML parser knows it,
//! the line and column of the offending value.

use super::model::{OWN, PATH_SLOT};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{file}: cannot read: {cause}")]
    Read { file: String, cause: std::io::Error },
    /// `path` is the YAML path of the value (`services.api.ingress[0].from[1]`).
    #[error("{file}:{line}:{column}: {message}")]
    Invalid { file: String, line: usize, column: usize, path: String, message: String },
    #[error("{file}: {message}")]
    File { file: String, message: String },
}

impl PolicyError {
    /// Turns a serde_norway error into ours. serde_norway renders
    /// `PATH: MESSAGE at line L column C`; seg's own messages start with
    /// [`OWN`] and say where the path goes with [`PATH_SLOT`].
    pub fn from_yaml(file: &str, err: &serde_norway::Error) -> PolicyError {
        let mut text = err.to_string();
        let Some(loc) = err.location() else {
            return PolicyError::File { file: file.to_string(), message: text };
        };
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        // serde_norway says where in its own words; libyaml's messages carry
        // it mid-sentence. We say it once, up front.
        text = text.replacen(&suffix, "", 1);
        let (path, message) = match text.split_once(OWN) {
            Some((before, msg)) => {
                let path = before.trim_end_matches(": ").to_string();
                let shown = if path.is_empty() { "the document" } else { path.as_str() };
                (path.clone(), msg.replace(PATH_SLOT, shown))
            }
            None => (String::new(), text),
        };
        PolicyError::Invalid { file: file.to_string(), line: loc.line(), column: loc.column(), path, message }
    }
}
