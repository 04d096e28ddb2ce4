//! Host prerequisites: without `br_netfilter`, traffic between containers on
//! one bridge never reaches iptables, so every same-network rule (ICC off,
//! per-service ingress) would silently do nothing.

use crate::firewall::Inventory;
use crate::network::bridges;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The sysctl that makes bridged traffic go through iptables.
pub const BRIDGE_NF: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(
        "{path} does not exist: the br_netfilter module is not loaded ({tried}). Without it, rules \
         cannot see traffic between containers on one bridge. Load it: `modprobe br_netfilter` \
         (and add it to /etc/modules-load.d/ to keep it across reboots)"
    )]
    NoModule { path: String, tried: String },
    #[error(
        "{path} is {value}, so traffic between containers on one bridge bypasses iptables. Turn it \
         on: `sysctl -w net.bridge.bridge-nf-call-iptables=1` (and in /etc/sysctl.d/ to keep it)"
    )]
    Off { path: String, value: String },
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
}

/// Why `modprobe br_netfilter` did not load the module (quoted in
/// [`HostError::NoModule`]).
#[derive(Debug, thiserror::Error)]
pub enum ModprobeError {
    #[error("{0}")]
    Spawn(std::io::Error),
    /// Its standard error.
    #[error("{0}")]
    Failed(String),
}

/// Checks that bridged traffic is filtered; loads `br_netfilter` first if
/// its sysctl is missing (`modprobe` is the caller's, for tests).
pub fn check_br_netfilter(
    path: &Path,
    modprobe: impl FnOnce() -> Result<(), ModprobeError>,
) -> Result<(), HostError> {
    let shown = path.display().to_string();
    let tried = if path.exists() {
        String::new()
    } else {
        match modprobe() {
            Ok(()) => "`modprobe br_netfilter` ran, but the sysctl is still missing".to_string(),
            Err(e) => format!("`modprobe br_netfilter` failed: {e}"),
        }
    };
    match std::fs::read_to_string(path) {
        Ok(v) if v.trim() == "1" => Ok(()),
        Ok(v) => Err(HostError::Off { path: shown, value: v.trim().to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(HostError::NoModule { path: shown, tried }),
        Err(e) => Err(HostError::Unreadable { path: shown, reason: e.to_string() }),
    }
}

/// `modprobe br_netfilter`.
pub fn modprobe_br_netfilter() -> Result<(), ModprobeError> {
    let out = Command::new("modprobe").arg("br_netfilter").output().map_err(ModprobeError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ModprobeError::Failed(String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

/// The bridge devices of the networks `project`'s containers use that the
/// host does not have, as warnings: rules naming a missing bridge match no
/// traffic, so such a network must not be taken as isolated. Reading the
/// host's links can fail (a controller outside the host's network
/// namespace); that is a warning too, never a refusal.
pub async fn bridge_warnings(inv: &Inventory, project: Option<&str>) -> Vec<String> {
    let networks: BTreeSet<&str> = inv
        .containers
        .iter()
        .filter(|c| c.service.as_ref().is_some_and(|s| s.project.as_deref() == project))
        .flat_map(|c| c.endpoints.iter().map(|e| e.network.as_str()))
        .collect();
    let wanted: Vec<(&str, &str)> =
        networks.into_iter().filter_map(|name| Some((name, inv.network(name)?.bridge.as_deref()?))).collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let present = match bridges::bridges().await {
        Ok(present) => present,
        Err(e) => return vec![format!("bridge devices not checked: {e}")],
    };
    let missing = bridges::missing_bridges(wanted.iter().map(|(_, b)| *b), &present);
    wanted
        .iter()
        .filter(|(_, bridge)| missing.iter().any(|m| m == bridge))
        .map(|(name, bridge)| {
            format!(
                "network {name}: its bridge device {bridge} is not on this host, so rules for it match no \
                 traffic (is dockerd in another network namespace?)"
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sysctl_must_be_one_and_the_module_is_loaded_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridge-nf-call-iptables");
        let mut loaded = false;
        let err = check_br_netfilter(&path, || {
            loaded = true;
            Err(ModprobeError::Failed("Module br_netfilter not found".into()))
        })
        .unwrap_err()
        .to_string();
        assert!(loaded, "modprobe is tried first");
        assert!(err.contains("not loaded") && err.contains("Module br_netfilter not found"), "{err}");
        std::fs::write(&path, "0\n").unwrap();
        let err = check_br_netfilter(&path, || panic!("present: no modprobe")).unwrap_err().to_string();
        assert!(
            err.contains("is 0") && err.contains("sysctl -w net.bridge.bridge-nf-call-iptables=1"),
            "{err}"
        );
        std::fs::write(&path, "1\n").unwrap();
        check_br_netfilter(&path, || panic!("present: no modprobe")).unwrap();
    }

    #[tokio::test]
    async fn a_network_whose_bridge_is_missing_on_the_host_is_warned_about() {
        use crate::firewall::{inventory_from, ContainerFacts, NetEndpoint, NetworkFacts};
        let net = |name: &str, bridge: &str| NetworkFacts {
            id: format!("{name}-id"),
            name: name.into(),
            driver: "bridge".into(),
            options: [("com.docker.network.bridge.name".to_owned(), bridge.to_owned())].into(),
            ..Default::default()
        };
        let on = |network: &str| NetEndpoint { network: network.into(), ipv4: None, ipv6: None };
        let labels = [("com.docker.compose.project", "shop"), ("com.docker.compose.service", "web")];
        let web = ContainerFacts {
            id: "w".into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            endpoints: vec![on("bridge"), on("shop_gone")],
            published: vec![],
        };
        // docker0 exists on this host (Docker runs); br-seg-gone does not.
        let inv = inventory_from([web], [net("bridge", "docker0"), net("shop_gone", "br-seg-gone")]);
        let warnings = bridge_warnings(&inv, Some("shop")).await;
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("shop_gone") && warnings[0].contains("br-seg-gone"), "{warnings:?}");
        assert!(
            bridge_warnings(&inv, Some("other")).await.is_empty(),
            "other projects' networks are not checked"
        );
    }
}
