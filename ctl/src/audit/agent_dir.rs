//! seg-agent-dir-writable: no container mounts the agent directory, or a
//! directory above it, read-write. A root process in such a container could
//! delete or replace `agent.sock` whenever the directory is not read-only
//! (the controller makes it a read-only mount while it runs; a container
//! started before that, or with a mount that bypasses it, keeps write
//! access), and whoever binds `agent.sock` talks to every sidecar.

use super::catalog::{finding, ids};
use super::container_checks::object;
use super::facts::ContainerFacts;
use super::model::{Finding, Level};
use std::path::{Component, Path, PathBuf};

/// One finding per container.
pub fn agent_dir_writable(c: &ContainerFacts, run_dir: &str) -> Finding {
    let agent = normalize(&Path::new(run_dir).join("agent"));
    let hits: Vec<String> = c
        .inspect
        .mounts
        .iter()
        .flatten()
        .filter(|m| m.typ.as_deref() == Some("bind") && m.rw.unwrap_or(true))
        .filter_map(|m| {
            let source = normalize(Path::new(m.source.as_deref()?));
            agent.starts_with(&source).then(|| {
                format!("{} at {} (read-write)", source.display(), m.destination.as_deref().unwrap_or("?"))
            })
        })
        .collect();
    if hits.is_empty() {
        let detail = format!("does not mount {} or a parent read-write", agent.display());
        return finding(ids::AGENT_DIR_RW, Level::Pass, vec![object(c)], detail);
    }
    let detail = format!(
        "mounts {}: a root process in it can delete or replace the agent socket of every sidecar",
        hits.join(", ")
    );
    finding(ids::AGENT_DIR_RW, Level::Warn, vec![object(c)], detail)
}

/// `a//b/./c/` → `/a/b/c` (no file-system access: Docker reports resolved
/// sources, and the run dir is the controller's own spelling).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for part in p.components() {
        match part {
            Component::Normal(x) => out.push(x),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::container_checks::tests::with;
    use serde_json::json;

    fn mounting(source: &str, rw: bool) -> ContainerFacts {
        with(json!({
            "Name": "/intruder",
            "Mounts": [{"Type": "bind", "Source": source, "Destination": "/a", "RW": rw}],
        }))
    }

    #[test]
    fn rw_mounts_of_the_agent_dir_or_a_parent_are_flagged() {
        for source in ["/run/seg/agent", "/run/seg/agent/", "/run/seg", "/run", "/"] {
            let f = agent_dir_writable(&mounting(source, true), "/run/seg");
            assert_eq!(f.level, Level::Warn, "{source}: {}", f.detail);
            assert!(f.detail.contains("at /a (read-write)"), "{}", f.detail);
        }
    }

    #[test]
    fn read_only_unrelated_and_child_mounts_pass() {
        for (source, rw) in
            [("/run/seg/agent", false), ("/run/other", true), ("/run/seg/agent/x", true), ("/runx", true)]
        {
            let f = agent_dir_writable(&mounting(source, rw), "/run/seg");
            assert_eq!(f.level, Level::Pass, "{source}: {}", f.detail);
        }
        assert_eq!(agent_dir_writable(&with(json!({})), "/run/seg").level, Level::Pass);
    }

    #[test]
    fn the_run_dir_flag_is_followed() {
        let f = agent_dir_writable(&mounting("/srv/seg/agent", true), "/srv/seg/");
        assert_eq!(f.level, Level::Warn);
        assert_eq!(agent_dir_writable(&mounting("/run/seg/agent", true), "/srv/seg").level, Level::Pass);
    }
}
