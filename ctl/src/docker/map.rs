//! Docker's shapes → seg's: inspections for attestation, events for the
//! pump. Pure, so it is unit tested; missing fields read as the safe side.

use super::{Event, Kind};
use crate::attest::{BindMount, ContainerInfo};
use bollard::models::{ContainerInspectResponse, EventMessage, EventMessageTypeEnum};
use std::time::Duration;

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
