//! The grants a policy's `x-seg.secrets` declares, and the plan that makes
//! the store match: pure, so every case is a unit test.
//!
//! A policy *owns* the grants it made (the controller keeps the list with
//! the applied policy). Applying a declaration grants what is declared and
//! not yet granted, and revokes what it owns and no longer declares; a grant
//! made by hand (`segctl secret grant`) is never revoked, even when a
//! declaration names it too — it was there first, so it is not the
//! declaration's to take back.

use super::Policy;
use seg_common::api::policy::DeclaredGrant;
use seg_common::api::{GrantTarget, ProjectMatch};
use std::collections::BTreeSet;

/// `<project>/<service>` for each service of each declared secret (a
/// policy without a project declares for standalone containers).
pub fn declared(policy: &Policy) -> BTreeSet<DeclaredGrant> {
    let project = match policy.project() {
        Some(p) => ProjectMatch::Exact(p.to_string()),
        None => ProjectMatch::None,
    };
    let mut out = BTreeSet::new();
    for (secret, decl) in &policy.secrets.0 {
        for service in &decl.to {
            let to = GrantTarget { project: project.clone(), service: service.clone() };
            out.insert(DeclaredGrant { secret: secret.clone(), to });
        }
    }
    out
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantPlan {
    /// Declared and not in the store.
    pub grant: Vec<DeclaredGrant>,
    /// Owned, no longer declared, still in the store.
    pub revoke: Vec<DeclaredGrant>,
    /// What the policy owns afterwards: the declared grants it made, now or before.
    pub owned: Vec<DeclaredGrant>,
}

/// `declared`: what the policy now says; `owned`: what it made before;
/// `live`: the store's grants (of the secrets concerned).
pub fn plan(
    declared: &BTreeSet<DeclaredGrant>,
    owned: &BTreeSet<DeclaredGrant>,
    live: &BTreeSet<DeclaredGrant>,
) -> GrantPlan {
    let grant: Vec<DeclaredGrant> = declared.difference(live).cloned().collect();
    let revoke = owned.difference(declared).filter(|g| live.contains(*g)).cloned().collect();
    let mut kept: BTreeSet<DeclaredGrant> = declared.intersection(owned).cloned().collect();
    kept.extend(grant.iter().cloned());
    GrantPlan { grant, revoke, owned: kept.into_iter().collect() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seg_common::name::SecretName;

    fn g(secret: &str, to: &str) -> DeclaredGrant {
        DeclaredGrant { secret: SecretName::parse(secret).unwrap(), to: GrantTarget::parse(to).unwrap() }
    }

    fn set(items: &[(&str, &str)]) -> BTreeSet<DeclaredGrant> {
        items.iter().map(|(s, t)| g(s, t)).collect()
    }

    #[test]
    fn declared_grants_name_the_project() {
        let text =
            "services:\n  app: {}\n  db: {}\nx-seg:\n  version: 1\n  secrets:\n    pw: { to: [db, app] }\n";
        let p = super::super::parse_compose(text, "c.yml", Some("shop")).unwrap();
        assert_eq!(declared(&p), set(&[("pw", "shop/app"), ("pw", "shop/db")]));
        let p =
            super::super::parse_policy("version: 1\nsecrets:\n  pw: { to: [vault] }\n", "p.yaml").unwrap();
        assert_eq!(declared(&p), set(&[("pw", "vault")]));
    }

    #[test]
    fn first_apply_grants_everything_declared() {
        let d = set(&[("pw", "shop/app"), ("pw", "shop/db")]);
        let p = plan(&d, &set(&[]), &set(&[]));
        assert_eq!((p.grant.len(), p.revoke.len(), p.owned.len()), (2, 0, 2));
    }

    #[test]
    fn a_service_dropped_from_to_is_revoked_and_hand_made_grants_stay() {
        // Before: the policy made pw→app and pw→db; ops granted pw→shop/web and tok→shop/app by hand.
        let owned = set(&[("pw", "shop/app"), ("pw", "shop/db")]);
        let live = set(&[("pw", "shop/app"), ("pw", "shop/db"), ("pw", "shop/web"), ("tok", "shop/app")]);
        let declared = set(&[("pw", "shop/db"), ("pw", "shop/web")]);
        let p = plan(&declared, &owned, &live);
        assert_eq!(p.grant, vec![], "pw→web exists already (by hand)");
        assert_eq!(p.revoke, vec![g("pw", "shop/app")]);
        assert_eq!(p.owned, vec![g("pw", "shop/db")], "the hand-made pw→web is not taken over");
        // Dropping the declaration of pw→web later leaves it in place.
        let p = plan(
            &set(&[("pw", "shop/db")]),
            &set(&p.owned.iter().map(|_| ("pw", "shop/db")).collect::<Vec<_>>()),
            &live,
        );
        assert!(p.revoke.is_empty());
    }

    #[test]
    fn removal_revokes_only_what_is_owned_and_still_there() {
        let owned = set(&[("pw", "shop/app"), ("pw", "shop/db")]);
        let live = set(&[("pw", "shop/db"), ("pw", "shop/web")]);
        let p = plan(&set(&[]), &owned, &live);
        assert_eq!((p.grant, p.revoke, p.owned), (vec![], vec![g("pw", "shop/db")], vec![]));
    }

    #[test]
    fn an_owned_grant_revoked_by_hand_is_granted_again_while_declared() {
        let d = set(&[("pw", "shop/app")]);
        let p = plan(&d, &d, &set(&[]));
        assert_eq!((p.grant.clone(), p.owned), (vec![g("pw", "shop/app")], vec![g("pw", "shop/app")]));
        assert_eq!(plan(&d, &d, &d), GrantPlan { owned: vec![g("pw", "shop/app")], ..GrantPlan::default() });
    }
}
