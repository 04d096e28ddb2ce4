//! Addresses and ports: [`Cidr`], seg's one type for an IP network (policies,
//! the firewall's dispatch trie and Docker network subnets all use it), and
//! port ranges per protocol.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// IPv4 or IPv6: the two are compiled into separate tables
/// (`iptables-restore` / `ip6tables-restore`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn width(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// A network prefix with its host bits cleared. `10.0.0.5` parses as `/32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    family: Family,
    /// The address, right-aligned (an IPv4 address uses the low 32 bits).
    bits: u128,
    len: u8,
}

impl Cidr {
    pub fn new(addr: IpAddr, len: u8) -> Option<Cidr> {
        let (family, bits) = match addr {
            IpAddr::V4(a) => (Family::V4, u32::from(a) as u128),
            IpAddr::V6(a) => (Family::V6, u128::from(a)),
        };
        (len <= family.width()).then(|| Cidr { family, bits: bits & mask(family, len), len })
    }

    pub fn host(addr: IpAddr) -> Cidr {
        let width = if addr.is_ipv4() { 32 } else { 128 };
        Cidr::new(addr, width).expect("full-length prefix is valid")
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn is_host(&self) -> bool {
        self.len == self.family.width()
    }

    pub fn addr(&self) -> IpAddr {
        match self.family {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(self.bits as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(self.bits)),
        }
    }

    /// Bit `i` of the address, counting from the most significant bit.
    pub fn bit(&self, i: u8) -> bool {
        let width = self.family.width();
        (self.bits >> (width - 1 - i)) & 1 == 1
    }

    /// The same address cut to `len` bits (`len` ≤ the current length).
    pub fn truncate(&self, len: u8) -> Cidr {
        let len = len.min(self.len);
        Cidr { family: self.family, bits: self.bits & mask(self.family, len), len }
    }

    pub fn contains(&self, other: &Cidr) -> bool {
        self.family == other.family
            && self.len <= other.len
            && other.bits & mask(self.family, self.len) == self.bits
    }

    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        self.contains(&Cidr::host(ip))
    }

    /// Length of the prefix two addresses of the same family share.
    pub fn common_len(&self, other: &Cidr) -> u8 {
        let width = self.family.width();
        let diff = (self.bits ^ other.bits) << (128 - width as u32);
        let shared = if diff == 0 { width } else { diff.leading_zeros() as u8 };
        shared.min(self.len).min(other.len)
    }

    /// The iptables-save spelling: always with the length (`10.0.0.5/32`).
    pub fn to_iptables(&self) -> String {
        format!("{}/{}", self.addr(), self.len)
    }
}

fn mask(family: Family, len: u8) -> u128 {
    let width = family.width() as u32;
    if len == 0 {
        return 0;
    }
    let ones = u128::MAX << (128 - len as u32);
    ones >> (128 - width)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr())
        } else {
            write!(f, "{}/{}", self.addr(), self.len)
        }
    }
}

/// Why a text is not a [`Cidr`]; each variant names the text once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("bad CIDR `{text}`: `{addr}` is not an IP address")]
    NotAnAddress { text: String, addr: String },
    #[error("bad CIDR `{text}`: prefix length must be 0..={width}")]
    BadLength { text: String, width: u8 },
    #[error("bad CIDR `{text}`: host bits are set (did you mean `{network}`?)")]
    HostBits { text: String, network: Cidr },
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Refuses host bits past the prefix (`10.0.0.1/8`): such a typo usually
    /// means the author meant something narrower or wider than what would apply.
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (addr_text, len_text) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| CidrError::NotAnAddress { text: s.to_owned(), addr: addr_text.to_owned() })?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len_text {
            None => width,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= width && !l.starts_with('+') => n,
                _ => return Err(CidrError::BadLength { text: s.to_owned(), width }),
            },
        };
        let cidr = Cidr::new(addr, len).expect("length checked");
        if cidr.addr() != addr {
            return Err(CidrError::HostBits { text: s.to_owned(), network: cidr });
        }
        Ok(cidr)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A protocol other than tcp or udp.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol `{0}` (expected tcp or udp)")]
pub struct ProtoError(pub String);

impl FromStr for Proto {
    type Err = ProtoError;
    fn from_str(s: &str) -> Result<Proto, ProtoError> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            other => Err(ProtoError(other.to_owned())),
        }
    }
}

/// `8080/tcp`, `8000-8100/tcp`, `53/udp`; a bare `8080` means tcp, as in compose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub proto: Proto,
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, proto: Proto, port: u16) -> bool {
        self.proto == proto && (self.first..=self.last).contains(&port)
    }

    /// The iptables spelling of the port part (`80` or `8000:8100`).
    pub fn to_iptables(&self) -> String {
        if self.first == self.last {
            self.first.to_string()
        } else {
            format!("{}:{}", self.first, self.last)
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}/{}", self.first, self.proto.name())
        } else {
            write!(f, "{}-{}/{}", self.first, self.last, self.proto.name())
        }
    }
}

/// Why a text is not a [`PortRange`]; each variant names the text once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortRangeError {
    #[error("bad port `{text}`: {cause}")]
    Proto { text: String, cause: ProtoError },
    #[error("bad port `{text}`: `{port}` is not a port number 1-65535")]
    NotAPort { text: String, port: String },
    #[error("bad port range `{text}`: {first} is greater than {last}")]
    Reversed { text: String, first: u16, last: u16 },
}

impl FromStr for PortRange {
    type Err = PortRangeError;
    fn from_str(s: &str) -> Result<PortRange, PortRangeError> {
        let (ports, proto) = match s.split_once('/') {
            Some((p, proto)) => {
                let proto = proto.parse::<Proto>();
                (p, proto.map_err(|cause| PortRangeError::Proto { text: s.to_owned(), cause })?)
            }
            None => (s, Proto::Tcp),
        };
        let port = |t: &str| match t.parse::<u16>() {
            Ok(n) if n > 0 && !t.starts_with('+') => Ok(n),
            _ => Err(PortRangeError::NotAPort { text: s.to_owned(), port: t.to_owned() }),
        };
        let (first, last) = match ports.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(ports)?, port(ports)?),
        };
        if first > last {
            return Err(PortRangeError::Reversed { text: s.to_owned(), first, last });
        }
        Ok(PortRange { proto, first, last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parse_and_bits() {
        let c: Cidr = "10.203.0.0/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.203.0.0/16");
        assert!(c.contains(&"10.203.7.9".parse().unwrap()));
        assert!(!c.contains(&"10.204.0.1".parse().unwrap()));
        let h: Cidr = "10.0.0.5".parse().unwrap();
        assert_eq!(h.to_iptables(), "10.0.0.5/32");
        assert!(h.bit(29) && !h.bit(30) && h.bit(31));
        let a: Cidr = "10.0.0.4".parse().unwrap();
        assert_eq!(a.common_len(&h), 31);
        assert!("10.0.0.1/8".parse::<Cidr>().unwrap_err().to_string().contains("did you mean `10.0.0.0/8`"));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0/8".parse::<Cidr>().is_err());
        let v6: Cidr = "fd00:1::/64".parse().unwrap();
        assert_eq!(v6.family(), Family::V6);
        assert!(v6.contains(&"fd00:1::7".parse().unwrap()));
        assert_eq!("::/0".parse::<Cidr>().unwrap().prefix_len(), 0);
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(&h));
    }

    #[test]
    fn ports_parse() {
        let p: PortRange = "8000-8100/udp".parse().unwrap();
        assert_eq!((p.proto, p.first, p.last), (Proto::Udp, 8000, 8100));
        assert_eq!(p.to_iptables(), "8000:8100");
        assert_eq!("8080".parse::<PortRange>().unwrap().to_string(), "8080/tcp");
        for bad in ["0/tcp", "70000/tcp", "80/sctp", "9-8/tcp", "x/tcp", "", "80-/tcp", "+80"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad} should be refused");
        }
    }
}
