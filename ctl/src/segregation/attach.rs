//! The networks a policy declares, and which containers sit on them.
//!
//! Pure planning ([`to_create`], [`desired`]) and one async step that runs
//! it through the [`NetworkApi`] seam ([`ensure`]). A policy's network key
//! stands for the Docker network compose would use (`<project>_<key>`, found
//! by compose's labels first); seg creates a missing one with compose's
//! labels and no driver options, so a later `docker-compose up` adopts it.
//! Docker's own ICC stays on in networks seg creates: `icc: false` is
//! enforced by seg's rules, which let policy-allowed flows through (Docker's
//! `enable_icc=false` would drop them after seg returned them).

use super::api::NetworkReport;
use crate::firewall::{Container, Inventory};
use crate::identity::{COMPOSE_NETWORK, COMPOSE_PROJECT};
use crate::network::{self, Attachments, NetworkApi, NetworkSpec, Op, PREDEFINED};
use crate::policy::Policy;
use seg_common::api::Identity;
use std::collections::{BTreeMap, BTreeSet};

/// The Docker network a policy's `networks:` key stands for: an existing
/// one (compose labels, then `<project>_<key>`, then the name), else the
/// name seg creates. `default` without a project is Docker's `bridge`.
pub fn network_name(inv: &Inventory, project: Option<&str>, key: &str) -> String {
    if let Some(n) = inv.resolve_network(project, key) {
        return n.name.clone();
    }
    match (project, key) {
        (None, "default") => "bridge".to_string(),
        (Some(p), k) => format!("{p}_{k}"),
        (None, k) => k.to_string(),
    }
}

/// Declared networks that do not exist yet, as seg would create them.
pub fn to_create(policy: &Policy, inv: &Inventory) -> Vec<NetworkSpec> {
    let mut out = Vec::new();
    for (key, decl) in &policy.networks {
        if PREDEFINED.contains(&key.0.as_str()) || inv.resolve_network(policy.project(), &key.0).is_some() {
            continue;
        }
        let name = network_name(inv, policy.project(), &key.0);
        let Ok(mut spec) = NetworkSpec::new(&name, decl.internal, true, None) else { continue };
        if let Some(project) = policy.project() {
            spec.labels = BTreeMap::from([
                (COMPOSE_PROJECT.to_string(), project.to_string()),
                (COMPOSE_NETWORK.to_string(), key.0.clone()),
            ]);
        }
        out.push(spec);
    }
    out
}

/// Every running container of a service that lists `networks:`, with the
/// Docker networks it must be on (exactly). Services without `networks:`
/// are left where they are, and so are containers that cannot be attached
/// ([`attachable`]).
pub fn desired(policies: &[Policy], inv: &Inventory) -> Attachments {
    let mut wanted: BTreeMap<Identity, BTreeSet<String>> = BTreeMap::new();
    for p in policies {
        for (key, spec) in p.services.iter().filter(|(_, s)| !s.networks.is_empty()) {
            let nets = spec.networks.iter().map(|n| network_name(inv, p.project(), &n.0)).collect();
            wanted.insert(Identity::new(p.project(), &key.0), nets);
        }
    }
    inv.containers
        .iter()
        .filter(|c| attachable(c))
        .filter_map(|c| Some((c.id.clone(), wanted.get(c.service.as_ref()?)?.clone())))
        .collect()
}

/// Whether Docker can connect the container to a network: not with
/// `network_mode: none` or `host`. A `seg.for` sidecar has the identity of
/// the service it acts for, and hardened sidecars run with `network_mode:
/// none`: moving one would fail and stop the other steps.
fn attachable(c: &Container) -> bool {
    !c.endpoints.iter().any(|e| matches!(e.network.as_str(), "none" | "host"))
}

/// Where containers are now, by id.
pub fn actual(inv: &Inventory) -> Attachments {
    inv.containers
        .iter()
        .map(|c| (c.id.clone(), c.endpoints.iter().map(|e| e.network.clone()).collect()))
        .collect()
}

/// The steps that put `only` (or every container) on its declared networks.
pub fn plan(policies: &[Policy], inv: &Inventory, only: Option<&str>) -> Vec<Op> {
    let mut want = desired(policies, inv);
    if let Some(id) = only {
        want.retain(|k, _| k == id);
    }
    network::plan_attachments(&want, &actual(inv))
}

/// Creates the missing networks of `policy`, reporting (never changing)
/// existing ones that differ.
pub async fn ensure(api: &impl NetworkApi, policy: &Policy, inv: &Inventory, report: &mut NetworkReport) {
    let mut specs = to_create(policy, inv);
    // Existing declared networks are compared too (internal, Docker's ICC).
    for (key, decl) in &policy.networks {
        if let Some(n) = inv.resolve_network(policy.project(), &key.0) {
            if let Ok(spec) = NetworkSpec::new(&n.name, decl.internal, true, None) {
                specs.push(spec);
            }
        }
    }
    match network::ensure_networks(api, &specs).await {
        Ok(done) => {
            report.created.extend(done.created);
            report.warnings.extend(done.mismatched.iter().map(|m| {
                format!("{m} (seg enforces `icc: false` itself; Docker's own enable_icc=false would also drop flows the policy allows)")
            }));
        }
        Err(e) => report.warnings.push(format!("cannot create the policy's networks: {e}")),
    }
}

/// Runs attachment steps, recording what was done; a failed step stops
/// the rest (connects come first, so no container lost its last network).
pub async fn run(api: &impl NetworkApi, ops: &[Op], report: &mut NetworkReport) {
    match network::apply_attachments(api, ops).await {
        Ok(_) => report.attachments.extend(ops.iter().map(ToString::to_string)),
        Err(e) => {
            if let network::NetworkError::Step { done, .. } = &e {
                report.attachments.extend(ops[..*done].iter().map(ToString::to_string));
            }
            report.warnings.push(e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::{NetEndpoint, Network};
    use crate::policy::parse_policy;

    fn inv() -> Inventory {
        let net = |name: &str, key: &str| Network {
            name: name.into(),
            bridge: None,
            subnets: vec![],
            compose_project: Some("shop".into()),
            compose_network: Some(key.into()),
        };
        let c = |id: &str, svc: &str, nets: &[&str]| Container {
            id: id.into(),
            service: Some(Identity::new(Some("shop"), svc)),
            endpoints: nets
                .iter()
                .map(|n| NetEndpoint { network: n.to_string(), ipv4: None, ipv6: None })
                .collect(),
            published: vec![],
        };
        Inventory {
            containers: vec![
                c("w1", "web", &["shop_default"]),
                c("d1", "db", &["shop_default"]),
                c("a1", "api", &["shop_default"]),
                c("s1", "db", &["none"]),
            ],
            networks: vec![net("shop_default", "default")],
        }
    }

    const POLICY: &str = "version: 1\nproject: shop\nnetworks:\n  backend: { internal: true }\nservices:\n  web: {}\n  api: { networks: [default, backend] }\n  db: { networks: [backend] }\n";

    #[test]
    fn missing_networks_are_created_for_compose_and_containers_moved_exactly() {
        let policy = parse_policy(POLICY, "shop.yaml").unwrap();
        let inv = inv();
        let specs = to_create(&policy, &inv);
        assert_eq!(specs.len(), 1);
        assert_eq!((specs[0].name.as_str(), specs[0].internal, specs[0].icc), ("shop_backend", true, true));
        assert_eq!(specs[0].labels[COMPOSE_NETWORK], "backend");
        let ops: Vec<String> =
            plan(std::slice::from_ref(&policy), &inv, None).iter().map(ToString::to_string).collect();
        assert_eq!(
            ops,
            ["connect a1 to shop_backend", "connect d1 to shop_backend", "disconnect d1 from shop_default"],
            "web has no networks: it stays where it is; db's sidecar on `none` too"
        );
        let only_db: Vec<String> =
            plan(&[policy], &inv, Some("d1")).iter().map(ToString::to_string).collect();
        assert_eq!(only_db.len(), 2);
        assert_eq!(network_name(&inv, None, "default"), "bridge");
    }
}
