//! The policy as typed values. The serde types are the model: every check that
//! can be made while a value is read is made in its `Deserialize`, so that
//! serde_norway pins the error to that value's line and column.

use super::net::{Cidr, PortRange};
use seg_common::name::SecretName;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

/// Marks a message written by seg (not serde): the parser puts the YAML path
/// where [`PATH_SLOT`] stands. See `error.rs`.
pub(crate) const OWN: char = '\u{1}';
pub const PATH_SLOT: char = '\u{2}';

/// A whole policy: one compose project (or the standalone containers when
/// `project` is absent), its networks and its services.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub version: Version,
    #[serde(default)]
    pub project: Option<Name>,
    #[serde(default)]
    pub networks: BTreeMap<Name, NetworkDecl>,
    #[serde(default)]
    pub services: BTreeMap<ServiceKey, ServiceSpec>,
    /// `secrets:`: which services get which secret (granted on apply).
    #[serde(default)]
    pub secrets: Secrets,
    /// Where the policy came from, for messages (`shop.yaml`, `compose.yml#x-seg`).
    #[serde(skip)]
    pub origin: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version;

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkDecl {
    /// No route out of the network (Docker's `internal`); used when seg creates it.
    #[serde(default)]
    pub internal: bool,
    /// `false`: containers on the network reach each other only where a policy allows.
    #[serde(default = "yes")]
    pub icc: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    #[serde(default)]
    pub ingress: Ingress,
    #[serde(default)]
    pub egress: Egress,
    #[serde(default)]
    pub networks: Vec<NetRef>,
}

/// `any` (unrestricted), `none`, or a list of allow rules; absent = `none`.
#[derive(Clone, Debug, PartialEq)]
pub enum Ingress {
    Any,
    Allow(Vec<IngressRule>),
}

impl Default for Ingress {
    fn default() -> Self {
        Ingress::Allow(Vec::new())
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressRule {
    pub from: Peers,
    /// `None`: every port and protocol.
    #[serde(default)]
    pub ports: Option<Ports>,
}

/// `any` (default), `none`, or the services and CIDRs a service may reach.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Egress {
    #[default]
    Any,
    Allow(Vec<Peer>),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// Anything that is not a container, reaching a published port.
    World,
    Service(ServiceRef),
    Cidr(Cidr),
}

/// `web` (same project) or `billing/api` (another project).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceRef {
    pub project: Option<String>,
    pub service: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Peers(pub Vec<Peer>);

#[derive(Clone, Debug, PartialEq)]
pub struct Ports(pub Vec<PortRange>);

/// A name of a project, network or service: `[A-Za-z0-9][A-Za-z0-9._-]*`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(pub String);

/// A network a service is on: declared under `networks:` (or compose's `default`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetRef(pub String);

/// A key of `services:`; inside a compose file it must name a compose service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey(pub String);

// Maps keyed by these can be looked up with a `&str`; the derived `Ord`
// agrees with `str`'s, as `Borrow` requires.
impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for ServiceKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

// `x-seg.secrets`: the values; `secrets.rs` reads them.

/// The file mode when a declaration gives none.
pub const DEFAULT_MODE: FileMode = FileMode(0o400);

/// `x-seg.secrets`, by secret name (read in `secrets.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Secrets(pub BTreeMap<SecretName, SecretDecl>);

/// One secret's declaration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretDecl {
    /// The services it is granted to and delivered to, sorted.
    pub to: Vec<String>,
    pub mode: FileMode,
    /// The file it is written to in each of them when not its own name.
    pub file: Option<seg_common::file_name::FileName>,
}

impl SecretDecl {
    /// The sidecar's `SEG_SECRETS` entry for `name`: `NAME` or `NAME:FILE`.
    pub fn sidecar_entry(&self, name: &SecretName) -> String {
        match &self.file {
            Some(file) => format!("{name}:{file}"),
            None => name.to_string(),
        }
    }
}

/// A file mode a secret may have: read bits only, the owner's included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileMode(pub u32);

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Secrets {
    /// Each service that gets secrets, with their names (sorted) and their one mode.
    pub fn by_service(&self) -> BTreeMap<String, (Vec<SecretName>, FileMode)> {
        let mut out: BTreeMap<String, (Vec<SecretName>, FileMode)> = BTreeMap::new();
        for (name, decl) in &self.0 {
            for service in &decl.to {
                let entry = out.entry(service.clone()).or_insert_with(|| (Vec::new(), decl.mode));
                entry.0.push(name.clone());
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

thread_local! {
    /// What the current parse knows (serde has no context argument, and the
    /// derived types cannot take a seed): set by `parse.rs` around one parse.
    pub(crate) static CONTEXT: RefCell<Option<ParseContext>> = const { RefCell::new(None) };
}

#[derive(Clone, Debug, Default)]
pub(crate) struct ParseContext {
    /// The services the policy names.
    pub policy_services: Vec<String>,
    /// The networks the policy declares.
    pub policy_networks: Vec<String>,
    /// The compose file's services, when the policy is its `x-seg:`.
    pub compose_services: Option<Vec<String>>,
}

pub(crate) fn own<E: de::Error>(msg: String) -> E {
    E::custom(format!("{OWN}{msg}"))
}

pub(super) fn valid_name(s: &str) -> Result<(), String> {
    let ok_first = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !ok_first || !s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Err(format!("bad name `{s}` in {PATH_SLOT}: use letters, digits, `.`, `_`, `-`"));
    }
    Ok(())
}

/// Runs a check inside the scalar's visitor: serde_norway attaches the scalar's
/// own line and column only to errors raised there (an error raised after
/// `String::deserialize` returned would point at the enclosing collection).
struct StrWith<F>(F);

impl<'de, T, F: FnOnce(&str) -> Result<T, String>> Visitor<'de> for StrWith<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v).map_err(own)
    }
}

pub(super) fn str_with<'de, D: Deserializer<'de>, T>(
    d: D,
    f: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    d.deserialize_str(StrWith(f))
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Version;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("the policy version, 1")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Version, E> {
                match n {
                    1 => Ok(Version),
                    n => Err(own(format!("unsupported policy version {n} (this segctl reads version 1)"))),
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Version, E> {
                Err(own(format!("unsupported policy version {n} (this segctl reads version 1)")))
            }
        }
        d.deserialize_u64(V)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        str_with(d, |s| valid_name(s).map(|()| Name(s.to_string())))
    }
}

impl<'de> Deserialize<'de> for ServiceKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ServiceKey, D::Error> {
        str_with(d, |s| {
            valid_name(s)?;
            let compose = CONTEXT.with(|c| c.borrow().as_ref().and_then(|c| c.compose_services.clone()));
            if let Some(known) = compose {
                if !known.iter().any(|k| k == s) {
                    let list = known.join(", ");
                    return Err(format!("`{s}` is not a service of this compose file (services: {list})"));
                }
            }
            Ok(ServiceKey(s.to_string()))
        })
    }
}

impl<'de> Deserialize<'de> for NetRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NetRef, D::Error> {
        str_with(d, |s| {
            valid_name(s)?;
            let known = CONTEXT.with(|c| c.borrow().as_ref().map(|c| c.policy_networks.clone()));
            if let Some(known) = known {
                if s != "default" && !known.iter().any(|k| k == s) {
                    let list = if known.is_empty() { "none".to_string() } else { known.join(", ") };
                    return Err(format!("unknown network `{s}` in {PATH_SLOT} (declared: {list})"));
                }
            }
            Ok(NetRef(s.to_string()))
        })
    }
}

impl Policy {
    /// The project this policy's bare service names belong to.
    pub fn project(&self) -> Option<&str> {
        self.project.as_ref().map(|n| n.0.as_str())
    }

    /// Resolves a reference written in this policy to (project, service).
    pub fn resolve(&self, r: &ServiceRef) -> (Option<String>, String) {
        let project = r.project.clone().or_else(|| self.project().map(str::to_string));
        (project, r.service.clone())
    }
}
