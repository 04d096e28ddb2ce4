//! Hooks that run inside the running containers of a service (Docker exec)
//! instead of on the host: `segctl secret hook NAME --pre-rotate-exec
//! shop/db -- psql -f -`. The target is a service, never a container name,
//! and is resolved by compose labels at each rotation, so compose v1 and v2
//! names, scaled services and several projects all work.

use super::{validate_label, Identity};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest argument vector of an exec hook, in bytes (all arguments).
pub const MAX_EXEC_ARGV_LEN: usize = 4096;

/// Where and what an exec hook runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecHook {
    /// `PROJECT/SERVICE`, or `SERVICE`: that service in each project of the
    /// secret's consumers (a consumer without a project: a standalone one).
    pub service: String,
    /// The program and its arguments, run without a shell.
    pub argv: Vec<String>,
    /// `USER[:GROUP]` to run as; the container's own user when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The service an exec hook names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceTarget {
    /// `None` for a bare `SERVICE`: the consumers' projects decide.
    pub project: Option<String>,
    pub service: String,
}

impl ServiceTarget {
    /// Parses `PROJECT/SERVICE` or `SERVICE` (compose label rules).
    pub fn parse(raw: &str) -> Result<ServiceTarget, String> {
        let (project, service) = match raw.split_once('/') {
            Some((p, s)) => (Some(p), s),
            None => (None, raw),
        };
        if let Some(p) = project {
            validate_label("project", p).map_err(|e| format!("bad exec target {raw:?}: {e}"))?;
        }
        validate_label("service", service).map_err(|e| format!("bad exec target {raw:?}: {e}"))?;
        Ok(ServiceTarget { project: project.map(str::to_owned), service: service.to_owned() })
    }

    /// The identities this target means, given the projects of the
    /// secret's consumers (used only for a bare `SERVICE`).
    pub fn identities<'a>(
        &self,
        consumer_projects: impl IntoIterator<Item = &'a Option<String>>,
    ) -> Vec<Identity> {
        match &self.project {
            Some(p) => vec![Identity { project: Some(p.clone()), service: self.service.clone() }],
            None => {
                let mut ids: Vec<Identity> = consumer_projects
                    .into_iter()
                    .map(|p| Identity { project: p.clone(), service: self.service.clone() })
                    .collect();
                ids.sort();
                ids.dedup();
                ids
            }
        }
    }
}

impl fmt::Display for ServiceTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.project {
            Some(p) => write!(f, "{p}/{}", self.service),
            None => f.write_str(&self.service),
        }
    }
}

impl ExecHook {
    /// Why this exec hook cannot be stored, if it cannot.
    pub fn problem(&self) -> Option<String> {
        if let Err(e) = ServiceTarget::parse(&self.service) {
            return Some(e);
        }
        if !matches!(self.argv.first(), Some(a) if !a.trim().is_empty()) {
            return Some("the exec hook has no command: put it after `--`".into());
        }
        if self.argv.iter().map(|a| a.len() + 1).sum::<usize>() > MAX_EXEC_ARGV_LEN {
            return Some(format!("the exec hook's command is longer than {MAX_EXEC_ARGV_LEN} bytes"));
        }
        let nul = |s: &str| s.contains('\0');
        if self.argv.iter().any(|a| nul(a)) || self.user.as_deref().is_some_and(nul) {
            return Some("the exec hook contains a NUL byte".into());
        }
        if self.user.as_deref().is_some_and(|u| u.is_empty() || u.len() > 64) {
            return Some("the exec hook's --exec-user is empty or longer than 64 bytes".into());
        }
        None
    }

    /// The command as shown (arguments with spaces or quotes are quoted).
    pub fn shown(&self) -> String {
        let quote = |a: &String| {
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        };
        let args: Vec<String> = self.argv.iter().map(quote).collect();
        format!("exec in {}: {}", self.service, args.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_expand_to_identities() {
        let t = ServiceTarget::parse("shop/db").unwrap();
        assert_eq!(t.identities(&[None]), vec![Identity::new(Some("shop"), "db")]);
        let bare = ServiceTarget::parse("db").unwrap();
        let projects = [Some("b".to_owned()), None, Some("a".to_owned()), Some("b".to_owned())];
        let ids: Vec<String> = bare.identities(&projects).iter().map(|i| i.to_string()).collect();
        assert_eq!(ids, ["db", "a/db", "b/db"]);
        assert!(ServiceTarget::parse("shop/").is_err());
        assert!(ServiceTarget::parse("a/b/c").unwrap_err().contains("a/b/c"));
        assert!(ServiceTarget::parse("-x").is_err());
    }

    #[test]
    fn exec_hooks_are_checked_and_shown() {
        let ok = ExecHook {
            service: "shop/db".into(),
            argv: vec!["psql".into(), "-f".into(), "-".into()],
            user: None,
        };
        assert_eq!(ok.problem(), None);
        assert_eq!(ok.shown(), "exec in shop/db: psql -f -");
        assert!(ExecHook { argv: vec![], ..ok.clone() }.problem().unwrap().contains("--"));
        assert!(ExecHook { argv: vec!["a\0".into()], ..ok.clone() }.problem().is_some());
        assert!(ExecHook { service: "x/y/z".into(), ..ok.clone() }.problem().is_some());
        let spaced = ExecHook { argv: vec!["sh".into(), "-c".into(), "it's".into()], ..ok };
        assert_eq!(spaced.shown(), r"exec in shop/db: sh -c 'it'\''s'");
    }
}
