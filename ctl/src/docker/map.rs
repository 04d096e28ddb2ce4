//! Docker's shapes → seg's, in one place: inspections for attestation,
//! lists and inspections for the firewall's picture (and post-rotate
//! targets), networks, events for the pump. Pure, so it is unit tested;
//! missing fields read as the safe side.

use super::{Event, Kind};
use crate::attest::{BindMount, ContainerInfo};
use crate::firewall::{ContainerFacts, NetEndpoint, NetworkFacts, PublishedPort};
use crate::policy::{Cidr, Proto};
use bollard::models::{
    ContainerInspectResponse, ContainerSummary, ContainerSummaryStateEnum, EndpointSettings, EventMessage,
    EventMessageTypeEnum, Network, PortSummaryTypeEnum,
};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// One container as seen by the engine. A stopped one is kept without
/// addresses: its networks stay guarded (an address that shows up there
/// unannounced — it restarted while the controller was not looking — is
/// dropped until the controller knows it), and it reaches nothing.
#[derive(Clone, Debug)]
pub struct Known {
    pub facts: ContainerFacts,
    pub name: String,
    /// Host PID of its main process (`None` from a list: lists carry none).
    pub pid: Option<u32>,
}

/// Maps an inspect response; missing fields read as "not running, no labels".
pub fn container_info(asked: &str, r: ContainerInspectResponse) -> ContainerInfo {
    let state = r.state.unwrap_or_default();
    let binds = r
        .mounts
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.typ.as_deref() == Some("bind"))
        .filter_map(|m| {
            Some(BindMount {
                source: m.source?.into(),
                destination: m.destination.unwrap_or_default(),
                // Docker omits RW only on very old engines; assume the worst.
                writable: m.rw.unwrap_or(true),
            })
        })
        .collect();
    ContainerInfo {
        id: r.id.unwrap_or_else(|| asked.to_owned()),
        name: r.name.unwrap_or_default().trim_start_matches('/').to_owned(),
        labels: r.config.and_then(|c| c.labels).unwrap_or_default().into_iter().collect(),
        pid: state.pid.unwrap_or(0),
        running: state.running.unwrap_or(false),
        binds,
    }
}

/// A container or network event with an actor; anything else is not ours.
pub fn event_from(m: EventMessage) -> Option<Event> {
    let kind = match m.typ? {
        EventMessageTypeEnum::CONTAINER => Kind::Container,
        EventMessageTypeEnum::NETWORK => Kind::Network,
        _ => return None,
    };
    let actor = m.actor?;
    let container = actor.attributes.and_then(|mut a| a.remove("container"));
    Some(Event {
        kind,
        action: m.action?,
        actor: actor.id?,
        container,
        at: m.time_nano.and_then(|n| u64::try_from(n).ok()).map(Duration::from_nanos),
    })
}

pub fn network_facts(n: Network) -> NetworkFacts {
    let subnets = n.ipam.and_then(|i| i.config).unwrap_or_default();
    NetworkFacts {
        id: n.id.unwrap_or_default(),
        name: n.name.unwrap_or_default(),
        driver: n.driver.unwrap_or_default(),
        labels: n.labels.unwrap_or_default().into_iter().collect(),
        options: n.options.unwrap_or_default().into_iter().collect(),
        // Docker never reports host bits; anything unparsable is not ours to guard.
        subnets: subnets.into_iter().filter_map(|c| c.subnet?.parse::<Cidr>().ok()).collect(),
    }
}

fn endpoints(networks: Option<HashMap<String, EndpointSettings>>) -> Vec<NetEndpoint> {
    let mut out: Vec<NetEndpoint> = networks
        .unwrap_or_default()
        .into_iter()
        .map(|(network, e)| NetEndpoint {
            network,
            // Docker reports "" for "no address".
            ipv4: e.ip_address.and_then(|a| a.parse().ok()),
            ipv6: e.global_ipv6_address.and_then(|a| a.parse().ok()),
        })
        .collect();
    out.sort_by(|a, b| a.network.cmp(&b.network));
    out
}

fn host_ip(text: Option<&str>) -> Option<IpAddr> {
    text.and_then(|t| t.parse().ok()).filter(|ip: &IpAddr| !ip.is_unspecified())
}

/// Forgets an endpoint's addresses, keeping its network.
pub fn strip(e: &mut NetEndpoint) {
    e.ipv4 = None;
    e.ipv6 = None;
}

/// A container that does not run has no address worth a rule (Docker may
/// still report its last one).
fn stopped(mut facts: ContainerFacts) -> ContainerFacts {
    facts.endpoints.iter_mut().for_each(strip);
    facts.published.clear();
    facts
}

pub fn from_summary(s: ContainerSummary) -> Option<Known> {
    let running =
        matches!(s.state, Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::PAUSED));
    let id = s.id.filter(|id| !id.is_empty())?;
    let name = s.names.unwrap_or_default().into_iter().next().unwrap_or_default();
    let mut published: Vec<PublishedPort> = s
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            let proto = match p.typ {
                Some(PortSummaryTypeEnum::UDP) => Proto::Udp,
                Some(PortSummaryTypeEnum::SCTP) => return None,
                _ => Proto::Tcp,
            };
            let host_port = p.public_port.filter(|port| *port > 0)?;
            Some(PublishedPort {
                proto,
                container_port: p.private_port,
                host_ip: host_ip(p.ip.as_deref()),
                host_port,
            })
        })
        .collect();
    published.sort();
    published.dedup();
    let facts = ContainerFacts {
        id,
        labels: s.labels.unwrap_or_default().into_iter().collect(),
        endpoints: endpoints(s.network_settings.and_then(|n| n.networks)),
        published,
    };
    let facts = if running { facts } else { stopped(facts) };
    Some(Known { facts, name: name.trim_start_matches('/').to_owned(), pid: None })
}

pub fn from_inspect(r: ContainerInspectResponse) -> Option<Known> {
    let state = r.state.unwrap_or_default();
    let running = state.running == Some(true);
    let pid = state.pid.and_then(|p| u32::try_from(p).ok()).filter(|p| *p > 0 && running);
    let id = r.id.filter(|id| !id.is_empty())?;
    let settings = r.network_settings.unwrap_or_default();
    let mut published = Vec::new();
    for (key, bindings) in settings.ports.unwrap_or_default() {
        let (port, proto) = key.split_once('/').unwrap_or((&key, "tcp"));
        let (Ok(container_port), Ok(proto)) = (port.parse::<u16>(), proto.parse::<Proto>()) else { continue };
        for b in bindings.unwrap_or_default() {
            let Some(host_port) = b.host_port.and_then(|p| p.parse().ok()).filter(|p: &u16| *p > 0) else {
                continue;
            };
            published.push(PublishedPort {
                proto,
                container_port,
                host_ip: host_ip(b.host_ip.as_deref()),
                host_port,
            });
        }
    }
    published.sort();
    published.dedup();
    let facts = ContainerFacts {
        id,
        labels: r.config.and_then(|c| c.labels).unwrap_or_default().into_iter().collect(),
        endpoints: endpoints(settings.networks),
        published,
    };
    let name = r.name.unwrap_or_default().trim_start_matches('/').to_owned();
    let facts = if running { facts } else { stopped(facts) };
    Some(Known { facts, name, pid })
}

#[cfg(test)]
#[path = "map_tests.rs"]
mod tests;
