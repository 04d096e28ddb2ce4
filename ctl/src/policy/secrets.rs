//! `x-seg.secrets`: which service of the compose file gets which secret,
//! the mode of its files and, when not the secret's name, its file's name.
//!
//! ```yaml
//! x-seg:
//!   version: 1
//!   secrets:
//!     db-password: { to: [db, app] }            # /run/secrets/db-password, mode 0400
//!     tls.key:     { to: [web], mode: "0440", file: server.key }
//! ```
//!
//! Every check runs inside the visitor of the value it is about (see
//! `model.rs`), so an error carries that value's line and column. A
//! service's secrets are written by one sidecar with one file mode, so two
//! secrets given to the same service with different modes are refused where
//! the second one names that service or states its mode; two secrets that
//! would be one file of a service are refused at the second declaration.

use super::model::{own, str_with, FileMode, SecretDecl, Secrets, ServiceKey, DEFAULT_MODE, PATH_SLOT};
use seg_common::file_name::FileName;
use seg_common::name::SecretName;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

/// What one parse of `secrets:` has seen so far: the mode each service got
/// (and from which secret), and the declaration being read.
#[derive(Default)]
struct Seen {
    modes: BTreeMap<String, (FileMode, String)>,
    /// (service, file) → the secret written there.
    files: BTreeMap<(String, String), String>,
    secret: String,
    mode: Option<FileMode>,
    services: Vec<String>,
}

thread_local! {
    static SEEN: RefCell<Seen> = RefCell::new(Seen::default());
}

/// Records that `service` gets the current secret with `mode`; refuses a
/// second, different mode for the same service.
fn note(service: &str, mode: FileMode) -> Result<(), String> {
    SEEN.with(|s| {
        let mut s = s.borrow_mut();
        let secret = s.secret.clone();
        match s.modes.get(service) {
            Some((m, other)) if *m != mode && *other != secret => Err(format!(
                "service `{service}` gets `{other}` with mode {m} and `{secret}` with mode {mode} \
                 ({PATH_SLOT}): one sidecar writes a service's files with one mode; give both the same `mode:`"
            )),
            _ => {
                s.modes.insert(service.to_string(), (mode, secret));
                Ok(())
            }
        }
    })
}

impl<'de> Deserialize<'de> for Secrets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secrets, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Secrets;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of secret names to `{ to: [SERVICE, …], mode: \"0400\" }`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Secrets, A::Error> {
                SEEN.with(|s| *s.borrow_mut() = Seen::default());
                let mut out = BTreeMap::new();
                while let Some(SecretKey(name)) = map.next_key()? {
                    let decl: SecretDecl = map.next_value()?;
                    out.insert(name, decl);
                }
                Ok(Secrets(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A key of `secrets:`: a secret name as the store accepts it.
struct SecretKey(SecretName);

impl<'de> Deserialize<'de> for SecretKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SecretKey, D::Error> {
        str_with(d, |s| {
            let name = SecretName::parse(s).map_err(|e| format!("{e} (in {PATH_SLOT})"))?;
            SEEN.with(|seen| {
                let mut seen = seen.borrow_mut();
                seen.secret = s.to_string();
                seen.mode = None;
                seen.services.clear();
            });
            Ok(SecretKey(name))
        })
    }
}

impl<'de> Deserialize<'de> for SecretDecl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SecretDecl, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SecretDecl;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`{ to: [SERVICE, …] }`, optionally with `mode: \"0440\"` and `file: NAME`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretDecl, A::Error> {
                let (mut to, mut mode, mut file) = (None, None, None);
                while let Some(DeclKey(key)) = map.next_key()? {
                    match key {
                        "to" if to.is_none() => to = Some(map.next_value::<Targets>()?.0),
                        "mode" if mode.is_none() => mode = Some(map.next_value::<ModeValue>()?.0),
                        "file" if file.is_none() => file = Some(map.next_value::<FileValue>()?.0),
                        _ => return Err(own(format!("`{key}` is given twice in {PATH_SLOT}"))),
                    }
                }
                let to = to.ok_or_else(|| {
                    own::<A::Error>(format!("{PATH_SLOT} has no `to:`: name the services that get it"))
                })?;
                if mode.is_none() {
                    for service in &to {
                        note(service, DEFAULT_MODE).map_err(own)?;
                    }
                }
                note_files(&to, file.as_ref()).map_err(own)?;
                Ok(SecretDecl { to, mode: mode.unwrap_or(DEFAULT_MODE), file })
            }
        }
        d.deserialize_map(V)
    }
}

/// A key of a declaration, checked where it stands.
struct DeclKey(&'static str);

impl<'de> Deserialize<'de> for DeclKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DeclKey, D::Error> {
        str_with(d, |s| match s {
            "to" => Ok(DeclKey("to")),
            "mode" => Ok(DeclKey("mode")),
            "file" => Ok(DeclKey("file")),
            other => Err(format!(
                "unknown key `{other}` in {PATH_SLOT}: a secret has `to:` and optionally `mode:` and `file:`"
            )),
        })
    }
}

/// `to: [db, app]` (or `to: app`): services of the compose file, each once.
struct Targets(Vec<String>);

impl<'de> Deserialize<'de> for Targets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Targets, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Targets;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a service or a list of services")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Targets, E> {
                target(v).map(|s| Targets(vec![s])).map_err(own)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Targets, A::Error> {
                let mut out = Vec::new();
                while let Some(Target(s)) = seq.next_element()? {
                    out.push(s);
                }
                if out.is_empty() {
                    return Err(own(format!("empty `to:` in {PATH_SLOT}: name at least one service")));
                }
                out.sort();
                Ok(Targets(out))
            }
        }
        d.deserialize_any(V)
    }
}

struct Target(String);

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Target, D::Error> {
        str_with(d, |s| target(s).map(Target))
    }
}

/// Checks one service of `to:` (a compose service, not named twice) and,
/// when the declaration's mode is already known, its mode against the
/// service's other secrets.
fn target(s: &str) -> Result<String, String> {
    let key: ServiceKey = ServiceKey::deserialize(de::value::StrDeserializer::<de::value::Error>::new(s))
        .map_err(|e| e.to_string().trim_start_matches(super::model::OWN).to_string())?;
    let (twice, mode) = SEEN.with(|seen| {
        let mut seen = seen.borrow_mut();
        let twice = seen.services.contains(&key.0);
        seen.services.push(key.0.clone());
        (twice, seen.mode)
    });
    if twice {
        return Err(format!("`{s}` is named twice in {PATH_SLOT}"));
    }
    // No mode yet: it is checked when `mode:` is read, or once the
    // declaration ends without one (then at the default).
    if let Some(mode) = mode {
        note(&key.0, mode)?;
    }
    Ok(key.0)
}

/// Records the file the current secret is written to in each of `to`
/// (`file:` or its own name); refuses a file another secret of the same
/// service is written to.
fn note_files(to: &[String], file: Option<&FileName>) -> Result<(), String> {
    SEEN.with(|s| {
        let mut s = s.borrow_mut();
        let secret = s.secret.clone();
        let file = file.map_or(secret.clone(), |f| f.to_string());
        for service in to {
            let key = (service.clone(), file.clone());
            if let Some(other) = s.files.get(&key).filter(|other| **other != secret) {
                return Err(format!(
                    "`{other}` and `{secret}` would both be /run/secrets/{file} in service `{service}` \
                     ({PATH_SLOT}): give one of them another `file:`"
                ));
            }
            s.files.insert(key, secret.clone());
        }
        Ok(())
    })
}

/// `file: server.key`: one plain file name ([`FileName`]).
struct FileValue(FileName);

impl<'de> Deserialize<'de> for FileValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FileValue, D::Error> {
        str_with(d, |s| FileName::parse(s).map(FileValue).map_err(|e| format!("{e} (in {PATH_SLOT})")))
    }
}

/// `mode: "0440"` (a string) or `mode: 0440` (a YAML number, read as the
/// octal digits it is written with).
struct ModeValue(FileMode);

impl<'de> Deserialize<'de> for ModeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ModeValue, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ModeValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an octal file mode such as \"0400\" or \"0440\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ModeValue, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ModeValue, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ModeValue, E> {
                let mode = parse_mode(v).map_err(own)?;
                let services = SEEN.with(|s| {
                    let mut s = s.borrow_mut();
                    s.mode = Some(mode);
                    s.services.clone()
                });
                for service in services {
                    note(&service, mode).map_err(own)?;
                }
                Ok(ModeValue(mode))
            }
        }
        d.deserialize_any(V)
    }
}

/// Read bits only (a secret file is never written or run by the app), and
/// the owner's among them: 0400, 0440, 0444.
fn parse_mode(v: &str) -> Result<FileMode, String> {
    let bad = || format!("mode `{v}` in {PATH_SLOT}: use a read-only octal mode: 0400, 0440 or 0444");
    let digits = v.trim().trim_start_matches("0o");
    let mode = u32::from_str_radix(digits, 8).map_err(|_| bad())?;
    if mode & !0o444 != 0 || mode & 0o400 == 0 {
        return Err(bad());
    }
    Ok(FileMode(mode))
}

#[cfg(test)]
#[path = "secrets_tests.rs"]
mod tests;
