//! The daemon checks (CIS 2.x and 3.15/3.16): pure functions of [`DaemonFacts`].

use super::catalog::{finding, ids};
use super::facts::DaemonFacts;
use super::model::{Degraded, Finding, Level, Need, Object, ObjectKind};

/// Every daemon finding, plus the checks that could not be decided.
pub fn check(d: &DaemonFacts) -> (Vec<Finding>, Vec<Degraded>) {
    let mut degraded = Vec::new();
    let mut out = vec![icc(d), userns(d), live_restore(d), sock_owner(d), sock_mode(d)];
    for (id, f) in [
        (ids::TLS, tls as fn(&super::dockerd::DaemonConfig) -> (Level, String)),
        (ids::DAEMON_NNP, nnp),
        (ids::USERLAND_PROXY, userland_proxy),
    ] {
        out.push(match &d.config {
            Ok(cfg) => {
                let (level, detail) = f(cfg);
                finding(id, level, vec![Object::daemon()], detail)
            }
            Err(why) => {
                degraded.push(Degraded { check: id, needs: Need::Host, reason: why.clone() });
                finding(
                    id,
                    Level::Note,
                    vec![Object::daemon()],
                    format!("cannot read dockerd's options: {why}"),
                )
            }
        });
    }
    if let Err(why) = &d.socket {
        for id in [ids::SOCK_OWNER, ids::SOCK_MODE] {
            degraded.push(Degraded { check: id, needs: Need::Host, reason: why.clone() });
        }
    }
    (out, degraded)
}

fn icc(d: &DaemonFacts) -> Finding {
    let objects = vec![Object::new(ObjectKind::Network, "docker0")];
    let persisted = match d.config.as_ref().map(|c| c.icc) {
        Ok(Some(false)) => "daemon.json/flags set icc=false",
        Ok(_) => "icc is not set to false in daemon.json or on the command line",
        Err(_) => "dockerd's options could not be read",
    };
    let (level, live) = if d.bridge_icc == Some(false) {
        (Level::Pass, "ICC is off on docker0 (the bridge's enable_icc is false)".to_owned())
    } else if d.seg_icc_rule {
        (
            Level::Pass,
            "the controller's rule drops docker0-to-docker0 traffic (segctl icc disable)".to_owned(),
        )
    } else if d.docker0_icc_rule() {
        (Level::Pass, "a DOCKER-USER rule drops docker0-to-docker0 traffic".to_owned())
    } else {
        let mut why = "containers on docker0 reach each other on every port".to_owned();
        if matches!(d.config.as_ref().map(|c| c.icc), Ok(Some(false))) {
            why.push_str(" until dockerd restarts");
        }
        (Level::Warn, why)
    };
    finding(ids::ICC, level, objects, format!("{live}; {persisted}"))
}

fn tls(cfg: &super::dockerd::DaemonConfig) -> (Level, String) {
    let tcp: Vec<&str> = cfg.hosts.iter().map(String::as_str).filter(|h| h.starts_with("tcp://")).collect();
    if tcp.is_empty() {
        return (Level::Pass, "no TCP listener".into());
    }
    let missing: Vec<&str> = [
        ("tlsverify", cfg.tlsverify),
        ("tlscacert", cfg.tlscacert),
        ("tlscert", cfg.tlscert),
        ("tlskey", cfg.tlskey),
    ]
    .iter()
    .filter(|(_, set)| !set)
    .map(|(n, _)| *n)
    .collect();
    if missing.is_empty() {
        (Level::Pass, format!("{} requires client certificates", tcp.join(", ")))
    } else {
        (Level::Warn, format!("{} listens without {}", tcp.join(", "), missing.join(", ")))
    }
}

fn userns(d: &DaemonFacts) -> Finding {
    let (level, detail) = if d.userns() {
        (Level::Pass, "user namespace remapping (or rootless mode) is on")
    } else {
        (Level::Warn, "root in a container is root on the host (no userns-remap)")
    };
    finding(ids::USERNS, level, vec![Object::daemon()], detail)
}

fn nnp(cfg: &super::dockerd::DaemonConfig) -> (Level, String) {
    if cfg.no_new_privileges {
        (Level::Pass, "no-new-privileges is the default for new containers".into())
    } else {
        (Level::Warn, "containers may gain privileges through setuid files unless each one opts out".into())
    }
}

fn live_restore(d: &DaemonFacts) -> Finding {
    let (level, detail) = match d.live_restore {
        Some(true) => (Level::Pass, "containers keep running while dockerd restarts"),
        Some(false) => (Level::Warn, "a dockerd restart stops every container"),
        None => (Level::Note, "docker info did not report LiveRestoreEnabled"),
    };
    finding(ids::LIVE_RESTORE, level, vec![Object::daemon()], detail)
}

fn userland_proxy(cfg: &super::dockerd::DaemonConfig) -> (Level, String) {
    if cfg.userland_proxy {
        (Level::Warn, "docker-proxy serves published ports (hairpin NAT is not used)".into())
    } else {
        (Level::Pass, "userland-proxy is off".into())
    }
}

fn sock_owner(d: &DaemonFacts) -> Finding {
    let Ok(s) = &d.socket else {
        let why = d.socket.as_ref().err().cloned().unwrap_or_default();
        return finding(
            ids::SOCK_OWNER,
            Level::Note,
            vec![Object::daemon()],
            format!("cannot stat the socket: {why}"),
        );
    };
    let objects = vec![Object::new(ObjectKind::Socket, s.path.clone())];
    let group_ok = s.gid == 0 || Some(s.gid) == d.docker_gid;
    let (level, detail) = if s.uid == 0 && group_ok {
        let group = if s.gid == 0 { "root" } else { "docker" };
        (Level::Pass, format!("owned by root:{group}"))
    } else {
        (Level::Warn, format!("owned by uid {} gid {}: that user or group controls the engine", s.uid, s.gid))
    };
    finding(ids::SOCK_OWNER, level, objects, detail)
}

fn sock_mode(d: &DaemonFacts) -> Finding {
    let Ok(s) = &d.socket else {
        let why = d.socket.as_ref().err().cloned().unwrap_or_default();
        return finding(
            ids::SOCK_MODE,
            Level::Note,
            vec![Object::daemon()],
            format!("cannot stat the socket: {why}"),
        );
    };
    let objects = vec![Object::new(ObjectKind::Socket, s.path.clone())];
    let (level, detail) = if s.mode & !0o660 == 0 {
        (Level::Pass, format!("mode {:o}", s.mode))
    } else {
        (Level::Warn, format!("mode {:o}: more than owner and group may use the engine", s.mode))
    };
    finding(ids::SOCK_MODE, level, objects, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::dockerd::DaemonConfig;
    use crate::audit::facts::SocketStat;

    fn hardened() -> DaemonFacts {
        DaemonFacts {
            security_options: vec!["name=seccomp,profile=default".into(), "name=userns".into()],
            live_restore: Some(true),
            config: Ok(DaemonConfig {
                hosts: vec!["unix:///var/run/docker.sock".into()],
                icc: Some(false),
                no_new_privileges: true,
                live_restore: true,
                userland_proxy: false,
                ..Default::default()
            }),
            socket: Ok(SocketStat { path: "/var/run/docker.sock".into(), uid: 0, gid: 105, mode: 0o660 }),
            docker_gid: Some(105),
            bridge_icc: Some(false),
            docker_user: Ok(vec!["-j RETURN".into()]),
            seg_icc_rule: false,
        }
    }

    fn levels(d: &DaemonFacts) -> Vec<(&'static str, Level)> {
        check(d).0.into_iter().map(|f| (f.id, f.level)).collect()
    }

    #[test]
    fn a_hardened_daemon_passes_everything() {
        let l = levels(&hardened());
        assert_eq!(l.len(), 8);
        assert!(l.iter().all(|(_, lv)| *lv == Level::Pass), "{l:?}");
    }

    #[test]
    fn debian_defaults_warn_where_cis_says() {
        let d = DaemonFacts {
            security_options: vec!["name=seccomp,profile=default".into()],
            live_restore: Some(false),
            config: Ok(crate::audit::dockerd::effective(&["dockerd".into()], None)),
            socket: Ok(SocketStat { path: "/run/docker.sock".into(), uid: 0, gid: 105, mode: 0o666 }),
            docker_gid: Some(105),
            bridge_icc: Some(true),
            docker_user: Ok(vec!["-j RETURN".into()]),
            seg_icc_rule: false,
        };
        let warned: Vec<&str> =
            levels(&d).into_iter().filter(|(_, l)| *l == Level::Warn).map(|(i, _)| i).collect();
        assert_eq!(
            warned,
            [ids::ICC, ids::USERNS, ids::LIVE_RESTORE, ids::SOCK_MODE, ids::DAEMON_NNP, ids::USERLAND_PROXY]
        );
    }

    #[test]
    fn icc_is_off_by_bridge_option_or_docker_user_rule() {
        let mut d = hardened();
        d.bridge_icc = Some(true);
        d.config.as_mut().unwrap().icc = Some(false);
        let f = icc(&d);
        assert_eq!(f.level, Level::Warn);
        assert!(
            f.detail.contains("until dockerd restarts") && f.detail.contains("icc=false"),
            "{}",
            f.detail
        );
        d.docker_user = Ok(vec!["-i docker0 -o docker0 -j DROP".into(), "-j RETURN".into()]);
        assert_eq!(icc(&d).level, Level::Pass);
        d.docker_user = Ok(vec!["-i docker0 -o docker0 -p tcp -j DROP".into()]);
        assert_eq!(icc(&d).level, Level::Warn, "a narrower rule is not ICC off");
        d.seg_icc_rule = true;
        assert!(icc(&d).detail.contains("segctl icc disable"));
        assert_eq!(icc(&d).level, Level::Pass);
    }

    #[test]
    fn tcp_listeners_need_all_tls_settings() {
        let mut cfg =
            DaemonConfig { hosts: vec!["tcp://0.0.0.0:2376".into()], tlsverify: true, ..Default::default() };
        let (l, detail) = tls(&cfg);
        assert_eq!(l, Level::Warn);
        assert!(detail.contains("tlscacert, tlscert, tlskey"), "{detail}");
        (cfg.tlscacert, cfg.tlscert, cfg.tlskey) = (true, true, true);
        assert_eq!(tls(&cfg).0, Level::Pass);
    }

    #[test]
    fn unreadable_facts_are_notes_and_named() {
        let mut d = hardened();
        d.config = Err("no dockerd process is visible".into());
        d.socket = Err("No such file".into());
        let (findings, degraded) = check(&d);
        let notes: Vec<&str> = findings.iter().filter(|f| f.level == Level::Note).map(|f| f.id).collect();
        assert_eq!(notes, [ids::SOCK_OWNER, ids::SOCK_MODE, ids::TLS, ids::DAEMON_NNP, ids::USERLAND_PROXY]);
        assert_eq!(degraded.len(), 5);
        let mut d = hardened();
        d.socket = Ok(SocketStat { path: "/s".into(), uid: 1000, gid: 1000, mode: 0o600 });
        assert_eq!(sock_owner(&d).level, Level::Warn);
    }
}
