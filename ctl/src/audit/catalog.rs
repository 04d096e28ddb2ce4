//! Every check seg audits: stable id, CIS Docker Benchmark 1.6 id, section,
//! title and remediation. `docs/audit.md` lists the same table; a test keeps
//! the two in step.
//!
//! Id scheme: `cis-<CIS id>-<slug>` when the check maps to a CIS Docker
//! Benchmark 1.6 recommendation, `seg-<slug>` when it is seg's own. An id
//! never changes meaning; a retired check's id is not reused.

use super::model::{Finding, Level, Object, Section};

pub struct Check {
    pub id: &'static str,
    pub cis: Option<&'static str>,
    pub section: Section,
    pub title: &'static str,
    pub remediation: &'static str,
    /// `segctl audit --fix` changes this one (seg owns it).
    pub fixable: bool,
}

pub mod ids {
    pub const ICC: &str = "cis-2.2-icc";
    pub const TLS: &str = "cis-2.7-tls";
    pub const USERNS: &str = "cis-2.9-userns";
    pub const DAEMON_NNP: &str = "cis-2.14-no-new-privileges";
    pub const LIVE_RESTORE: &str = "cis-2.15-live-restore";
    pub const USERLAND_PROXY: &str = "cis-2.16-userland-proxy";
    pub const SOCK_OWNER: &str = "cis-3.15-sock-owner";
    pub const SOCK_MODE: &str = "cis-3.16-sock-mode";
    pub const USER: &str = "cis-4.1-user";
    pub const HEALTHCHECK: &str = "cis-4.6-healthcheck";
    pub const APPARMOR: &str = "cis-5.2-apparmor";
    pub const CAPS: &str = "cis-5.4-capabilities";
    pub const PRIVILEGED: &str = "cis-5.5-privileged";
    pub const MOUNTS: &str = "cis-5.6-sensitive-mounts";
    pub const HOST_NET: &str = "cis-5.10-host-network";
    pub const MEMORY: &str = "cis-5.11-memory";
    pub const CPU: &str = "cis-5.12-cpu";
    pub const READ_ONLY: &str = "cis-5.13-read-only";
    pub const PORTS: &str = "cis-5.14-ports-any-address";
    pub const RESTART: &str = "cis-5.15-restart";
    pub const HOST_PID: &str = "cis-5.16-host-pid";
    pub const HOST_IPC: &str = "cis-5.17-host-ipc";
    pub const HOST_UTS: &str = "cis-5.21-host-uts";
    pub const SECCOMP: &str = "cis-5.22-seccomp";
    pub const NNP: &str = "cis-5.26-no-new-privileges";
    pub const PIDS: &str = "cis-5.29-pids-limit";
    pub const DOCKER0: &str = "cis-5.30-docker0";
    pub const SOCK_MOUNT: &str = "cis-5.32-docker-sock";
    pub const SECRETS_ENV: &str = "seg-secrets-env";
    pub const SETID: &str = "seg-setid-files";
    pub const UNCOVERED: &str = "seg-policy-coverage";
    pub const EXPOSED_SECRETS: &str = "seg-secrets-reachable";
    pub const SIDECAR: &str = "seg-sidecar-hardening";
    pub const AGENT_DIR_RW: &str = "seg-agent-dir-writable";
}

use ids::*;

const fn c(
    id: &'static str,
    cis: Option<&'static str>,
    section: Section,
    title: &'static str,
    remediation: &'static str,
) -> Check {
    Check { id, cis, section, title, remediation, fixable: false }
}

const D: Section = Section::Daemon;
const C: Section = Section::Containers;
const S: Section = Section::Seg;

pub const CHECKS: &[Check] = &[
    Check {
        fixable: true,
        ..c(ICC, Some("2.2"), D, "Inter-container traffic on the default bridge (docker0) is off",
            "Run `segctl audit --fix`: \"icc\": false in daemon.json (dockerd applies it at its next restart) \
             and, with the controller running, its docker0 ICC rule at once (`segctl icc disable --persist` does \
             the same). Better: put services on user-defined networks with a seg policy.")
    },
    c(TLS, Some("2.7"), D, "Every TCP listener of the daemon requires TLS client certificates",
      "Listen on the unix socket only, or set tlsverify, tlscacert, tlscert and tlskey for every tcp:// host."),
    c(USERNS, Some("2.9"), D, "User namespace remapping is on",
      "Set \"userns-remap\": \"default\" in daemon.json and restart dockerd (existing containers and images \
       are not visible under the new mapping)."),
    c(DAEMON_NNP, Some("2.14"), D, "Containers get no-new-privileges by default",
      "Set \"no-new-privileges\": true in daemon.json and restart dockerd."),
    c(LIVE_RESTORE, Some("2.15"), D, "Live restore is on",
      "Set \"live-restore\": true in daemon.json and reload dockerd (SIGHUP)."),
    c(USERLAND_PROXY, Some("2.16"), D, "The userland proxy is off",
      "Set \"userland-proxy\": false in daemon.json and restart dockerd."),
    c(SOCK_OWNER, Some("3.15"), D, "The Docker socket is owned by root:docker",
      "chown root:docker on the socket (or set the owner in the docker.socket unit)."),
    c(SOCK_MODE, Some("3.16"), D, "The Docker socket is mode 660 or stricter",
      "chmod 660 on the socket (or SocketMode=0660 in the docker.socket unit)."),
    c(USER, Some("4.1"), C, "The container does not run as root",
      "Set a non-root user: `USER` in the image or `user: \"1000:1000\"` in compose (`--user`)."),
    c(HEALTHCHECK, Some("4.6"), C, "The container has a healthcheck",
      "Add `HEALTHCHECK` to the image or `healthcheck:` to the service."),
    c(APPARMOR, Some("5.2"), C, "The container runs under an AppArmor profile",
      "Do not pass `apparmor=unconfined`; use docker-default or a profile of your own."),
    c(CAPS, Some("5.4"), C, "The container adds no capabilities",
      "Drop ALL and add back only what is needed (`cap_drop: [ALL]`); never SYS_ADMIN, NET_ADMIN, SYS_PTRACE, \
       SYS_MODULE or ALL."),
    c(PRIVILEGED, Some("5.5"), C, "The container is not privileged",
      "Remove `privileged: true` (`--privileged`); add the single capability or device it needs instead."),
    c(MOUNTS, Some("5.6"), C, "No sensitive host directory is mounted",
      "Do not bind-mount /, /boot, /dev, /etc, /lib, /proc, /sys, /usr, /root or /var/lib/docker; mount \
       one file read-only if it must be."),
    c(HOST_NET, Some("5.10"), C, "The container does not share the host's network namespace",
      "Remove `network_mode: host`; publish the ports it serves."),
    c(MEMORY, Some("5.11"), C, "The container has a memory limit",
      "Set `mem_limit:` (`--memory`)."),
    c(CPU, Some("5.12"), C, "The container has a CPU limit",
      "Set `cpus:` (`--cpus`), a CPU quota or CPU shares."),
    c(READ_ONLY, Some("5.13"), C, "The root filesystem is read-only",
      "Set `read_only: true` (`--read-only`) with a tmpfs or volume for what it writes."),
    c(PORTS, Some("5.14"), C, "Published ports are bound to a specific address",
      "Publish on one address, e.g. `127.0.0.1:8080:80`, not on 0.0.0.0 or ::."),
    c(RESTART, Some("5.15"), C, "The restart policy is bounded",
      "Use `on-failure` with at most 5 retries, or give an `always`/`unless-stopped` container memory and CPU \
       limits so a crash loop cannot starve the host."),
    c(HOST_PID, Some("5.16"), C, "The container does not share the host's PID namespace",
      "Remove `pid: host`."),
    c(HOST_IPC, Some("5.17"), C, "The container does not share the host's IPC namespace",
      "Remove `ipc: host`."),
    c(HOST_UTS, Some("5.21"), C, "The container does not share the host's UTS namespace",
      "Remove `uts: host`."),
    c(SECCOMP, Some("5.22"), C, "Seccomp is not disabled",
      "Remove `seccomp=unconfined`; use Docker's default profile or a stricter one."),
    c(NNP, Some("5.26"), C, "The container cannot gain new privileges",
      "Set `security_opt: [\"no-new-privileges:true\"]`, or no-new-privileges in daemon.json."),
    c(PIDS, Some("5.29"), C, "The container has a PIDs limit",
      "Set `pids_limit:` (`--pids-limit`)."),
    c(DOCKER0, Some("5.30"), C, "The container is not on the default bridge (docker0)",
      "Put the service on a user-defined network (`networks:` in compose) and give it a seg policy."),
    c(SOCK_MOUNT, Some("5.32"), C, "The Docker socket is not mounted into the container",
      "Remove the docker.sock mount: whoever holds it is root on the host."),
    c(SECRETS_ENV, None, S, "No secret in environment variables",
      "Deliver the secret as a file with a seg sidecar (see examples/secrets), or `*_FILE` pointing at one; \
       rotate the exposed value: `docker inspect` shows it to anyone with the socket."),
    c(SETID, None, S, "No setuid or setgid files in the container filesystem",
      "Remove the bits in the image (`RUN find / -xdev -perm /6000 -type f -exec chmod a-s {} +`) and run \
       with no-new-privileges."),
    Check {
        fixable: true,
        ..c(UNCOVERED, None, S, "Every service is covered by a seg policy",
            "Apply a policy naming the service (`segctl policy apply -f FILE`, docs/policy.md), or run \
             `segctl audit --fix --default-deny` to give uncovered projects a default-deny ingress policy.")
    },
    c(EXPOSED_SECRETS, None, S, "Services holding secrets are not reachable from everything",
      "Restrict the service's ingress in its policy (`ingress:` with the peers that need it), or run it with \
       `network_mode: none`."),
    c(SIDECAR, None, S, "seg sidecars are hardened like examples/secrets",
      "Run the sidecar as in examples/secrets/docker-compose.yml: user 1000, read_only, cap_drop ALL, \
       no-new-privileges, network_mode none, a healthcheck, the agent directory mounted read-only and never \
       the admin socket."),
    c(AGENT_DIR_RW, None, S, "No container mounts the agent directory (or a parent) read-write",
      "Mount the agent directory read-only (`/run/seg/agent:/run/seg/agent:ro`) and never a parent of it \
       (`/run/seg`, `/run`, `/`) read-write: a root process there could delete or replace the agent socket \
       every sidecar trusts (docs/security.md)."),
];

pub fn get(id: &str) -> &'static Check {
    CHECKS.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("unknown check id {id}"))
}

/// The check's place in the catalog (report order).
pub fn position(id: &str) -> usize {
    CHECKS.iter().position(|c| c.id == id).unwrap_or(usize::MAX)
}

/// A finding of check `id`.
pub fn finding(id: &'static str, level: Level, objects: Vec<Object>, detail: impl Into<String>) -> Finding {
    let c = get(id);
    Finding {
        id: c.id,
        cis: c.cis,
        section: c.section,
        title: c.title,
        level,
        objects,
        detail: detail.into(),
        remediation: c.remediation,
        fixable: c.fixable,
        order: position(id),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown check `{0}`: use a check id (e.g. cis-5.5-privileged), a CIS number (5.5) or a section (daemon, containers, seg); `segctl audit --list-checks` lists them")]
pub struct UnknownCheck(pub String);

/// `--check` values to check ids: an id, a CIS number or a section name.
pub fn select(selectors: &[String]) -> Result<Vec<&'static str>, UnknownCheck> {
    let mut out = Vec::new();
    for s in selectors {
        let hits: Vec<&'static str> = CHECKS
            .iter()
            .filter(|c| c.id == s || c.cis == Some(s.as_str()) || c.section.as_str() == s)
            .map(|c| c.id)
            .collect();
        if hits.is_empty() {
            return Err(UnknownCheck(s.clone()));
        }
        out.extend(hits);
    }
    out.sort_by_key(|id| position(id));
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_follow_the_scheme() {
        let mut seen = std::collections::BTreeSet::new();
        for c in CHECKS {
            assert!(seen.insert(c.id), "duplicate {}", c.id);
            match c.cis {
                Some(cis) => assert!(c.id.starts_with(&format!("cis-{cis}-")), "{}", c.id),
                None => assert!(c.id.starts_with("seg-"), "{}", c.id),
            }
            assert!(c
                .id
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "-.".contains(ch)));
            assert!(!c.remediation.is_empty() && !c.title.is_empty());
        }
    }

    #[test]
    fn selectors_take_ids_cis_numbers_and_sections() {
        let s = |v: &[&str]| select(&v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(s(&["5.5"]).unwrap(), [PRIVILEGED]);
        assert_eq!(s(&["cis-5.5-privileged", "5.5"]).unwrap(), [PRIVILEGED]);
        assert_eq!(s(&["daemon"]).unwrap().len(), 8);
        assert!(s(&["seg"]).unwrap().contains(&SETID));
        let msg = s(&["5.99"]).unwrap_err().to_string();
        assert!(msg.contains("`5.99`"), "{msg}");
    }

    #[test]
    fn docs_list_every_check() {
        let doc = include_str!("../../../docs/audit.md");
        for c in CHECKS {
            assert!(doc.contains(&format!("`{}`", c.id)), "docs/audit.md does not list {}", c.id);
        }
    }
}
