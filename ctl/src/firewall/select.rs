//! Which backend to run (`segctl node run --firewall auto|nftables|iptables`)
//! and which one Docker itself uses.

use super::exec::run;
use super::{Backend, Firewall, FirewallError, IptablesFirewall, NftablesFirewall};
use std::fmt;
use std::str::FromStr;

/// The `--firewall` setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// nftables when `nft` is installed and the kernel takes seg's kind of
    /// table (a probe transaction), else iptables.
    Auto,
    Nftables,
    Iptables,
}

impl FromStr for Choice {
    type Err = String;
    fn from_str(s: &str) -> Result<Choice, String> {
        match s {
            "auto" => Ok(Choice::Auto),
            "nftables" => Ok(Choice::Nftables),
            "iptables" => Ok(Choice::Iptables),
            other => Err(format!("unknown firewall backend {other:?}; use auto, nftables or iptables")),
        }
    }
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Choice::Auto => "auto",
            Choice::Nftables => "nftables",
            Choice::Iptables => "iptables",
        })
    }
}

/// `--firewall nftables` on a host where nftables cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--firewall nftables: nftables cannot be used here; install nftables (nft 1.0+) or use --firewall iptables")]
pub struct Unavailable(#[source] pub FirewallError);

/// The backend `choice` stands for on this host.
pub fn choose(choice: Choice) -> Result<Backend, Unavailable> {
    match choice {
        Choice::Iptables => Ok(Backend::Iptables),
        Choice::Nftables => NftablesFirewall::new().probe().map(|_| Backend::Nftables).map_err(Unavailable),
        Choice::Auto => match NftablesFirewall::new().probe() {
            Ok(()) => Ok(Backend::Nftables),
            Err(e) => {
                tracing::info!(reason = %e, "nftables is not usable here; using iptables");
                Ok(Backend::Iptables)
            }
        },
    }
}

/// The host's firewall for `backend`, and the other one (whose seg rules
/// go once this one's are in place).
pub fn open(backend: Backend) -> (Box<dyn Firewall + Send>, Box<dyn Firewall + Send>) {
    let (ipt, nft): (Box<dyn Firewall + Send>, Box<dyn Firewall + Send>) =
        (Box::new(IptablesFirewall::new()), Box::new(NftablesFirewall::new()));
    match backend {
        Backend::Iptables => (ipt, nft),
        Backend::Nftables => (nft, ipt),
    }
}

/// Docker's own firewall backend, as seen in the kernel: Engine 29's
/// nftables backend has the tables `ip docker-bridges`; the iptables one
/// (iptables-nft or legacy) has a `DOCKER` chain in the filter table.
/// `None`: neither is there (dockerd not started, or another setup).
pub fn docker_backend() -> Option<Backend> {
    let prefix: [String; 0] = [];
    let tables = run(&prefix, "nft", &["list", "tables"], None).unwrap_or_default();
    if tables.lines().any(|l| l.trim() == "table ip docker-bridges" || l.trim() == "table ip6 docker-bridges")
    {
        return Some(Backend::Nftables);
    }
    let filter = run(&prefix, "iptables-save", &["-t", "filter"], None).unwrap_or_default();
    filter
        .lines()
        .any(|l| l.starts_with(":DOCKER ") || l.starts_with(":DOCKER-FORWARD "))
        .then_some(Backend::Iptables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_print() {
        for c in [Choice::Auto, Choice::Nftables, Choice::Iptables] {
            assert_eq!(c.to_string().parse::<Choice>(), Ok(c));
        }
        assert_eq!(
            "nft".parse::<Choice>(),
            Err("unknown firewall backend \"nft\"; use auto, nftables or iptables".to_string())
        );
        assert_eq!(choose(Choice::Iptables).unwrap(), Backend::Iptables);
    }
}
