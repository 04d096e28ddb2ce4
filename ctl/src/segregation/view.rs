//! A policy shown back normalized: every default spelled out, so `segctl
//! policy show` says what is enforced rather than what was typed.

use super::api::PolicySummary;
use super::store::Record;
use crate::policy::{Egress, Ingress, Peer, Policy};
use serde_json::{json, Map, Value};

pub fn summary(record: &Record, policy: &Policy) -> PolicySummary {
    PolicySummary {
        name: record.name.clone(),
        origin: policy.origin.clone(),
        services: policy.services.keys().map(|k| k.0.clone()).collect(),
        networks: policy.networks.keys().map(|k| k.0.clone()).collect(),
        applied_at: record.applied_at,
    }
}

fn peer(p: &Peer) -> Value {
    match p {
        Peer::World => json!("world"),
        Peer::Service(r) => match &r.project {
            Some(project) => json!(format!("{project}/{}", r.service)),
            None => json!(r.service),
        },
        Peer::Cidr(c) => json!(c.to_string()),
    }
}

fn ingress(i: &Ingress) -> Value {
    match i {
        Ingress::Any => json!("any"),
        Ingress::Allow(rules) if rules.is_empty() => json!("none"),
        Ingress::Allow(rules) => Value::Array(
            rules
                .iter()
                .map(|r| {
                    let ports = match &r.ports {
                        Some(p) => Value::Array(p.0.iter().map(|x| json!(x.to_string())).collect()),
                        None => json!("all"),
                    };
                    json!({ "from": r.from.0.iter().map(peer).collect::<Vec<_>>(), "ports": ports })
                })
                .collect(),
        ),
    }
}

fn egress(e: &Egress) -> Value {
    match e {
        Egress::Any => json!("any"),
        Egress::Allow(peers) if peers.is_empty() => json!("none"),
        Egress::Allow(peers) => Value::Array(peers.iter().map(peer).collect()),
    }
}

/// The policy as a JSON value (also printed as YAML).
pub fn normalized(policy: &Policy) -> Value {
    let networks: Map<String, Value> = policy
        .networks
        .iter()
        .map(|(k, d)| (k.0.clone(), json!({ "internal": d.internal, "icc": d.icc })))
        .collect();
    let services: Map<String, Value> = policy
        .services
        .iter()
        .map(|(k, s)| {
            let nets: Vec<&str> = s.networks.iter().map(|n| n.0.as_str()).collect();
            (
                k.0.clone(),
                json!({ "ingress": ingress(&s.ingress), "egress": egress(&s.egress), "networks": nets }),
            )
        })
        .collect();
    json!({
        "version": 1,
        "project": policy.project(),
        "networks": networks,
        "services": services,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_policy;

    #[test]
    fn defaults_are_spelled_out() {
        let text = "version: 1\nproject: shop\nnetworks:\n  backend: {}\nservices:\n  web: { ingress: [{ from: world, ports: [8080] }] }\n  db: { ingress: [{ from: [web, 10.0.0.0/8] }], egress: none, networks: [backend] }\n";
        let v = normalized(&parse_policy(text, "shop.yaml").unwrap());
        assert_eq!(v["networks"]["backend"], json!({ "internal": false, "icc": true }));
        assert_eq!(v["services"]["web"]["ingress"][0], json!({ "from": ["world"], "ports": ["8080/tcp"] }));
        assert_eq!(v["services"]["web"]["egress"], "any");
        assert_eq!(v["services"]["db"]["ingress"][0]["ports"], "all");
        assert_eq!(v["services"]["db"]["ingress"][0]["from"], json!(["web", "10.0.0.0/8"]));
        assert_eq!((&v["services"]["db"]["egress"], &v["project"]), (&json!("none"), &json!("shop")));
    }
}
