//! A picture of what a set of policies allows (pure): services as nodes,
//! allowed flows as edges labelled with their ports, `world` and egress
//! CIDRs as nodes of their own. An edge is drawn only where both ends
//! agree — the receiver's ingress admits the sender on those ports and the
//! sender's egress lets it out — exactly the flows `segctl policy check`
//! would allow. Rendered as Graphviz dot or a Mermaid flowchart.

use super::{Egress, Ingress, Peer, Policy};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Graph {
    /// Node id → what it is.
    pub nodes: BTreeMap<String, Node>,
    /// (from, to) → port labels.
    pub edges: BTreeMap<(String, String), BTreeSet<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// `project/service`, and whether it admits any container (`ingress: any`).
    Service {
        open: bool,
        no_egress: bool,
    },
    World,
    Cidr,
}

fn service_id(project: Option<&str>, service: &str) -> String {
    match project {
        Some(p) => format!("{p}/{service}"),
        None => service.to_owned(),
    }
}

/// The graph of `policies`; with `project`, only the flows that touch it.
pub fn build(policies: &[Policy], project: Option<&str>) -> Graph {
    let mut g = Graph::default();
    let mut egress: BTreeMap<String, Option<BTreeSet<Peer>>> = BTreeMap::new();
    for p in policies {
        for (key, spec) in &p.services {
            let id = service_id(p.project(), &key.0);
            let open = matches!(spec.ingress, Ingress::Any);
            let no_egress = matches!(&spec.egress, Egress::Allow(peers) if peers.is_empty());
            g.nodes.insert(id.clone(), Node::Service { open, no_egress });
            let allowed = match &spec.egress {
                Egress::Any => None,
                Egress::Allow(peers) => Some(peers.iter().map(|peer| resolved(p, peer)).collect()),
            };
            egress.insert(id, allowed);
        }
    }
    for p in policies {
        for (key, spec) in &p.services {
            let to = service_id(p.project(), &key.0);
            if let Ingress::Allow(rules) = &spec.ingress {
                for rule in rules {
                    let ports = rule.ports.as_ref().map_or_else(
                        || "any port".to_owned(),
                        |ps| ps.0.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", "),
                    );
                    for peer in &rule.from.0 {
                        let from = peer_node(&mut g, p, peer);
                        let lets_out = match egress.get(&from) {
                            Some(Some(allowed)) => allowed.contains(&to_peer(&to)),
                            _ => true,
                        };
                        if lets_out {
                            g.edges.entry((from, to.clone())).or_default().insert(ports.clone());
                        }
                    }
                }
            }
        }
        for (key, spec) in &p.services {
            if let Egress::Allow(peers) = &spec.egress {
                let from = service_id(p.project(), &key.0);
                for peer in peers.iter().filter(|peer| matches!(peer, Peer::Cidr(_))) {
                    let to = peer_node(&mut g, p, peer);
                    g.edges.entry((from.clone(), to)).or_default().insert("egress".to_owned());
                }
            }
        }
    }
    if let Some(project) = project {
        keep_project(&mut g, project);
    }
    g
}

/// A peer as written in `p`, resolved to its project.
fn resolved(p: &Policy, peer: &Peer) -> Peer {
    match peer {
        Peer::Service(r) => {
            let (project, service) = p.resolve(r);
            Peer::Service(super::ServiceRef { project, service })
        }
        other => other.clone(),
    }
}

fn to_peer(id: &str) -> Peer {
    let (project, service) = match id.split_once('/') {
        Some((p, s)) => (Some(p.to_owned()), s.to_owned()),
        None => (None, id.to_owned()),
    };
    Peer::Service(super::ServiceRef { project, service })
}

fn peer_node(g: &mut Graph, p: &Policy, peer: &Peer) -> String {
    let (id, node) = match resolved(p, peer) {
        Peer::World => ("world".to_owned(), Node::World),
        Peer::Cidr(c) => (c.to_string(), Node::Cidr),
        Peer::Service(r) => {
            let id = service_id(r.project.as_deref(), &r.service);
            let node = Node::Service { open: false, no_egress: false };
            (id, node)
        }
    };
    g.nodes.entry(id.clone()).or_insert(node);
    id
}

fn keep_project(g: &mut Graph, project: &str) {
    let ours = |id: &str| id.starts_with(&format!("{project}/"));
    g.edges.retain(|(a, b), _| ours(a) || ours(b));
    let used: BTreeSet<String> = g.edges.keys().flat_map(|(a, b)| [a.clone(), b.clone()]).collect();
    g.nodes.retain(|id, _| ours(id) || used.contains(id));
}

impl Graph {
    pub fn dot(&self) -> String {
        let mut out = String::from(
            "digraph seg {\n  rankdir=LR; ranksep=1.1; nodesep=0.25;\n  node [fontname=\"Helvetica\", fontsize=11];\n  edge [fontname=\"Helvetica\", fontsize=9];\n",
        );
        for (id, node) in &self.nodes {
            let style = match node {
                Node::World => "shape=doublecircle, style=filled, fillcolor=\"#ffe8cc\"".to_owned(),
                Node::Cidr => "shape=note, style=filled, fillcolor=\"#eeeeee\"".to_owned(),
                Node::Service { open, no_egress } => {
                    let mut label = id.clone();
                    if *open {
                        label.push_str("\\n(ingress: any)");
                    }
                    if *no_egress {
                        label.push_str("\\n(egress: none)");
                    }
                    format!("shape=box, style=\"rounded,filled\", fillcolor=\"#dbeafe\", label=\"{label}\"")
                }
            };
            let _ = writeln!(out, "  \"{id}\" [{style}];");
        }
        for ((a, b), ports) in &self.edges {
            let label = ports.iter().cloned().collect::<Vec<_>>().join("; ");
            let _ = writeln!(out, "  \"{a}\" -> \"{b}\" [label=\"{label}\"];");
        }
        out.push_str("}\n");
        out
    }

    pub fn mermaid(&self) -> String {
        let ids: BTreeMap<&String, String> =
            self.nodes.keys().enumerate().map(|(i, id)| (id, format!("n{i}"))).collect();
        let mut out = String::from("flowchart LR\n");
        for (id, node) in &self.nodes {
            let n = &ids[id];
            let line = match node {
                Node::World => format!("  {n}((\"{id}\"))"),
                Node::Cidr => format!("  {n}[/\"{id}\"/]"),
                Node::Service { open: true, .. } => format!("  {n}(\"{id}<br/>ingress: any\")"),
                Node::Service { no_egress: true, .. } => format!("  {n}(\"{id}<br/>egress: none\")"),
                Node::Service { .. } => format!("  {n}(\"{id}\")"),
            };
            let _ = writeln!(out, "{line}");
        }
        for ((a, b), ports) in &self.edges {
            let label = ports.iter().cloned().collect::<Vec<_>>().join("; ");
            let _ = writeln!(out, "  {} -->|\"{label}\"| {}", ids[a], ids[b]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop() -> Policy {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/shop/policy.yaml"))
                .unwrap();
        crate::policy::parse_source(&text, "shop.yaml", None).unwrap()
    }

    #[test]
    fn the_shop_example_draws_its_three_flows() {
        let g = build(&[shop()], None);
        let edges: Vec<(&str, &str, Vec<&str>)> = g
            .edges
            .iter()
            .map(|((a, b), p)| (a.as_str(), b.as_str(), p.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            edges,
            [
                ("shop/api", "shop/db", vec!["5432/tcp"]),
                ("shop/web", "shop/api", vec!["9000/tcp"]),
                ("world", "shop/web", vec!["8080/tcp"]),
            ]
        );
        assert_eq!(g.nodes["shop/db"], Node::Service { open: false, no_egress: true });
        let dot = g.dot();
        assert!(dot.contains("\"world\" -> \"shop/web\" [label=\"8080/tcp\"]"), "{dot}");
        let mermaid = g.mermaid();
        assert!(mermaid.starts_with("flowchart LR\n") && mermaid.contains("-->|\"5432/tcp\"|"), "{mermaid}");
    }

    #[test]
    fn an_ingress_the_senders_egress_refuses_is_not_a_flow() {
        let text = "version: 1\nproject: p\nservices:\n  a: { egress: [b, 10.0.0.0/8] }\n  b: {}\n  \
                    c: { ingress: [{ from: [a], ports: [80/tcp] }] }\n";
        let p = crate::policy::parse_source(text, "p.yaml", None).unwrap();
        let g = build(&[p], Some("p"));
        assert!(!g.edges.contains_key(&("p/a".to_owned(), "p/c".to_owned())), "{:?}", g.edges);
        assert!(g.edges.contains_key(&("p/a".to_owned(), "10.0.0.0/8".to_owned())));
        assert_eq!(g.nodes["10.0.0.0/8"], Node::Cidr);
    }
}
