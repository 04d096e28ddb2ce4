//! What the checks look at, collected once: plain data, so every check is a
//! pure function of it and unit tests build it by hand.

use super::dockerd::DaemonConfig;
use crate::policy::Policy;
use bollard::models::ContainerInspectResponse;
use seg_common::api::GrantTarget;

#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub daemon: DaemonFacts,
    pub containers: Vec<ContainerFacts>,
    pub seg: SegFacts,
}

#[derive(Clone, Debug)]
pub struct DaemonFacts {
    /// `docker info` SecurityOptions, e.g. `name=seccomp,profile=default`, `name=userns`.
    pub security_options: Vec<String>,
    pub live_restore: Option<bool>,
    /// dockerd's effective options; `Err`: why they could not be read.
    pub config: Result<DaemonConfig, String>,
    /// The Docker socket audited (the one segctl connected to).
    pub socket: Result<SocketStat, String>,
    /// The gid of the `docker` group, if the host has one.
    pub docker_gid: Option<u32>,
    /// `enable_icc` of the default bridge as the engine runs it now.
    pub bridge_icc: Option<bool>,
    /// The rules of `DOCKER-USER` (iptables-save spelling, without `-A DOCKER-USER`).
    pub docker_user: Result<Vec<String>, String>,
    /// The controller's docker0 ICC rule is live (`SEG-ICC-docker0`, hooked
    /// into `DOCKER-USER` through `SEG-FORWARD`): `segctl icc disable`.
    pub seg_icc_rule: bool,
}

/// Nothing collected yet: every `Result` fact reads "not collected".
impl Default for DaemonFacts {
    fn default() -> Self {
        DaemonFacts {
            security_options: Vec::new(),
            live_restore: None,
            config: Err(NOT_COLLECTED.into()),
            socket: Err(NOT_COLLECTED.into()),
            docker_gid: None,
            bridge_icc: None,
            docker_user: Err(NOT_COLLECTED.into()),
            seg_icc_rule: false,
        }
    }
}

const NOT_COLLECTED: &str = "not collected";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketStat {
    pub path: String,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
}

impl DaemonFacts {
    pub fn apparmor(&self) -> bool {
        self.security_options.iter().any(|o| o.split(',').any(|p| p == "name=apparmor"))
    }
    pub fn userns(&self) -> bool {
        self.security_options.iter().any(|o| o.split(',').any(|p| p == "name=userns" || p == "name=rootless"))
    }
    /// dockerd sets no-new-privileges on every container.
    pub fn default_nnp(&self) -> bool {
        self.config.as_ref().is_ok_and(|c| c.no_new_privileges)
    }
    /// A rule drops traffic between two docker0 endpoints: the controller's,
    /// or one of the administrator's in `DOCKER-USER`.
    pub fn docker0_icc_rule(&self) -> bool {
        self.seg_icc_rule || self.docker_user.as_ref().is_ok_and(|rules| rules.iter().any(|r| is_icc_drop(r)))
    }
    /// Inter-container traffic on docker0 is off now (bridge option or rule).
    pub fn docker0_icc_off(&self) -> bool {
        self.bridge_icc == Some(false) || self.docker0_icc_rule()
    }
}

/// `-i docker0 -o docker0 -j DROP` (any order of the two interface matches).
pub fn is_icc_drop(rule: &str) -> bool {
    let words: Vec<&str> = rule.split_whitespace().collect();
    let has = |pair: [&str; 2]| words.windows(2).any(|w| w == pair);
    has(["-i", "docker0"]) && has(["-o", "docker0"]) && has(["-j", "DROP"]) && words.len() == 6
}

#[derive(Clone, Debug)]
pub struct ContainerFacts {
    pub inspect: ContainerInspectResponse,
    /// Setuid/setgid regular files in its filesystem; `Err`: why not read.
    pub setid: Result<Vec<SetidFile>, String>,
}

impl ContainerFacts {
    pub fn new(inspect: ContainerInspectResponse) -> ContainerFacts {
        ContainerFacts { inspect, setid: Err(NOT_COLLECTED.into()) }
    }
    pub fn name(&self) -> &str {
        self.inspect.name.as_deref().unwrap_or_default().trim_start_matches('/')
    }
    pub fn id(&self) -> &str {
        self.inspect.id.as_deref().unwrap_or_default()
    }
    pub fn labels(&self) -> std::collections::BTreeMap<String, String> {
        let labels = self.inspect.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
        labels.into_iter().collect()
    }
    pub fn network_mode(&self) -> &str {
        self.inspect.host_config.as_ref().and_then(|h| h.network_mode.as_deref()).unwrap_or("default")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SetidFile {
    /// Absolute path inside the container.
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Clone, Debug)]
pub struct SegFacts {
    /// Policies read from the policy directory; empty: none applied.
    pub policies: Vec<Policy>,
    /// Policy files that could not be read: `file: error`.
    pub policy_errors: Vec<String>,
    /// Where policies were looked for.
    pub policy_dir: String,
    /// Every grant (secret name, target) from the controller; `Err`: why not.
    pub grants: Result<Vec<(String, GrantTarget)>, String>,
}

impl Default for SegFacts {
    fn default() -> Self {
        SegFacts {
            policies: Vec::new(),
            policy_errors: Vec::new(),
            policy_dir: String::new(),
            grants: Err(NOT_COLLECTED.into()),
        }
    }
}
