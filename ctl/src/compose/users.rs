//! The part of a compose file the generator reads besides `x-seg:`: the
//! names of its services and volumes, and the numeric `user:` of each
//! service that gets secrets (its uid owns the secrets tmpfs). Read with
//! seeds so that only the services that need a `user:` are held to one,
//! and every error carries the line and column of the value.

use crate::policy::{located, PATH_SLOT};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// `user: "UID[:GID]"`, numeric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: Option<u32>,
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.gid {
            Some(gid) => write!(f, "{}:{gid}", self.uid),
            None => write!(f, "{}", self.uid),
        }
    }
}

/// What the generator needs of the compose file.
#[derive(Debug, Default)]
pub struct Layout {
    pub services: BTreeSet<String>,
    pub volumes: BTreeSet<String>,
    /// The users of the services in `need`.
    pub users: BTreeMap<String, User>,
}

/// Reads the layout; `need` are the services whose `user:` must be numeric.
pub struct LayoutSeed<'a> {
    pub need: &'a BTreeSet<String>,
}

impl<'de> DeserializeSeed<'de> for LayoutSeed<'_> {
    type Value = Layout;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Layout, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LayoutSeed<'_> {
    type Value = Layout;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a compose file")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Layout, A::Error> {
        let mut layout = Layout::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "services" => {
                    let seed = ServicesSeed { need: self.need, layout: &mut layout };
                    map.next_value_seed(seed)?;
                }
                "volumes" => {
                    let vols: Option<BTreeMap<String, IgnoredAny>> = map.next_value()?;
                    layout.volumes = vols.unwrap_or_default().into_keys().collect();
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(layout)
    }
}

struct ServicesSeed<'a, 'b> {
    need: &'a BTreeSet<String>,
    layout: &'b mut Layout,
}

impl<'de> DeserializeSeed<'de> for ServicesSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ServicesSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of services")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = map.next_key::<String>()? {
            if self.need.contains(&name) {
                let user = map.next_value_seed(ServiceSeed { name: &name })?;
                self.layout.users.insert(name.clone(), user);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
            self.layout.services.insert(name);
        }
        Ok(())
    }
}

/// One service that gets secrets: its `user:` must be there and numeric.
struct ServiceSeed<'a> {
    name: &'a str,
}

impl<'de> DeserializeSeed<'de> for ServiceSeed<'_> {
    type Value = User;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<User, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ServiceSeed<'_> {
    type Value = User;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a service definition")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<User, A::Error> {
        let mut user = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "user" {
                user = Some(map.next_value::<UserValue>()?.0);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        user.ok_or_else(|| {
            located(format!(
                "service `{}` gets secrets but has no `user:`: its secrets tmpfs is owned by the uid the app \
                 runs as, so add e.g. `user: \"1000:1000\"` to it ({PATH_SLOT})",
                self.name
            ))
        })
    }
}

struct UserValue(User);

impl<'de> de::Deserialize<'de> for UserValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<UserValue, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = UserValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a numeric user such as \"1000:1000\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<UserValue, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<UserValue, E> {
                parse_user(v).map(UserValue).map_err(located)
            }
        }
        d.deserialize_any(V)
    }
}

/// `UID` or `UID:GID`, both numeric: names would need the image's
/// /etc/passwd, which the generator cannot read.
pub fn parse_user(v: &str) -> Result<User, String> {
    let bad = || {
        format!(
            "`user: {v}` in {PATH_SLOT} is not numeric: seg gives the secrets tmpfs to the app's uid, so write \
             the ids, e.g. `user: \"1000:1000\"` (`id -u NAME` in the image tells them)"
        )
    };
    let (uid, gid) = match v.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (v, None),
    };
    let num =
        |s: &str| (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten();
    let uid = num(uid).ok_or_else(bad)?;
    let gid = match gid {
        Some(g) => Some(num(g).ok_or_else(bad)?),
        None => None,
    };
    Ok(User { uid, gid })
}
