//! Host prerequisites: without `br_netfilter`, traffic between containers on
//! one bridge never reaches iptables, so every same-network rule (ICC off,
//! per-service ingress) would silently do nothing.

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

/// Checks that bridged traffic is filtered; loads `br_netfilter` first if
/// its sysctl is missing (`modprobe` is the caller's, for tests).
pub fn check_br_netfilter(
    path: &Path,
    modprobe: impl FnOnce() -> Result<(), String>,
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
pub fn modprobe_br_netfilter() -> Result<(), String> {
    let out = Command::new("modprobe").arg("br_netfilter").output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
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
            Err("Module br_netfilter not found".into())
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
}
