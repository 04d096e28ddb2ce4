//! What a policy declares about a network, validated before anything reaches
//! the Docker Engine so a typo is reported with its reason rather than as a Docker error.

use super::{NetworkError, PREDEFINED};
use crate::policy::Cidr;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Docker's name rule `[a-zA-Z0-9][a-zA-Z0-9_.-]+`; predefined names are refused
/// because seg must never create or remove them.
pub fn validate_name(name: &str) -> Result<(), NetworkError> {
    let bad = |why: &str| Err(NetworkError::BadName { name: name.to_owned(), why: why.to_owned() });
    let mut chars = name.chars();
    match chars.next() {
        None => return bad("it is empty"),
        Some(c) if !c.is_ascii_alphanumeric() => return bad("it must start with a letter or a digit"),
        Some(_) => {}
    }
    if name.len() < 2 {
        return bad("it must be at least 2 characters long");
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return bad(&format!("`{c}` is not allowed (only letters, digits, `_`, `.` and `-`)"));
    }
    if PREDEFINED.contains(&name) {
        return Err(NetworkError::Predefined(name.to_owned()));
    }
    Ok(())
}

/// Parses the subnet of a network's IPAM: a [`Cidr`] with an explicit
/// length, host bits clear. Refuses host bits past the prefix (`10.0.0.1/8`:
/// a typo for something else) and prefixes too narrow to hold a gateway and
/// one container. The errors are Docker-network ones (`invalid subnet …`),
/// not the policy's `bad CIDR …`.
pub fn parse_subnet(text: &str) -> Result<Cidr, NetworkError> {
    let bad = |why: String| NetworkError::BadSubnet { text: text.to_owned(), why };
    let (addr_text, len_text) =
        text.split_once('/').ok_or_else(|| bad("expected ADDRESS/LENGTH, e.g. 10.30.0.0/24".into()))?;
    let addr: IpAddr = addr_text.parse().map_err(|_| bad(format!("`{addr_text}` is not an IP address")))?;
    let max = if addr.is_ipv4() { 30 } else { 126 };
    let len = match len_text.parse::<u8>() {
        Ok(n) if n <= max && len_text.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => {
            return Err(bad(format!(
                "the prefix length must be a number 0..={max} (room for a gateway and a container)"
            )))
        }
    };
    let subnet = Cidr::new(addr, len).expect("length checked");
    if subnet.addr() != addr {
        return Err(bad(format!("host bits are set (did you mean `{subnet}`?)")));
    }
    Ok(subnet)
}

/// A network as the policy declares it (always the bridge driver).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkSpec {
    pub name: String,
    /// No route out of the host (`docker network create --internal`).
    pub internal: bool,
    /// Whether containers on this network may talk to each other directly.
    pub icc: bool,
    /// Docker picks one from its pools when `None`.
    pub subnet: Option<Cidr>,
    /// Labels besides `seg.managed` (compose's, for a project's network,
    /// so that `docker-compose up` adopts it).
    pub labels: BTreeMap<String, String>,
}

impl NetworkSpec {
    pub fn new(
        name: &str,
        internal: bool,
        icc: bool,
        subnet: Option<Cidr>,
    ) -> Result<NetworkSpec, NetworkError> {
        validate_name(name)?;
        Ok(NetworkSpec { name: name.to_owned(), internal, icc, subnet, labels: BTreeMap::new() })
    }
}
