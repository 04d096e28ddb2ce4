//! `segctl policy check`: would the policies let this flow through, and
//! which rule decides? Answered from the policies themselves (pure), so the
//! answer can name the rule; the compiled rules are tested to agree.

use super::ports::PortSet;
use crate::policy::{Cidr, Egress, Ingress, Peer, Policy, Proto};
use seg_common::api::Identity;
use std::fmt;
use std::net::IpAddr;

/// Where a flow comes from or goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowEnd {
    /// Anything that is not a container (through a published port).
    World,
    Service(Identity),
    /// An address outside seg's knowledge (matched against CIDRs only).
    Address(IpAddr),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The deciding rule, e.g. `shop.yaml: services.db.ingress[0]`.
    pub rule: String,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", if self.allowed { "allow" } else { "deny" }, self.rule)
    }
}

/// Decides `from` → `to` on `proto`/`port`: the sender's egress first, then
/// the receiver's ingress. A service no policy names is unrestricted.
pub fn check(policies: &[Policy], from: &FlowEnd, to: &FlowEnd, proto: Proto, port: u16) -> Decision {
    if let FlowEnd::Service(id) = from {
        if let Some((policy, key, Egress::Allow(peers))) =
            find(policies, id).map(|(p, k, s)| (p, k, &s.egress))
        {
            let hit = peers.iter().position(|peer| peer_matches(policy, peer, to));
            let rule = match hit {
                Some(i) => format!("{}: services.{key}.egress[{i}]", policy.origin),
                None => format!("{}: services.{key}.egress (not listed)", policy.origin),
            };
            if hit.is_none() {
                return Decision { allowed: false, rule };
            }
        }
    }
    let FlowEnd::Service(id) = to else {
        return Decision { allowed: true, rule: "destination is not a service".into() };
    };
    let Some((policy, key, spec)) = find(policies, id) else {
        return Decision { allowed: true, rule: format!("`{id}` is in no policy") };
    };
    let rules = match &spec.ingress {
        Ingress::Any => {
            return Decision {
                allowed: true,
                rule: format!("{}: services.{key}.ingress: any", policy.origin),
            }
        }
        Ingress::Allow(rules) => rules,
    };
    for (i, rule) in rules.iter().enumerate() {
        let ports = PortSet::from_policy(rule.ports.as_ref().map(|p| p.0.as_slice()));
        if ports.allows(proto, port) && rule.from.0.iter().any(|peer| peer_matches(policy, peer, from)) {
            return Decision {
                allowed: true,
                rule: format!("{}: services.{key}.ingress[{i}]", policy.origin),
            };
        }
    }
    Decision { allowed: false, rule: format!("{}: services.{key}: default deny", policy.origin) }
}

fn find<'a>(
    policies: &'a [Policy],
    id: &Identity,
) -> Option<(&'a Policy, &'a str, &'a crate::policy::ServiceSpec)> {
    policies
        .iter()
        .filter(|p| p.project() == id.project.as_deref())
        .find_map(|p| p.services.get_key_value(id.service.as_str()).map(|(k, s)| (p, k.0.as_str(), s)))
}

fn peer_matches(policy: &Policy, peer: &Peer, who: &FlowEnd) -> bool {
    match (peer, who) {
        (Peer::World, FlowEnd::World) => true,
        (Peer::Service(r), FlowEnd::Service(id)) => {
            let (project, service) = policy.resolve(r);
            Identity { project, service } == *id
        }
        (Peer::Cidr(c), FlowEnd::Address(ip)) => c.contains(&Cidr::host(*ip)),
        _ => false,
    }
}
