//! What a policy declares about a network, validated before anything reaches
//! the engine so a typo is reported with its reason rather than as a Docker error.

use super::{NetworkError, PREDEFINED};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

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

/// An IPv4 or IPv6 subnet for a network's IPAM, host bits clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnet {
    addr: IpAddr,
    len: u8,
}

impl Subnet {
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// `addr` with every bit past `len` cleared.
fn network_address(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

impl FromStr for Subnet {
    type Err = NetworkError;

    /// Refuses host bits past the prefix (`10.0.0.1/8`: a typo for something
    /// else) and prefixes too narrow to hold a gateway and one container.
    fn from_str(text: &str) -> Result<Subnet, NetworkError> {
        let bad = |why: String| NetworkError::BadSubnet { text: text.to_owned(), why };
        let (addr_text, len_text) =
            text.split_once('/').ok_or_else(|| bad("expected ADDRESS/LENGTH, e.g. 10.30.0.0/24".into()))?;
        let addr: IpAddr =
            addr_text.parse().map_err(|_| bad(format!("`{addr_text}` is not an IP address")))?;
        let max = if addr.is_ipv4() { 30 } else { 126 };
        let len = match len_text.parse::<u8>() {
            Ok(n) if n <= max && len_text.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(bad(format!(
                    "the prefix length must be a number 0..={max} (room for a gateway and a container)"
                )))
            }
        };
        let network = network_address(addr, len);
        if network != addr {
            return Err(bad(format!("host bits are set (did you mean `{network}/{len}`?)")));
        }
        Ok(Subnet { addr, len })
    }
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
    pub subnet: Option<Subnet>,
    /// Labels besides `seg.managed` (compose's, for a project's network,
    /// so that `docker-compose up` adopts it).
    pub labels: BTreeMap<String, String>,
}

impl NetworkSpec {
    pub fn new(
        name: &str,
        internal: bool,
        icc: bool,
        subnet: Option<Subnet>,
    ) -> Result<NetworkSpec, NetworkError> {
        validate_name(name)?;
        Ok(NetworkSpec { name: name.to_owned(), internal, icc, subnet, labels: BTreeMap::new() })
    }
}
