//! The `Deserialize` impls of the rule values: `any`/`none`/lists, peers
//! (`world`, services, CIDRs) and ports. Each check runs inside the
//! visitor of the value it checks, so its error carries that value's line
//! and column (see `model.rs`).

use super::model::{
    own, str_with, valid_name, Egress, Ingress, Peer, Peers, Ports, ServiceRef, CONTEXT, PATH_SLOT,
};
use super::net::{Cidr, PortRange, PortRangeError};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// Reads `any` / `none` / a list with one visitor, so that a misspelt keyword
/// is reported at the scalar rather than as "data did not match any variant".
struct KeywordOrList<T>(&'static str, std::marker::PhantomData<T>);

enum KeywordOr<T> {
    Any,
    None,
    List(Vec<T>),
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for KeywordOrList<T> {
    type Value = KeywordOr<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "`any`, `none` or a list of {}", self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        match v {
            "any" => Ok(KeywordOr::Any),
            "none" => Ok(KeywordOr::None),
            other => {
                Err(own(format!("`{other}` in {PATH_SLOT}: expected `any`, `none` or a list of {}", self.0)))
            }
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(KeywordOr::List(items))
    }
}

impl<'de> Deserialize<'de> for Ingress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ingress, D::Error> {
        Ok(match d.deserialize_any(KeywordOrList("rules", Default::default()))? {
            KeywordOr::Any => Ingress::Any,
            KeywordOr::None => Ingress::Allow(Vec::new()),
            KeywordOr::List(rules) => Ingress::Allow(rules),
        })
    }
}

impl<'de> Deserialize<'de> for Egress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Egress, D::Error> {
        Ok(
            match d.deserialize_any(KeywordOrList::<EgressPeer>("services and CIDRs", Default::default()))? {
                KeywordOr::Any => Egress::Any,
                KeywordOr::None => Egress::Allow(Vec::new()),
                KeywordOr::List(peers) => Egress::Allow(peers.into_iter().map(|p| p.0).collect()),
            },
        )
    }
}

struct EgressPeer(Peer);

impl<'de> Deserialize<'de> for EgressPeer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EgressPeer, D::Error> {
        str_with(d, |s| match parse_peer(s)? {
            Peer::World => Err(format!(
                "`world` is not an egress target in {PATH_SLOT}: use `any`, or CIDRs such as 0.0.0.0/0"
            )),
            peer => Ok(EgressPeer(peer)),
        })
    }
}

/// `from: world`, `from: web`, or `from: [web, 10.0.0.0/8, billing/api]`.
impl<'de> Deserialize<'de> for Peers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Peers, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Peers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`world`, a service, a CIDR, or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Peers, E> {
                Ok(Peers(vec![parse_peer(v).map_err(own)?]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Peers, A::Error> {
                let mut peers = Vec::new();
                while let Some(p) = seq.next_element()? {
                    peers.push(p);
                }
                if peers.is_empty() {
                    return Err(own(format!("empty list in {PATH_SLOT}: name at least one source")));
                }
                Ok(Peers(peers))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Peer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Peer, D::Error> {
        str_with(d, parse_peer)
    }
}

/// An address-looking text is a CIDR (and must be a valid one); `a/b` is a
/// service of another project; anything else is a service of this policy.
fn parse_peer(s: &str) -> Result<Peer, String> {
    if s == "world" {
        return Ok(Peer::World);
    }
    let looks_like_address = s.contains(':')
        || s.split('/')
            .next()
            .is_some_and(|a| a.contains('.') && a.starts_with(|c: char| c.is_ascii_digit()));
    if looks_like_address {
        return s.parse::<Cidr>().map(Peer::Cidr).map_err(|e| format!("{e} in {PATH_SLOT}"));
    }
    if let Some((project, service)) = s.split_once('/') {
        valid_name(project)?;
        valid_name(service)?;
        let (project, service) = (Some(project.to_string()), service.to_string());
        return Ok(Peer::Service(ServiceRef { project, service }));
    }
    valid_name(s)?;
    let known = CONTEXT.with(|c| c.borrow().as_ref().map(|c| c.policy_services.clone()));
    if let Some(known) = known {
        if !known.iter().any(|k| k == s) {
            let list = known.join(", ");
            return Err(format!("unknown service `{s}` in {PATH_SLOT} (known: {list})"));
        }
    }
    Ok(Peer::Service(ServiceRef { project: None, service: s.to_string() }))
}

impl<'de> Deserialize<'de> for Ports {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ports, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ports;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of ports such as [8080/tcp, 8000-8100/udp]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ports, A::Error> {
                let mut ports = Vec::new();
                while let Some(PortItem(p)) = seq.next_element()? {
                    ports.push(p);
                }
                if ports.is_empty() {
                    return Err(own(format!(
                        "empty `ports` in {PATH_SLOT}: omit `ports` to allow every port"
                    )));
                }
                Ok(Ports(ports))
            }
        }
        d.deserialize_seq(V)
    }
}

/// A port written as a YAML number (`8080`) or a string (`8080/tcp`).
struct PortItem(PortRange);

impl<'de> Deserialize<'de> for PortItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PortItem, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortItem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port such as 8080/tcp or 8000-8100/udp")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortItem, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortItem, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortItem, E> {
                v.parse().map(PortItem).map_err(|e: PortRangeError| own(format!("{e} in {PATH_SLOT}")))
            }
        }
        d.deserialize_any(V)
    }
}
