//! Docker's shapes → seg's, in one place: inspections for attestation,
//! lists and inspections for the firewall's picture (and post-rotate
//! targets), networks, events for the pump. Pure, so it is unit tested;
//! missing fields read as the safe side.

use super::{Event, Kind};
use crate::attest::{BindMount, ContainerInfo};
use crate::firewall::{ContainerFacts, NetEndpoint, NetworkFacts, PublishedPort};
use crate::network::{bridge_interface, NetworkInfo, ICC_OPTION, MANAGED_LABEL};
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

/// Maps the engine's view of a network; `attached` is keyed by network id or name.
pub fn network_info(n: Network, attached: &HashMap<String, Vec<String>>) -> NetworkInfo {
    let name = n.name.unwrap_or_default();
    let id = n.id.unwrap_or_default();
    let driver = n.driver.unwrap_or_default();
    let options = n.options.unwrap_or_default();
    let subnets =
        n.ipam.and_then(|i| i.config).unwrap_or_default().into_iter().filter_map(|c| c.subnet).collect();
    let mut containers = attached.get(&id).or_else(|| attached.get(&name)).cloned().unwrap_or_default();
    containers.sort();
    NetworkInfo {
        bridge_if: bridge_interface(&driver, &name, &id, &options),
        icc: options.get(ICC_OPTION).map(String::as_str) != Some("false"),
        managed: n.labels.unwrap_or_default().get(MANAGED_LABEL).is_some_and(|v| v == "true"),
        internal: n.internal.unwrap_or(false),
        subnets,
        containers,
        name,
        id,
        driver,
    }
}

/// Container names per network id (or network name, if the engine omits the id).
pub fn attached_containers(summaries: &[ContainerSummary]) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for c in summaries {
        let name = c.names.as_ref().and_then(|n| n.first()).map(|n| n.trim_start_matches('/'));
        let Some(name) = name.or(c.id.as_deref()) else { continue };
        let networks = c.network_settings.as_ref().and_then(|s| s.networks.as_ref());
        for (net_name, endpoint) in networks.into_iter().flatten() {
            let key =
                endpoint.network_id.clone().filter(|id| !id.is_empty()).unwrap_or_else(|| net_name.clone());
            out.entry(key).or_default().push(name.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        ContainerConfig, ContainerState, ContainerSummaryNetworkSettings, EventActor, NetworkSettings,
        PortBinding, PortSummary,
    };

    fn endpoint(v4: &str) -> EndpointSettings {
        EndpointSettings {
            ip_address: Some(v4.into()),
            global_ipv6_address: Some(String::new()),
            ..Default::default()
        }
    }

    fn labels() -> HashMap<String, String> {
        HashMap::from([
            ("com.docker.compose.project".to_owned(), "shop".to_owned()),
            ("com.docker.compose.service".to_owned(), "db".to_owned()),
        ])
    }

    #[test]
    fn inspect_response_maps_to_container_info() {
        let r = ContainerInspectResponse {
            id: Some("abc".into()),
            name: Some("/web-1".into()),
            config: Some(ContainerConfig {
                labels: Some(HashMap::from([("seg.service".to_owned(), "web".to_owned())])),
                ..Default::default()
            }),
            state: Some(ContainerState { pid: Some(4242), running: Some(true), ..Default::default() }),
            ..Default::default()
        };
        let info = container_info("abc", r);
        assert_eq!(info.name, "web-1");
        assert_eq!(info.labels.get("seg.service").map(String::as_str), Some("web"));
        assert_eq!((info.pid, info.running, info.id.as_str()), (4242, true, "abc"));
        let empty = container_info("xyz", ContainerInspectResponse::default());
        assert_eq!((empty.id.as_str(), empty.running, empty.pid), ("xyz", false, 0));
        assert!(empty.labels.is_empty());
    }

    #[test]
    fn docker_events_map_to_seg_events() {
        let message = |typ, action: &str, attrs: &[(&str, &str)]| EventMessage {
            typ: Some(typ),
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some("n1".into()),
                attributes: Some(attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            }),
            time_nano: Some(1_500_000_000),
            ..Default::default()
        };
        let connect = event_from(message(EventMessageTypeEnum::NETWORK, "connect", &[("container", "c2")]));
        assert_eq!(
            connect,
            Some(Event {
                kind: Kind::Network,
                action: "connect".into(),
                actor: "n1".into(),
                container: Some("c2".into()),
                at: Some(Duration::from_millis(1500)),
            })
        );
        let die = event_from(message(EventMessageTypeEnum::CONTAINER, "die", &[])).unwrap();
        assert_eq!((die.kind, die.action.as_str(), die.container), (Kind::Container, "die", None));
        assert_eq!(event_from(message(EventMessageTypeEnum::IMAGE, "delete", &[])), None);
        assert_eq!(event_from(EventMessage::default()), None);
    }

    #[test]
    fn summaries_and_inspections_agree() {
        let summary = ContainerSummary {
            id: Some("c1".into()),
            names: Some(vec!["/shop_db_1".into()]),
            state: Some(ContainerSummaryStateEnum::RUNNING),
            labels: Some(labels()),
            network_settings: Some(ContainerSummaryNetworkSettings {
                networks: Some(HashMap::from([("shop_backend".to_owned(), endpoint("172.30.0.3"))])),
            }),
            ports: Some(vec![
                PortSummary {
                    ip: Some("0.0.0.0".into()),
                    private_port: 5432,
                    public_port: Some(15432),
                    typ: None,
                },
                PortSummary {
                    ip: Some("::".into()),
                    private_port: 5432,
                    public_port: Some(15432),
                    typ: None,
                },
                PortSummary { ip: None, private_port: 9999, public_port: None, typ: None },
            ]),
            ..Default::default()
        };
        let from_list = from_summary(summary.clone()).unwrap();
        let inspect = ContainerInspectResponse {
            id: Some("c1".into()),
            name: Some("/shop_db_1".into()),
            state: Some(ContainerState { running: Some(true), pid: Some(4242), ..Default::default() }),
            config: Some(ContainerConfig { labels: Some(labels()), ..Default::default() }),
            network_settings: Some(NetworkSettings {
                networks: Some(HashMap::from([("shop_backend".to_owned(), endpoint("172.30.0.3"))])),
                ports: Some(HashMap::from([
                    (
                        "5432/tcp".to_owned(),
                        Some(vec![
                            PortBinding { host_ip: Some("0.0.0.0".into()), host_port: Some("15432".into()) },
                            PortBinding { host_ip: Some("::".into()), host_port: Some("15432".into()) },
                        ]),
                    ),
                    ("9999/tcp".to_owned(), None),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let from_inspect = from_inspect(inspect.clone()).unwrap();
        assert_eq!((from_inspect.pid, from_list.pid), (Some(4242), None));
        assert_eq!(from_inspect.name, "shop_db_1");
        assert_eq!(from_list.facts.endpoints, from_inspect.facts.endpoints);
        assert_eq!(from_list.facts.published, from_inspect.facts.published);
        assert_eq!(from_list.facts.published.len(), 1, "one port, every host address");
        // A stopped container keeps its networks, not its addresses.
        let exited = ContainerSummary { state: Some(ContainerSummaryStateEnum::EXITED), ..summary };
        let stopped = from_summary(exited).unwrap();
        assert_eq!(stopped.facts.endpoints[0].network, "shop_backend");
        assert_eq!((stopped.facts.endpoints[0].ipv4, stopped.facts.published.len()), (None, 0));
        let mut dead = inspect;
        dead.state = Some(ContainerState { running: Some(false), pid: Some(0), ..Default::default() });
        let dead = super::from_inspect(dead).unwrap();
        assert_eq!((dead.pid, dead.facts.endpoints[0].ipv4), (None, None));
    }
}
