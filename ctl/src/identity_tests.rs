//! The secrets side and the network side agree on who a container is: the
//! same containers go through attestation (fixture `/proc`, fake Docker) and
//! through the firewall inventory, and come out as the same identity, or
//! none on both sides.

use crate::attest::{AttestError, Attestor, ContainerInfo, ContainerLookup, LookupError, PinnedPeer};
use crate::firewall::{inventory_from, ContainerFacts};
use crate::identity::{COMPOSE_PROJECT, COMPOSE_SERVICE, SEG_FOR, SEG_PROJECT, SEG_SERVICE};
use futures_util::future::BoxFuture;
use seg_common::api::Identity;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

type Labels = &'static [(&'static str, &'static str)];
/// The identity both sides must give: (project, service), or none.
type Want = Option<(Option<&'static str>, &'static str)>;

/// Each container's labels and the identity both sides must give it.
const CASES: &[(Labels, Want)] = &[
    (&[(COMPOSE_PROJECT, "shop"), (COMPOSE_SERVICE, "app")], Some((Some("shop"), "app"))),
    // A compose sidecar is the service it acts for, on both sides.
    (
        &[(COMPOSE_PROJECT, "shop"), (COMPOSE_SERVICE, "app-seg"), (SEG_FOR, "app")],
        Some((Some("shop"), "app")),
    ),
    (&[(SEG_FOR, "app")], Some((None, "app"))),
    (&[(SEG_SERVICE, "probe")], Some((None, "probe"))),
    (&[(SEG_SERVICE, "probe"), (SEG_PROJECT, "lab")], Some((Some("lab"), "probe"))),
    // Compose's project with a seg.service: the compose project counts.
    (
        &[(COMPOSE_PROJECT, "shop"), (SEG_SERVICE, "probe"), (SEG_PROJECT, "lab")],
        Some((Some("shop"), "probe")),
    ),
    (&[(COMPOSE_SERVICE, "app")], Some((None, "app"))),
    (&[], None),
    (&[("maintainer", "me")], None),
    (&[(COMPOSE_PROJECT, "shop")], None),
    // Empty values are invalid, not absent.
    (&[(SEG_SERVICE, "")], None),
    (&[(COMPOSE_PROJECT, ""), (COMPOSE_SERVICE, "app")], None),
    (&[(COMPOSE_PROJECT, "shop"), (COMPOSE_SERVICE, "app"), (SEG_FOR, "")], None),
    // Invalid values: no identity on either side.
    (&[(SEG_SERVICE, "a/b")], None),
    (&[(COMPOSE_PROJECT, "shop"), (COMPOSE_SERVICE, "a b")], None),
    (&[(COMPOSE_PROJECT, "shop"), (COMPOSE_SERVICE, "app"), (SEG_FOR, "../x")], None),
    (&[(SEG_SERVICE, "s"), (SEG_PROJECT, "p*")], None),
    // An ignored label is not validated.
    (
        &[(COMPOSE_PROJECT, "shop"), (COMPOSE_SERVICE, "app"), (SEG_SERVICE, "bad value")],
        Some((Some("shop"), "app")),
    ),
];

fn labels(pairs: Labels) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn container_id(k: usize) -> String {
    format!("{k:064x}")
}

struct Engine(HashMap<String, ContainerInfo>);

impl ContainerLookup for Engine {
    fn inspect<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<ContainerInfo, LookupError>> {
        let found = self.0.get(id).cloned().ok_or_else(|| LookupError::NoSuchContainer(id.to_owned()));
        Box::pin(async move { found })
    }
}

/// What attestation says of each case's container: its identity, `None`
/// when it is refused for its labels.
async fn attested(proc: &Path) -> Vec<Option<Identity>> {
    let mut engine = HashMap::new();
    for (k, (pairs, _)) in CASES.iter().enumerate() {
        let (id, pid) = (container_id(k), 100 + k);
        let dir = proc.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("stat"),
            format!("{pid} (app) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 77 9 9\n"),
        )
        .unwrap();
        std::fs::write(dir.join("cgroup"), format!("0::/docker/{id}\n")).unwrap();
        let info = ContainerInfo {
            id: id.clone(),
            name: format!("c{k}"),
            labels: labels(pairs),
            pid: pid as i64,
            running: true,
            binds: vec![],
        };
        engine.insert(id, info);
    }
    let att = Attestor::new(Arc::new(Engine(engine)), proc.to_owned());
    let mut out = Vec::new();
    for k in 0..CASES.len() {
        let peer = PinnedPeer::fixture_in(proc, 100 + k as i32).unwrap();
        out.push(match att.attest(&peer).await {
            Ok(a) => Some(a.identity),
            Err(AttestError::NoIdentity { .. } | AttestError::BadLabel { .. }) => None,
            Err(e) => panic!("case {k}: attestation failed for another reason: {e}"),
        });
    }
    out
}

#[tokio::test]
async fn attestation_and_the_firewall_see_the_same_identities() {
    let proc = tempfile::tempdir().unwrap();
    let secrets_side = attested(proc.path()).await;
    let facts = CASES.iter().enumerate().map(|(k, (pairs, _))| ContainerFacts {
        id: container_id(k),
        labels: labels(pairs),
        ..Default::default()
    });
    let network_side: Vec<Option<Identity>> =
        inventory_from(facts, []).containers.into_iter().map(|c| c.service).collect();
    for (k, (pairs, want)) in CASES.iter().enumerate() {
        let want = want.map(|(project, service)| Identity::new(project, service));
        assert_eq!(secrets_side[k], want, "attestation of {pairs:?}");
        assert_eq!(network_side[k], want, "firewall inventory of {pairs:?}");
    }
}

/// The label rule itself, one set of labels at a time.
mod rule {
    use super::super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn id(project: Option<&str>, service: &str) -> Identity {
        Identity { project: project.map(str::to_owned), service: service.to_owned() }
    }

    #[test]
    fn compose_service() {
        let l = labels(&[(COMPOSE_PROJECT, "shop"), (COMPOSE_SERVICE, "app"), ("other", "x y")]);
        assert_eq!(identity_from_labels(&l), Ok(id(Some("shop"), "app")));
    }

    #[test]
    fn compose_wins_over_seg_service_and_project() {
        let l = labels(&[
            (COMPOSE_PROJECT, "shop"),
            (COMPOSE_SERVICE, "app"),
            (SEG_SERVICE, "other"),
            (SEG_PROJECT, "elsewhere"),
        ]);
        assert_eq!(identity_from_labels(&l), Ok(id(Some("shop"), "app")));
    }

    #[test]
    fn sidecar_acts_for_its_service() {
        let l = labels(&[(COMPOSE_PROJECT, "shop"), (COMPOSE_SERVICE, "app-seg"), (SEG_FOR, "app")]);
        assert_eq!(identity_from_labels(&l), Ok(id(Some("shop"), "app")));
        let standalone = labels(&[(SEG_FOR, "app")]);
        assert_eq!(identity_from_labels(&standalone), Ok(id(None, "app")));
        let with_seg_project = labels(&[(SEG_FOR, "app"), (SEG_PROJECT, "p")]);
        assert_eq!(identity_from_labels(&with_seg_project), Ok(id(Some("p"), "app")));
    }

    #[test]
    fn standalone_seg_service() {
        assert_eq!(identity_from_labels(&labels(&[(SEG_SERVICE, "probe")])), Ok(id(None, "probe")));
        let l = labels(&[(SEG_SERVICE, "probe"), (SEG_PROJECT, "lab")]);
        assert_eq!(identity_from_labels(&l), Ok(id(Some("lab"), "probe")));
    }

    #[test]
    fn no_identity() {
        for l in [labels(&[]), labels(&[(COMPOSE_PROJECT, "shop")]), labels(&[(SEG_PROJECT, "p")])] {
            assert_eq!(identity_from_labels(&l), Err(LabelError::Missing), "{l:?}");
        }
    }

    #[test]
    fn invalid_values_are_refused() {
        for l in [
            labels(&[(SEG_SERVICE, "")]),
            labels(&[(SEG_SERVICE, "a/b")]),
            labels(&[(SEG_FOR, "../x")]),
            labels(&[(COMPOSE_PROJECT, "-p"), (COMPOSE_SERVICE, "app")]),
            labels(&[(COMPOSE_PROJECT, "p"), (COMPOSE_SERVICE, "a b")]),
            labels(&[(SEG_SERVICE, "s"), (SEG_PROJECT, "p*")]),
        ] {
            assert!(matches!(identity_from_labels(&l), Err(LabelError::Invalid(_))), "{l:?}");
        }
        let err = identity_from_labels(&labels(&[(SEG_FOR, "a b")])).unwrap_err();
        assert!(err.to_string().contains("seg.for"), "{err}");
    }

    #[test]
    fn unused_labels_are_not_validated() {
        let l = labels(&[(COMPOSE_PROJECT, "shop"), (COMPOSE_SERVICE, "app"), (SEG_SERVICE, "bad value")]);
        assert_eq!(identity_from_labels(&l), Ok(id(Some("shop"), "app")));
    }
}
