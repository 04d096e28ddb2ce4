//! The per-container checks (CIS 4.x and 5.x): pure functions of one
//! container's inspect data and the daemon facts.

use super::catalog::{finding, ids};
use super::facts::{ContainerFacts, DaemonFacts};
use super::model::{Finding, Level, Object, ObjectKind};
use bollard::models::{ContainerConfig, HostConfig, RestartPolicyNameEnum};

/// A check's verdict on one container; `None`: it does not apply.
type Verdict = Option<(Level, String)>;
type CheckFn = fn(&View, &DaemonFacts) -> Verdict;

/// The parts of the inspect data the checks read, with defaults filled in.
pub struct View<'a> {
    pub c: &'a ContainerFacts,
    pub host: HostConfig,
    pub config: ContainerConfig,
}

impl<'a> View<'a> {
    pub fn new(c: &'a ContainerFacts) -> View<'a> {
        View {
            c,
            host: c.inspect.host_config.clone().unwrap_or_default(),
            config: c.inspect.config.clone().unwrap_or_default(),
        }
    }

    fn security_opts(&self) -> impl Iterator<Item = &str> {
        self.host.security_opt.iter().flatten().map(String::as_str)
    }

    /// (source, destination, read-write) of every bind mount.
    fn binds(&self) -> impl Iterator<Item = (&str, &str, bool)> {
        let mounts = self.c.inspect.mounts.iter().flatten();
        mounts.filter(|m| m.typ.as_deref() == Some("bind")).map(|m| {
            (
                m.source.as_deref().unwrap_or_default(),
                m.destination.as_deref().unwrap_or_default(),
                m.rw.unwrap_or(true),
            )
        })
    }

    fn cpu_limited(&self) -> bool {
        let h = &self.host;
        h.nano_cpus.unwrap_or(0) > 0
            || h.cpu_quota.unwrap_or(0) > 0
            || !matches!(h.cpu_shares.unwrap_or(0), 0 | 1024)
            || h.cpuset_cpus.as_deref().is_some_and(|s| !s.is_empty())
    }

    fn memory_limited(&self) -> bool {
        self.host.memory.unwrap_or(0) > 0
    }
}

const CHECKS: [(&str, CheckFn); 20] = [
    (ids::USER, user),
    (ids::HEALTHCHECK, healthcheck),
    (ids::APPARMOR, apparmor),
    (ids::CAPS, caps),
    (ids::PRIVILEGED, privileged),
    (ids::MOUNTS, mounts),
    (ids::HOST_NET, |v, _| namespace(v.host.network_mode.as_deref(), "network")),
    (ids::MEMORY, |v, _| limit(v.memory_limited(), "memory")),
    (ids::CPU, |v, _| limit(v.cpu_limited(), "CPU")),
    (ids::READ_ONLY, read_only),
    (ids::PORTS, ports),
    (ids::RESTART, restart),
    (ids::HOST_PID, |v, _| namespace(v.host.pid_mode.as_deref(), "PID")),
    (ids::HOST_IPC, |v, _| namespace(v.host.ipc_mode.as_deref(), "IPC")),
    (ids::HOST_UTS, |v, _| namespace(v.host.uts_mode.as_deref(), "UTS")),
    (ids::SECCOMP, seccomp),
    (ids::NNP, nnp),
    (ids::PIDS, |v, _| limit(v.host.pids_limit.unwrap_or(0) > 0, "PIDs")),
    (ids::DOCKER0, docker0),
    (ids::SOCK_MOUNT, sock_mount),
];

/// The container as a finding's object.
pub fn object(c: &ContainerFacts) -> Object {
    Object { kind: ObjectKind::Container, name: c.name().to_owned(), id: Some(c.id().to_owned()) }
}

/// Every container check that applies to `c`, restricted to `only` when given.
pub fn check(c: &ContainerFacts, d: &DaemonFacts, only: Option<&[&str]>) -> Vec<Finding> {
    let view = View::new(c);
    CHECKS
        .iter()
        .filter(|(id, _)| only.is_none_or(|o| o.contains(id)))
        .filter_map(|(id, f)| f(&view, d).map(|(level, detail)| finding(id, level, vec![object(c)], detail)))
        .collect()
}

fn pass(detail: impl Into<String>) -> Verdict {
    Some((Level::Pass, detail.into()))
}

fn warn(detail: impl Into<String>) -> Verdict {
    Some((Level::Warn, detail.into()))
}

fn user(v: &View, _: &DaemonFacts) -> Verdict {
    let user = v.config.user.as_deref().unwrap_or_default();
    let name = user.split(':').next().unwrap_or_default();
    if matches!(name, "" | "root" | "0") {
        warn(format!("runs as root (user {user:?})"))
    } else {
        pass(format!("runs as {user}"))
    }
}

fn healthcheck(v: &View, _: &DaemonFacts) -> Verdict {
    match v.config.healthcheck.as_ref().and_then(|h| h.test.as_deref()) {
        Some([first, ..]) if first != "NONE" => pass("has a healthcheck"),
        _ => warn("no healthcheck: a hung process looks healthy"),
    }
}

fn apparmor(v: &View, d: &DaemonFacts) -> Verdict {
    // Without AppArmor on the host the check does not apply per container;
    // one host-level NOTE says so.
    if !d.apparmor() {
        return None;
    }
    match v.c.inspect.app_armor_profile.as_deref().unwrap_or_default() {
        "" | "unconfined" => warn("runs without an AppArmor profile"),
        p => pass(format!("AppArmor profile {p}")),
    }
}

/// Capabilities that amount to (or lead straight to) root on the host.
const DANGEROUS_CAPS: [&str; 13] = [
    "ALL",
    "SYS_ADMIN",
    "NET_ADMIN",
    "SYS_PTRACE",
    "SYS_MODULE",
    "DAC_READ_SEARCH",
    "SYS_RAWIO",
    "SYS_BOOT",
    "SYS_TIME",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "BPF",
    "SYSLOG",
];

fn caps(v: &View, _: &DaemonFacts) -> Verdict {
    let added: Vec<String> = v
        .host
        .cap_add
        .iter()
        .flatten()
        .map(|c| c.to_ascii_uppercase().trim_start_matches("CAP_").to_owned())
        .collect();
    if added.is_empty() {
        return pass("adds no capability");
    }
    let level =
        if added.iter().any(|c| DANGEROUS_CAPS.contains(&c.as_str())) { Level::Warn } else { Level::Info };
    Some((level, format!("adds {}", added.join(", "))))
}

fn privileged(v: &View, _: &DaemonFacts) -> Verdict {
    if v.host.privileged.unwrap_or(false) {
        warn("privileged: every capability and device, no seccomp or AppArmor confinement")
    } else {
        pass("not privileged")
    }
}

/// Host directories that must not be bind-mounted (CIS 5.6, plus the
/// engine's own state and root's home).
const SENSITIVE: [&str; 12] = [
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib64",
    "/proc",
    "/sys",
    "/usr",
    "/bin",
    "/sbin",
    "/root",
    "/var/lib/docker",
];

fn sensitive(source: &str) -> bool {
    source == "/"
        || SENSITIVE
            .iter()
            .any(|s| source == *s || source.strip_prefix(s).is_some_and(|r| r.starts_with('/')))
}

fn mounts(v: &View, _: &DaemonFacts) -> Verdict {
    let hits: Vec<(&str, bool)> =
        v.binds().filter(|(s, _, _)| sensitive(s)).map(|(s, _, rw)| (s, rw)).collect();
    if hits.is_empty() {
        return pass("mounts no sensitive host directory");
    }
    let list: Vec<String> =
        hits.iter().map(|(s, rw)| format!("{s} ({})", if *rw { "rw" } else { "ro" })).collect();
    let level = if hits.iter().any(|(_, rw)| *rw) { Level::Warn } else { Level::Info };
    Some((level, format!("mounts {}", list.join(", "))))
}

fn namespace(mode: Option<&str>, what: &str) -> Verdict {
    if mode == Some("host") {
        warn(format!("shares the host's {what} namespace"))
    } else {
        pass(format!("own {what} namespace"))
    }
}

fn limit(set: bool, what: &str) -> Verdict {
    if set {
        pass(format!("{what} limit set"))
    } else {
        warn(format!("no {what} limit: it can starve the host"))
    }
}

fn read_only(v: &View, _: &DaemonFacts) -> Verdict {
    if v.host.readonly_rootfs.unwrap_or(false) {
        pass("read-only root filesystem")
    } else {
        warn("writable root filesystem")
    }
}

fn ports(v: &View, _: &DaemonFacts) -> Verdict {
    let map = v.c.inspect.network_settings.as_ref().and_then(|n| n.ports.as_ref());
    let mut open: Vec<String> = Vec::new();
    for (port, bindings) in map.into_iter().flatten() {
        for b in bindings.iter().flatten() {
            let ip = b.host_ip.as_deref().unwrap_or_default();
            if matches!(ip, "" | "0.0.0.0" | "::") {
                open.push(format!(
                    "{}:{} -> {port}",
                    if ip.is_empty() { "*" } else { ip },
                    b.host_port.as_deref().unwrap_or("?")
                ));
            }
        }
    }
    open.sort();
    open.dedup();
    if open.is_empty() {
        pass("no port published on every address")
    } else {
        warn(format!("published on every address: {}", open.join(", ")))
    }
}

fn restart(v: &View, _: &DaemonFacts) -> Verdict {
    let policy = v.host.restart_policy.clone().unwrap_or_default();
    let retries = policy.maximum_retry_count.unwrap_or(0);
    let limited = v.memory_limited() && v.cpu_limited();
    match policy.name.unwrap_or(RestartPolicyNameEnum::EMPTY) {
        RestartPolicyNameEnum::EMPTY | RestartPolicyNameEnum::NO => pass("never restarted by the engine"),
        RestartPolicyNameEnum::ON_FAILURE if (1..=5).contains(&retries) => {
            pass(format!("on-failure:{retries}"))
        }
        RestartPolicyNameEnum::ON_FAILURE => warn(format!(
            "on-failure with {} retries",
            if retries == 0 { "unlimited".to_owned() } else { retries.to_string() }
        )),
        // docker-bench passes `always`; a crash loop with no limits is the
        // denial of service the recommendation is about.
        name if limited => pass(format!("{name} with memory and CPU limits")),
        name => warn(format!("{name} without memory and CPU limits: a crash loop restarts forever")),
    }
}

fn seccomp(v: &View, _: &DaemonFacts) -> Verdict {
    if v.security_opts().any(|o| matches!(o, "seccomp=unconfined" | "seccomp:unconfined")) {
        warn("seccomp=unconfined: every system call is allowed")
    } else {
        pass("seccomp profile in force")
    }
}

fn nnp(v: &View, d: &DaemonFacts) -> Verdict {
    let set = v.security_opts().find_map(|o| {
        let rest = o.strip_prefix("no-new-privileges")?;
        Some(!matches!(rest, "=false" | ":false"))
    });
    match set {
        Some(true) => pass("no-new-privileges set"),
        None if d.default_nnp() => pass("no-new-privileges from the daemon's default"),
        _ => warn("may gain privileges through setuid files (no no-new-privileges)"),
    }
}

fn docker0(v: &View, d: &DaemonFacts) -> Verdict {
    let networks = v.c.inspect.network_settings.as_ref().and_then(|n| n.networks.as_ref());
    if !networks.is_some_and(|n| n.contains_key("bridge")) {
        return pass("not on the default bridge");
    }
    if d.docker0_icc_off() {
        Some((Level::Info, "on the default bridge (inter-container traffic is off there)".into()))
    } else {
        warn("on the default bridge with inter-container traffic on: every other container there reaches it")
    }
}

fn sock_mount(v: &View, d: &DaemonFacts) -> Verdict {
    let audited = d.socket.as_ref().map(|s| s.path.clone()).unwrap_or_default();
    let holds_socket = |src: &str, dst: &str| {
        src.ends_with("/docker.sock")
            || dst.ends_with("/docker.sock")
            || matches!(src, "/run" | "/var/run")
            || (!audited.is_empty()
                && (src == audited || audited.strip_prefix(src).is_some_and(|r| r.starts_with('/'))))
    };
    let hits: Vec<&str> = v.binds().filter(|(s, dst, _)| holds_socket(s, dst)).map(|(s, _, _)| s).collect();
    if hits.is_empty() {
        pass("the Docker socket is not mounted")
    } else {
        warn(format!("mounts {}: root on the host for whoever runs in it", hits.join(", ")))
    }
}

#[cfg(test)]
#[path = "container_checks_tests.rs"]
pub(crate) mod tests;
