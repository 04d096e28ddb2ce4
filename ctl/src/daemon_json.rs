//! `icc` in the Docker daemon's config file (`/etc/docker/daemon.json`):
//! CIS 2.2 wants inter-container traffic off on the default bridge.
//!
//! The file belongs to the administrator, so seg edits it like a careful
//! human: a file it cannot fully understand is left untouched, every other key
//! keeps its value and place (nested objects too), and the new version replaces
//! the old atomically with the same mode and owner. dockerd reads the file only
//! at start: a change needs a daemon restart (a `DOCKER-USER` rule acts at once).

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::{self, File, Metadata, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The file dockerd reads by default.
pub const DEFAULT_PATH: &str = seg_common::api::policy::DEFAULT_DAEMON_JSON;

#[derive(Debug, thiserror::Error)]
pub enum DaemonJsonError {
    #[error("cannot read {path}: {cause}")]
    Read { path: PathBuf, cause: io::Error },
    #[error(
        "{path} is not usable JSON (line {line}, column {column}: {message}); \
         nothing was changed: fix the file, then retry"
    )]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    #[error(
        "{path} must hold a JSON object at the top level, not {found}; nothing was changed: fix the file"
    )]
    NotObject { path: PathBuf, found: &'static str },
    #[error("{path}: \"icc\" must be true or false, not {found}; nothing was changed: fix the file")]
    IccNotBool { path: PathBuf, found: String },
    #[error("{path} is not a regular file; nothing was changed")]
    NotAFile { path: PathBuf },
    #[error("cannot write {path} ({action}): {cause}; the original file is unchanged")]
    Write { path: PathBuf, action: &'static str, cause: io::Error },
}

/// What [`set_icc`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The file already said so (or, for `true`, said nothing: the default).
    Unchanged,
    /// The file was rewritten; `was` is the previous explicit value.
    Updated { was: Option<bool> },
}

impl Change {
    pub fn changed(&self) -> bool {
        matches!(self, Change::Updated { .. })
    }
}

/// A JSON value that keeps object keys in file order (serde_json's own Map
/// sorts them unless the workspace-wide `preserve_order` feature is on, which
/// would change every other crate's output order too).
#[derive(Clone, Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(n).map(Json::Number).ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, s: &str) -> Result<Json, E> {
        Ok(Json::String(s.to_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    /// Refuses duplicate keys: dockerd silently takes the last one, and the
    /// administrator most likely did not mean that.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries: Vec<(String, Json)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format!("the key \"{key}\" appears twice")));
            }
            let value = map.next_value()?;
            entries.push((key, value));
        }
        Ok(Json::Object(entries))
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Number(n) => n.serialize(s),
            Json::String(text) => s.serialize_str(text),
            Json::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                items.iter().try_for_each(|i| seq.serialize_element(i))?;
                seq.end()
            }
            Json::Object(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                entries.iter().try_for_each(|(k, v)| map.serialize_entry(k, v))?;
                map.end()
            }
        }
    }
}

/// The top-level object's entries; a missing or blank file reads as `{}`,
/// as dockerd reads it.
fn parse(path: &Path, text: Option<&str>) -> Result<Vec<(String, Json)>, DaemonJsonError> {
    let text = text.unwrap_or("").trim_start_matches('\u{feff}');
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    match serde_json::from_str::<Json>(text) {
        Ok(Json::Object(entries)) => Ok(entries),
        Ok(other) => Err(DaemonJsonError::NotObject { path: path.to_owned(), found: other.kind() }),
        Err(e) => Err(DaemonJsonError::Parse {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            // serde_json appends " at line L column C": said once, above.
            message: e.to_string().split(" at line ").next().unwrap_or_default().to_owned(),
        }),
    }
}

fn icc_of(path: &Path, entries: &[(String, Json)]) -> Result<Option<bool>, DaemonJsonError> {
    match entries.iter().find(|(k, _)| k == "icc") {
        None => Ok(None),
        Some((_, Json::Bool(b))) => Ok(Some(*b)),
        Some((_, other)) => Err(DaemonJsonError::IccNotBool {
            path: path.to_owned(),
            found: serde_json::to_string(other).unwrap_or_else(|_| other.kind().to_owned()),
        }),
    }
}

/// Pure: the new file content if `icc` must change, `None` if it already holds.
fn plan_icc(path: &Path, text: Option<&str>, icc: bool) -> Result<(Change, Option<String>), DaemonJsonError> {
    let mut entries = parse(path, text)?;
    let was = icc_of(path, &entries)?;
    // An absent key means the default, true.
    if was.unwrap_or(true) == icc {
        return Ok((Change::Unchanged, None));
    }
    match entries.iter_mut().find(|(k, _)| k == "icc") {
        Some((_, value)) => *value = Json::Bool(icc),
        None => entries.push(("icc".to_owned(), Json::Bool(icc))),
    }
    let mut rendered =
        serde_json::to_string_pretty(&Json::Object(entries)).expect("JSON values always serialize");
    rendered.push('\n');
    Ok((Change::Updated { was }, Some(rendered)))
}

/// The file's text, `None` if it does not exist.
fn read_text(path: &Path) -> Result<Option<String>, DaemonJsonError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(cause) => Err(DaemonJsonError::Read { path: path.to_owned(), cause }),
    }
}

/// The explicit `icc` setting, `None` when absent (dockerd's default: on).
pub fn read_icc(path: &Path) -> Result<Option<bool>, DaemonJsonError> {
    let text = read_text(path)?;
    icc_of(path, &parse(path, text.as_deref())?)
}

/// Sets `"icc"`, keeping everything else; rewrites only on a change.
pub fn set_icc(path: &Path, icc: bool) -> Result<Change, DaemonJsonError> {
    // Write through a symlink (some hosts link daemon.json from a config
    // repository) instead of replacing the link with a file.
    let target = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            fs::canonicalize(path).map_err(|e| DaemonJsonError::Read { path: path.to_owned(), cause: e })?
        }
        _ => path.to_owned(),
    };
    let original = match fs::metadata(&target) {
        Ok(m) if !m.is_file() => return Err(DaemonJsonError::NotAFile { path: target }),
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(cause) => return Err(DaemonJsonError::Read { path: target, cause }),
    };
    let text = read_text(&target)?;
    let (change, content) = plan_icc(&target, text.as_deref(), icc)?;
    if let Some(content) = content {
        write_atomically(&target, content.as_bytes(), original.as_ref())?;
    }
    Ok(change)
}

/// Temp file in the same directory (so `rename` is atomic), same mode and
/// owner as the original (0644 root for a new file), fsync, rename, fsync dir.
fn write_atomically(path: &Path, bytes: &[u8], original: Option<&Metadata>) -> Result<(), DaemonJsonError> {
    let fail =
        |action: &'static str| move |cause| DaemonJsonError::Write { path: path.to_owned(), action, cause };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.seg-{}-{:08x}.tmp", std::process::id(), fastrand::u32(..)));
    let mode = original.map_or(0o644, |m| m.permissions().mode() & 0o7777);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(fail("create temp file"))?;
        if let Some(m) = original {
            std::os::unix::fs::fchown(&file, Some(m.uid()), Some(m.gid())).map_err(fail("keep owner"))?;
        }
        // After chown (which may clear set-id bits), and not subject to umask.
        file.set_permissions(Permissions::from_mode(mode)).map_err(fail("keep mode"))?;
        file.write_all(bytes).map_err(fail("write temp file"))?;
        file.sync_all().map_err(fail("fsync temp file"))?;
        fs::rename(&tmp, path).map_err(fail("rename into place"))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(fail("fsync directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.json");
        fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn entries(dir: &Path) -> Vec<String> {
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn missing_file_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.json");
        assert_eq!(read_icc(&path).unwrap(), None);
        assert_eq!(set_icc(&path, true).unwrap(), Change::Unchanged);
        assert!(!path.exists(), "enabling the default must not create a file");
        assert_eq!(set_icc(&path, false).unwrap(), Change::Updated { was: None });
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\n  \"icc\": false\n}\n");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(read_icc(&path).unwrap(), Some(false));
        assert!(!set_icc(&path, false).unwrap().changed());
        assert_eq!(entries(dir.path()), ["daemon.json"]);
    }

    #[test]
    fn other_keys_keep_values_and_order() {
        let original = r#"{"log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": "3"},
            "icc": true, "mtu": 1400, "ratio": 2.5, "pools": [{"base": "10.9.0.0/16", "size": 24}],
            "x": null, "s": "t\u00e9\"q"}"#;
        let (_dir, path) = file_with(original);
        fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        assert_eq!(set_icc(&path, false).unwrap(), Change::Updated { was: Some(true) });
        let expected = r#"{
  "log-driver": "json-file",
  "log-opts": {
    "max-size": "10m",
    "max-file": "3"
  },
  "icc": false,
  "mtu": 1400,
  "ratio": 2.5,
  "pools": [
    {
      "base": "10.9.0.0/16",
      "size": 24
    }
  ],
  "x": null,
  "s": "té\"q"
}
"#;
        assert_eq!(fs::read_to_string(&path).unwrap(), expected);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(
            (meta.permissions().mode() & 0o777, meta.uid()),
            (0o600, rustix::process::getuid().as_raw())
        );
        // Idempotent: no rewrite (a rewrite would replace the inode).
        assert_eq!(set_icc(&path, false).unwrap(), Change::Unchanged);
        assert_eq!(fs::metadata(&path).unwrap().ino(), meta.ino());
        assert_eq!(set_icc(&path, true).unwrap(), Change::Updated { was: Some(false) });
        assert_eq!(read_icc(&path).unwrap(), Some(true));
    }

    #[test]
    fn unusable_files_are_refused_and_left_alone() {
        let cases: [(&str, &str); 5] = [
            ("{\n  \"icc\": true,\n  \"debug\": yes\n}", "line 3, column 12: expected value"),
            ("[1, 2]", "not an array"),
            ("{\"icc\": \"false\"}", "not \"false\""),
            ("{\"debug\": true,\n \"debug\": false}", "the key \"debug\" appears twice"),
            ("{\"icc\": false} trailing", "trailing characters"),
        ];
        for (text, why) in cases {
            let (dir, path) = file_with(text);
            let msg = set_icc(&path, false).unwrap_err().to_string();
            assert!(msg.contains(why) && msg.contains(&path.display().to_string()), "{text}: {msg}");
            assert!(msg.contains("nothing was changed"), "{msg}");
            assert_eq!(fs::read_to_string(&path).unwrap(), text);
            assert_eq!(entries(dir.path()), ["daemon.json"], "no temp file left behind");
        }
        let (_dir, path) = file_with("{\"icc\": 0}");
        assert!(matches!(read_icc(&path), Err(DaemonJsonError::IccNotBool { .. })));
    }

    #[test]
    fn blank_files_and_bom_read_as_empty_objects() {
        for text in ["", "  \n", "\u{feff}{}"] {
            let (_dir, path) = file_with(text);
            assert_eq!(set_icc(&path, false).unwrap(), Change::Updated { was: None }, "{text:?}");
            assert_eq!(read_icc(&path).unwrap(), Some(false));
        }
    }

    #[test]
    fn writes_through_a_symlink() {
        let (dir, real) = file_with("{\"debug\": true}");
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(set_icc(&link, false).unwrap().changed());
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(read_icc(&real).unwrap(), Some(false));
    }

    #[test]
    fn write_failures_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("daemon.json");
        let msg = set_icc(&path, false).unwrap_err().to_string();
        assert!(msg.contains("cannot write") && msg.contains("no-such-dir"), "{msg}");
        let msg = set_icc(dir.path(), false).unwrap_err().to_string();
        assert!(msg.contains("not a regular file"), "{msg}");
    }
}
