//! The host's bridge links and their addresses, over rtnetlink (two dumps)
//! rather than by parsing `ip` output: Docker names a network's bridge
//! device, but only the kernel knows whether it exists. A network whose
//! bridge is gone is not isolated by rules that name it (they match no
//! traffic), so `policy apply` warns about it.

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// A bridge interface on the host (docker0, br-…).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bridge {
    pub name: String,
    pub index: u32,
    /// Administratively up.
    pub up: bool,
    pub addrs: Vec<IfAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IfAddr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot read the host's network links over netlink ({action}): {reason}; \
     segctl must run on the Docker host, in its network namespace"
)]
pub struct BridgeError {
    action: &'static str,
    reason: String,
}

fn netlink_error(action: &'static str, e: impl std::fmt::Display) -> BridgeError {
    BridgeError { action, reason: e.to_string() }
}

/// Every bridge link of the host's network namespace, sorted by name.
pub async fn bridges() -> Result<Vec<Bridge>, BridgeError> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|e| netlink_error("open a socket", e))?;
    let task = tokio::spawn(connection);
    let links = handle.link().get().execute().try_collect::<Vec<_>>().await;
    let addrs = handle.address().get().execute().try_collect::<Vec<_>>().await;
    // The connection task ends once the handle is gone; abort anyway so an
    // error path never leaves it behind.
    drop(handle);
    task.abort();
    let links = links.map_err(|e| netlink_error("list links", e))?;
    let addrs = addrs.map_err(|e| netlink_error("list addresses", e))?;
    Ok(bridges_from(&links, &addrs))
}

fn is_bridge(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge))),
        _ => false,
    })
}

fn address_of(msg: &AddressMessage) -> Option<IfAddr> {
    // IPv4 puts the interface's own address in Local (Address is the peer's
    // on point-to-point links); IPv6 has Address only.
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    local.or(address).map(|addr| IfAddr { addr, prefix_len: msg.header.prefix_len })
}

/// Pure: the bridges among `links`, with their addresses from `addrs`.
pub fn bridges_from(links: &[LinkMessage], addrs: &[AddressMessage]) -> Vec<Bridge> {
    let mut out: Vec<Bridge> = links
        .iter()
        .filter(|l| is_bridge(l))
        .filter_map(|l| {
            let name = l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })?;
            let index = l.header.index;
            let mut addrs: Vec<IfAddr> =
                addrs.iter().filter(|a| a.header.index == index).filter_map(address_of).collect();
            addrs.sort();
            Some(Bridge { name, index, up: l.header.flags.contains(LinkFlags::Up), addrs })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The bridge devices among `wanted` (as networks name them) that the host
/// does not have (a network whose bridge vanished must not be trusted to be
/// isolated).
pub fn missing_bridges<'a>(wanted: impl IntoIterator<Item = &'a str>, bridges: &[Bridge]) -> Vec<String> {
    let present: BTreeSet<&str> = bridges.iter().map(|b| b.name.as_str()).collect();
    let mut missing: Vec<String> =
        wanted.into_iter().filter(|name| !present.contains(name)).map(str::to_owned).collect();
    missing.sort();
    missing.dedup();
    missing
}

#[cfg(test)]
#[path = "bridges_tests.rs"]
mod tests;
