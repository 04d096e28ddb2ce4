//! Collection: the thin layer that gathers [`Facts`] from the Docker Engine (through
//! the narrow [`EngineApi`] trait), the host (`/proc`, the socket, iptables,
//! overlay2 layers) and seg's own state (policy files, the controller's grants).

use super::catalog::ids;
use super::dockerd;
use super::facts::{is_icc_drop, ContainerFacts, DaemonFacts, Facts, SegFacts, SocketStat};
use super::setid;
use super::AuditError;
use crate::firewall::{Firewall, IptablesFirewall, NftablesFirewall};
use crate::policy::Family;
use crate::segregation::store::Record;
use bollard::models::{ContainerInspectResponse, SystemInfo};
use futures_util::future::BoxFuture;
use futures_util::{stream, StreamExt};
use seg_common::api::{GrantTarget, SecretInfo};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Inspections in flight at once: enough to hide the socket's latency
/// without queueing work in the engine.
const INSPECT_CONCURRENCY: usize = 16;
/// The controller's docker0 ICC chain (see `crate::segregation`).
const SEG_ICC_DOCKER0: &str = "SEG-ICC-docker0";
/// Threads walking layer directories.
const SCAN_WORKERS: usize = 4;

/// What the audit asks of the Docker Engine.
pub trait EngineApi: Sync {
    fn info(&self) -> BoxFuture<'_, Result<SystemInfo, AuditError>>;
    /// Running containers: (id, name without the leading `/`).
    fn running(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, AuditError>>;
    /// `Ok(None)`: the container is gone.
    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ContainerInspectResponse>, AuditError>>;
    /// `enable_icc` of the default `bridge` network; `None` when absent.
    fn bridge_icc(&self) -> BoxFuture<'_, Result<Option<bool>, AuditError>>;
}

/// Where the host facts are read from (all overridable for tests).
#[derive(Clone, Debug)]
pub struct Sources {
    pub docker_socket: PathBuf,
    /// `None`: the file dockerd's `--config-file` names, else /etc/docker/daemon.json.
    pub daemon_json: Option<PathBuf>,
    pub proc: PathBuf,
    pub docker_pid_file: PathBuf,
    pub group_file: PathBuf,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
}

impl Sources {
    pub fn host(docker_socket: PathBuf, state_dir: PathBuf, run_dir: PathBuf) -> Sources {
        Sources {
            docker_socket,
            daemon_json: None,
            proc: "/proc".into(),
            docker_pid_file: "/var/run/docker.pid".into(),
            group_file: "/etc/group".into(),
            state_dir,
            run_dir,
        }
    }

    pub fn policy_dir(&self) -> PathBuf {
        self.state_dir.join("policies")
    }
}

/// Running containers to audit: all, or those `wanted` names (or id prefixes).
pub fn select_containers(
    running: Vec<(String, String)>,
    wanted: &[String],
) -> Result<Vec<(String, String)>, AuditError> {
    if wanted.is_empty() {
        return Ok(running);
    }
    let mut out = Vec::new();
    for w in wanted {
        let w = w.trim_start_matches('/');
        let hit = running.iter().find(|(id, name)| name == w || (w.len() >= 12 && id.starts_with(w)));
        match hit {
            Some(c) if !out.contains(c) => out.push(c.clone()),
            Some(_) => {}
            None => return Err(AuditError::NoSuchContainer(w.to_owned())),
        }
    }
    Ok(out)
}

/// Gathers everything the `selected` checks need.
pub async fn collect(
    engine: &dyn EngineApi,
    src: &Sources,
    wanted: &[String],
    selected: &[&str],
) -> Result<(Facts, SystemInfo), AuditError> {
    let wants = |id: &str| selected.contains(&id);
    let (info, running, bridge_icc) = tokio::join!(engine.info(), engine.running(), engine.bridge_icc());
    let (info, bridge_icc) = (info?, bridge_icc?);
    let chosen = select_containers(running?, wanted)?;
    let inspected: Vec<Result<Option<ContainerInspectResponse>, AuditError>> = stream::iter(chosen.iter())
        .map(|(id, _)| engine.inspect(id))
        .buffer_unordered(INSPECT_CONCURRENCY)
        .collect()
        .await;
    let mut containers = Vec::new();
    for r in inspected {
        // A container that stopped since the listing is simply not audited.
        containers.extend(r?.map(ContainerFacts::new));
    }
    containers.sort_by(|a, b| a.name().cmp(b.name()));
    let grants = if wants(ids::EXPOSED_SECRETS) { Some(read_grants(&src.run_dir).await) } else { None };
    let host_src = src.clone();
    let need_iptables = wants(ids::ICC) || wants(ids::DOCKER0);
    let need_setid = wants(ids::SETID);
    let (daemon, containers, seg) = tokio::task::spawn_blocking(move || {
        let daemon = daemon_facts(&host_src, need_iptables);
        if need_setid {
            setid::scan_containers(&mut containers, SCAN_WORKERS);
        }
        (daemon, containers, read_policies(&host_src.policy_dir()))
    })
    .await
    .map_err(|e| AuditError::Internal(format!("host fact collection panicked: {e}")))?;
    let daemon = DaemonFacts {
        security_options: info.security_options.clone().unwrap_or_default(),
        live_restore: info.live_restore_enabled,
        bridge_icc,
        ..daemon
    };
    let seg = SegFacts { grants: grants.unwrap_or_else(|| Err("not needed".into())), ..seg };
    Ok((Facts { daemon, containers, seg }, info))
}

/// The host's side of the daemon facts (no engine calls).
pub fn daemon_facts(src: &Sources, read_iptables: bool) -> DaemonFacts {
    let config = dockerd::dockerd_cmdline(&src.proc, &src.docker_pid_file).and_then(|args| {
        let file = src.daemon_json.clone().unwrap_or_else(|| dockerd::config_file(&args));
        let json = dockerd::read_config(&file)?;
        let mut cfg = dockerd::effective(&args, json.as_ref());
        cfg.config_file = file;
        Ok(cfg)
    });
    let table = if read_iptables {
        IptablesFirewall::new().current(Family::V4).map_err(|e| e.to_string())
    } else {
        Err("not needed".into())
    };
    let docker_user = table.as_ref().map_err(Clone::clone).and_then(|t| {
        t.hooks
            .as_ref()
            .and_then(|h| h.docker_user.clone())
            .ok_or_else(|| "DOCKER-USER does not exist".into())
    });
    let seg_icc_rule = table.as_ref().is_ok_and(|t| {
        let hooked = docker_user.as_ref().is_ok_and(|r| r.iter().any(|r| r == "-j SEG-FORWARD"));
        hooked && t.chains.get(SEG_ICC_DOCKER0).is_some_and(|rules| rules.iter().any(|r| is_icc_drop(r)))
    }) || (read_iptables && nft_icc_rule());
    DaemonFacts {
        config,
        socket: socket_stat(&src.docker_socket),
        docker_gid: group_id(&src.group_file, "docker"),
        docker_user,
        seg_icc_rule,
        ..DaemonFacts::default()
    }
}

/// seg's docker0 ICC rule in the nftables backend's table: the chain exists
/// only while the rule is in force, and the base chain hooks it.
fn nft_icc_rule() -> bool {
    match NftablesFirewall::new().live() {
        Ok(Some(t)) => {
            t.chains.get(SEG_ICC_DOCKER0).is_some_and(|c| !c.tags.is_empty())
                && t.chains.get(crate::firewall::naming::TOP).is_some_and(|c| c.hook.is_some())
        }
        _ => false,
    }
}

fn socket_stat(path: &Path) -> Result<SocketStat, String> {
    let m = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(SocketStat { path: path.display().to_string(), uid: m.uid(), gid: m.gid(), mode: m.mode() & 0o7777 })
}

/// The gid of `group` in an `/etc/group`-format file.
pub fn group_id(file: &Path, group: &str) -> Option<u32> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next() == Some(group)).then(|| f.nth(1).and_then(|g| g.parse().ok())).flatten()
    })
}

/// The controller's applied policies, read from its store
/// (`<state>/policies/<name>.json`, see `crate::segregation::store`) without
/// changing anything there; the files that do not read are listed with why.
pub fn read_policies(dir: &Path) -> SegFacts {
    let mut seg = SegFacts { policy_dir: dir.display().to_string(), ..SegFacts::default() };
    let Ok(entries) = std::fs::read_dir(dir) else { return seg };
    let mut files: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect();
    files.sort();
    for f in files {
        let record = std::fs::read(&f)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|e| e.to_string()));
        match record.and_then(|r| r.parse().map_err(|e| e.to_string())) {
            Ok(p) => seg.policies.push(p),
            Err(e) => seg.policy_errors.push(format!("{}: {e}", f.display())),
        }
    }
    seg
}

/// Every (secret, grant) from the controller's admin socket.
async fn read_grants(run_dir: &Path) -> Result<Vec<(String, GrantTarget)>, String> {
    let client = crate::client::AdminClient::new(run_dir);
    let infos: Vec<SecretInfo> = client.get("/v1/secrets").await.map_err(|e| format!("{e:#}"))?;
    let mut out = Vec::new();
    for info in infos {
        for g in &info.grants {
            let target = GrantTarget::parse(g).map_err(|e| format!("grant {g:?} of {}: {e}", info.name))?;
            out.push((info.name.to_string(), target));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_selection_by_name_or_id_prefix() {
        let running = vec![
            ("0123456789abcdef".to_owned(), "web".to_owned()),
            ("fedcba9876543210".to_owned(), "db".to_owned()),
        ];
        let names = |w: &[&str]| -> Result<Vec<String>, AuditError> {
            let w: Vec<String> = w.iter().map(|s| s.to_string()).collect();
            select_containers(running.clone(), &w).map(|v| v.into_iter().map(|(_, n)| n).collect())
        };
        assert_eq!(names(&[]).unwrap(), ["web", "db"]);
        assert_eq!(names(&["/db", "0123456789ab", "web"]).unwrap(), ["db", "web"]);
        let err = names(&["cache"]).unwrap_err().to_string();
        assert!(err.contains("`cache`"), "{err}");
        assert!(names(&["0123"]).is_err(), "short id prefixes are ambiguous");
    }

    #[test]
    fn group_file_and_policy_dir_reading() {
        let t = tempfile::tempdir().unwrap();
        let g = t.path().join("group");
        std::fs::write(&g, "root:x:0:\ndockerx:x:7:\ndocker:x:105:alice\n").unwrap();
        assert_eq!(group_id(&g, "docker"), Some(105));
        assert_eq!(group_id(&g, "nope"), None);
        let seg = read_policies(&t.path().join("missing"));
        assert!(seg.policies.is_empty() && seg.policy_errors.is_empty());
        let dir = t.path().join("policies");
        std::fs::create_dir(&dir).unwrap();
        let record = |name: &str, text: &str| {
            serde_json::json!({"name": name, "applied_at": 1,
                "source": {"file": "shop.yaml", "text": text, "dir_project": null}})
            .to_string()
        };
        std::fs::write(
            dir.join("shop.json"),
            record("shop", "version: 1\nproject: shop\nservices:\n  web: {}\n"),
        )
        .unwrap();
        std::fs::write(dir.join("bad.json"), record("bad", "version: 2\n")).unwrap();
        std::fs::write(dir.join("notes.yaml"), "ignored").unwrap();
        let seg = read_policies(&dir);
        assert_eq!(seg.policies.len(), 1);
        assert_eq!(seg.policy_errors.len(), 1);
        assert!(seg.policy_errors[0].contains("bad.json"), "{:?}", seg.policy_errors);
    }
}
