//! seg's own checks: secrets in the environment, setuid/setgid files, policy
//! coverage, secret holders reachable from everything, sidecar hardening.
//! Pure functions of the collected facts.

use super::catalog::{finding, ids};
use super::container_checks::{object, View};
use super::facts::{ContainerFacts, Facts, SegFacts};
use super::model::{Degraded, Finding, Level, Need, Object, ObjectKind};
use super::secrets_env;
use crate::identity::{identity_from_labels, is_sidecar};
use crate::policy::{Ingress, Policy};
use seg_common::api::Identity;

/// Findings of the per-container seg checks (secrets in env, setid files, sidecars).
pub fn per_container(c: &ContainerFacts, run_dir: &str, degraded: &mut Vec<Degraded>) -> Vec<Finding> {
    let mut out =
        vec![secrets_in_env(c), setid(c, degraded), super::agent_dir::agent_dir_writable(c, run_dir)];
    out.extend(sidecar(c, run_dir));
    out
}

fn secrets_in_env(c: &ContainerFacts) -> Finding {
    let env = c.inspect.config.as_ref().and_then(|cfg| cfg.env.clone()).unwrap_or_default();
    let hits = secrets_env::scan(&env);
    if hits.is_empty() {
        return finding(ids::SECRETS_ENV, Level::Pass, vec![object(c)], "no variable looks like a secret");
    }
    let list: Vec<String> = hits.iter().map(|(name, why)| format!("{name} ({})", why.describe())).collect();
    finding(
        ids::SECRETS_ENV,
        Level::Warn,
        vec![object(c)],
        format!("environment variables {}", list.join(", ")),
    )
}

/// How many setid files a finding names before "and N more".
const SETID_SHOWN: usize = 20;

fn setid(c: &ContainerFacts, degraded: &mut Vec<Degraded>) -> Finding {
    match &c.setid {
        Ok(files) if files.is_empty() => {
            finding(ids::SETID, Level::Pass, vec![object(c)], "no setuid or setgid file")
        }
        Ok(files) => {
            let mut list: Vec<String> = files
                .iter()
                .take(SETID_SHOWN)
                .map(|f| format!("{} ({:o} {}:{})", f.path, f.mode & 0o7777, f.uid, f.gid))
                .collect();
            if files.len() > SETID_SHOWN {
                list.push(format!("and {} more", files.len() - SETID_SHOWN));
            }
            finding(
                ids::SETID,
                Level::Warn,
                vec![object(c)],
                format!("{} file(s): {}", files.len(), list.join(", ")),
            )
        }
        Err(why) => {
            let needs = if why.contains("ermission denied") { Need::Root } else { Need::Host };
            degraded.push(Degraded { check: ids::SETID, needs, reason: format!("{}: {why}", c.name()) });
            finding(ids::SETID, Level::Note, vec![object(c)], format!("filesystem not read: {why}"))
        }
    }
}

/// The policy naming `id`, if any.
fn policy_of<'a>(
    policies: &'a [Policy],
    id: &Identity,
) -> Option<(&'a Policy, &'a crate::policy::ServiceSpec)> {
    policies
        .iter()
        .filter(|p| p.project() == id.project.as_deref())
        .find_map(|p| p.services.get(id.service.as_str()).map(|s| (p, s)))
}

/// How a container is reachable over the network, before policies.
enum Reach {
    None,
    Host,
    Shared(String),
    Bridged,
}

fn reach(c: &ContainerFacts) -> Reach {
    match c.network_mode() {
        "none" => Reach::None,
        "host" => Reach::Host,
        m if m.starts_with("container:") => Reach::Shared(m.trim_start_matches("container:").to_owned()),
        _ => Reach::Bridged,
    }
}

/// seg-policy-coverage for every container; one INFO when no policy is applied.
pub fn coverage(containers: &[ContainerFacts], seg: &SegFacts) -> Vec<Finding> {
    let mut out: Vec<Finding> = seg
        .policy_errors
        .iter()
        .map(|e| {
            finding(
                ids::UNCOVERED,
                Level::Note,
                vec![Object::new(ObjectKind::File, &seg.policy_dir)],
                e.clone(),
            )
        })
        .collect();
    if seg.policies.is_empty() {
        let detail = format!("no policies applied (none readable in {})", seg.policy_dir);
        out.push(finding(
            ids::UNCOVERED,
            Level::Info,
            vec![Object::new(ObjectKind::File, &seg.policy_dir)],
            detail,
        ));
        return out;
    }
    for c in containers {
        let id = identity_from_labels(&c.labels()).ok();
        let (level, detail) = match (reach(c), &id) {
            (Reach::None, _) => (Level::Pass, "no network".to_owned()),
            (Reach::Shared(other), _) => (Level::Pass, format!("shares the network namespace of {other}")),
            (Reach::Host, _) => (Level::Warn, "host network: no policy can filter it".to_owned()),
            (Reach::Bridged, None) => (
                Level::Warn,
                "no service identity (compose or seg.service labels): no policy can name it".to_owned(),
            ),
            (Reach::Bridged, Some(id)) => match policy_of(&seg.policies, id) {
                Some((p, _)) => (Level::Pass, format!("{id} is covered by {}", p.origin)),
                None => (Level::Warn, format!("service {id} is in no policy: its traffic is unrestricted")),
            },
        };
        let mut objects = vec![object(c)];
        objects.extend(id.map(|id| Object::new(ObjectKind::Service, id.to_string())));
        out.push(finding(ids::UNCOVERED, level, objects, detail));
    }
    out
}

/// seg-secrets-reachable: containers holding a granted secret must not be
/// reachable from everything. Needs the grants from the controller.
pub fn exposed_secrets(facts: &Facts, run_dir: &str, degraded: &mut Vec<Degraded>) -> Vec<Finding> {
    let admin = Object::new(ObjectKind::Socket, format!("{}/admin.sock", run_dir.trim_end_matches('/')));
    let grants = match &facts.seg.grants {
        Ok(g) => g,
        Err(why) => {
            degraded.push(Degraded {
                check: ids::EXPOSED_SECRETS,
                needs: Need::Controller,
                reason: why.clone(),
            });
            let detail = format!("needs the controller's grants: {why}");
            return vec![finding(ids::EXPOSED_SECRETS, Level::Note, vec![admin], detail)];
        }
    };
    let mut out = Vec::new();
    for c in &facts.containers {
        let Ok(who) = identity_from_labels(&c.labels()) else { continue };
        let mut held: Vec<&str> =
            grants.iter().filter(|(_, t)| t.matches(&who)).map(|(name, _)| name.as_str()).collect();
        if held.is_empty() {
            continue;
        }
        held.dedup();
        // The firewall knows it by the same identity its grants are for.
        let open = match reach(c) {
            // Reached only through the container whose namespace it shares:
            // that container's own finding says whether that is open.
            Reach::None | Reach::Shared(_) => None,
            Reach::Host => Some("host network: reachable on every host port".to_owned()),
            Reach::Bridged => match policy_of(&facts.seg.policies, &who) {
                None => Some(format!("{who} is in no policy")),
                Some((p, spec)) if spec.ingress == Ingress::Any => {
                    Some(format!("{}: ingress: any", p.origin))
                }
                Some(_) => None,
            },
        };
        let secrets = held.join(", ");
        let (level, detail) = match open {
            Some(why) => (Level::Warn, format!("holds {secrets}; reachable from everything: {why}")),
            None => (Level::Pass, format!("holds {secrets}; ingress is restricted")),
        };
        out.push(finding(
            ids::EXPOSED_SECRETS,
            level,
            vec![object(c), Object::new(ObjectKind::Service, who.to_string())],
            detail,
        ));
    }
    if out.is_empty() {
        let detail = "no running container holds a secret granted by seg";
        out.push(finding(ids::EXPOSED_SECRETS, Level::Note, vec![admin], detail));
    }
    out
}

/// seg-sidecar-hardening: what a `seg.for` container lacks of the example's hardening.
fn sidecar(c: &ContainerFacts, run_dir: &str) -> Option<Finding> {
    let labels = c.labels();
    if !is_sidecar(&labels) {
        return None;
    }
    let v = View::new(c);
    let user = v.config.user.as_deref().unwrap_or_default();
    let opts: Vec<&str> = v.host.security_opt.iter().flatten().map(String::as_str).collect();
    let binds: Vec<(&str, &str, bool)> = c
        .inspect
        .mounts
        .iter()
        .flatten()
        .filter(|m| m.typ.as_deref() == Some("bind"))
        .map(|m| {
            (m.source.as_deref().unwrap_or(""), m.destination.as_deref().unwrap_or(""), m.rw.unwrap_or(true))
        })
        .collect();
    let agent = format!("{}/agent", run_dir.trim_end_matches('/'));
    let lacks: Vec<&str> = [
        (matches!(user.split(':').next(), Some("" | "root" | "0")), "a non-root user"),
        (!v.host.readonly_rootfs.unwrap_or(false), "read_only"),
        (!v.host.cap_drop.iter().flatten().any(|c| c.eq_ignore_ascii_case("ALL")), "cap_drop ALL"),
        (v.host.cap_add.as_ref().is_some_and(|a| !a.is_empty()), "no added capabilities"),
        (
            !opts.iter().any(|o| {
                matches!(*o, "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true")
            }),
            "no-new-privileges",
        ),
        (c.network_mode() != "none", "network_mode none"),
        (v.host.privileged.unwrap_or(false), "not privileged"),
        (
            v.config
                .healthcheck
                .as_ref()
                .and_then(|h| h.test.as_ref())
                .is_none_or(|t| t.first().is_none_or(|x| x == "NONE")),
            "a healthcheck",
        ),
        (binds.iter().any(|(s, _, rw)| *s == agent && *rw), "the agent directory mounted read-only"),
        (
            binds.iter().any(|(s, _, _)| *s == run_dir || s.ends_with("/admin.sock")),
            "no mount of the admin socket",
        ),
    ]
    .into_iter()
    .filter(|(missing, _)| *missing)
    .map(|(_, what)| what)
    .collect();
    Some(if lacks.is_empty() {
        finding(ids::SIDECAR, Level::Pass, vec![object(c)], "hardened like examples/secrets")
    } else {
        finding(ids::SIDECAR, Level::Warn, vec![object(c)], format!("lacks {}", lacks.join(", ")))
    })
}

#[cfg(test)]
#[path = "seg_checks_tests.rs"]
mod tests;
