//! From the engine's container list (`GET /containers/json`) to
//! [`LiveContainer`]s: pure, so the engine-facing shapes are unit tested.

use super::{Attachment, LiveContainer, Proto, Published};
use crate::attest::labels::{COMPOSE_PROJECT, COMPOSE_SERVICE, SEG_FOR, SEG_PROJECT, SEG_SERVICE};
use crate::network::NetworkInfo;
use bollard::models::{
    ContainerSummary, ContainerSummaryStateEnum, EndpointSettings, PortSummary, PortSummaryTypeEnum,
};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

/// The running (or paused: it keeps its addresses) containers, sorted by name.
pub fn from_summaries(summaries: Vec<ContainerSummary>, networks: &[NetworkInfo]) -> Vec<LiveContainer> {
    let mut out: Vec<LiveContainer> = summaries
        .into_iter()
        .filter(|s| {
            matches!(s.state, Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::PAUSED))
        })
        .filter_map(|s| live_container(s, networks))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// One container; `None` if the engine gave no id. The PID is left unknown.
pub fn live_container(s: ContainerSummary, networks: &[NetworkInfo]) -> Option<LiveContainer> {
    let id = s.id.filter(|id| !id.is_empty())?;
    let name = s.names.unwrap_or_default().into_iter().next().map(|n| n.trim_start_matches('/').to_owned());
    let labels: BTreeMap<String, String> = s.labels.unwrap_or_default().into_iter().collect();
    let label = |key: &str| labels.get(key).filter(|v| !v.is_empty()).cloned();
    let endpoints = s.network_settings.and_then(|n| n.networks).unwrap_or_default();
    let mut attachments: Vec<Attachment> =
        endpoints.into_iter().map(|(net, endpoint)| attachment(net, endpoint, networks)).collect();
    attachments.sort_by(|a, b| a.network_name.cmp(&b.network_name));
    let mut published: Vec<Published> = s.ports.unwrap_or_default().iter().filter_map(published).collect();
    published.sort();
    published.dedup();
    Some(LiveContainer {
        project: label(COMPOSE_PROJECT).or_else(|| label(SEG_PROJECT)),
        service: label(COMPOSE_SERVICE).or_else(|| label(SEG_SERVICE)),
        acts_for: label(SEG_FOR),
        name: name.unwrap_or_else(|| id.clone()),
        id,
        labels,
        networks: attachments,
        published,
        pid: None,
    })
}

fn attachment(network_name: String, e: EndpointSettings, networks: &[NetworkInfo]) -> Attachment {
    let network_id = e.network_id.unwrap_or_default();
    let known = networks
        .iter()
        .find(|n| !network_id.is_empty() && n.id == network_id)
        .or_else(|| networks.iter().find(|n| n.name == network_name));
    Attachment {
        bridge_if: known.and_then(|n| n.bridge_if.clone()),
        // Docker reports "" for "no address" (host or none network, or no IPv6).
        ipv4: e.ip_address.and_then(|a| a.parse().ok()),
        ipv6: e.global_ipv6_address.and_then(|a| a.parse().ok()),
        network_name,
        network_id,
    }
}

/// A published port; `None` for a port that is only exposed, or an address
/// Docker should never report (logged: the firewall then allows nothing for it).
fn published(p: &PortSummary) -> Option<Published> {
    let host_port = p.public_port.filter(|port| *port > 0)?;
    let host_ip = match p.ip.as_deref() {
        None | Some("") => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Some(text) => match text.parse() {
            Ok(ip) => ip,
            Err(_) => {
                tracing::warn!(
                    address = text,
                    port = host_port,
                    "Docker reported an unparsable host address"
                );
                return None;
            }
        },
    };
    let proto = match p.typ {
        Some(PortSummaryTypeEnum::UDP) => Proto::Udp,
        Some(PortSummaryTypeEnum::SCTP) => Proto::Sctp,
        // The API's default protocol.
        _ => Proto::Tcp,
    };
    Some(Published { host_ip, host_port, container_port: p.private_port, proto })
}
