//! Per-container checks over inspect fixtures: a container hardened like the
//! example's sidecar passes everything; each deliberate flaw is flagged by
//! exactly its check.

use super::*;
use crate::audit::facts::{ContainerFacts, DaemonFacts, SocketStat};
use serde_json::{json, Value};

/// `docker inspect` of a container hardened like examples/secrets' sidecar.
pub fn hardened_json() -> Value {
    json!({
        "Id": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "Name": "/hardened",
        "AppArmorProfile": "docker-default",
        "Config": {
            "User": "1000:1000",
            "Env": ["PATH=/bin", "SEG_SECRETS=db-password", "SEG_DIR=/run/secrets"],
            "Healthcheck": {"Test": ["CMD", "/seg-sidecar", "health"]},
            "Labels": {}
        },
        "HostConfig": {
            "Privileged": false, "ReadonlyRootfs": true, "CapDrop": ["ALL"], "CapAdd": null,
            "SecurityOpt": ["no-new-privileges:true"], "NetworkMode": "none",
            "Memory": 67108864, "NanoCpus": 500000000, "PidsLimit": 64,
            "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
            "PidMode": "", "IpcMode": "private", "UTSMode": ""
        },
        "Mounts": [
            {"Type": "volume", "Source": "/var/lib/docker/volumes/x/_data", "Destination": "/run/secrets", "RW": true},
            {"Type": "bind", "Source": "/run/seg/agent", "Destination": "/run/seg/agent", "RW": false}
        ],
        "NetworkSettings": {"Ports": {}, "Networks": {"none": {}}}
    })
}

pub fn facts(v: Value) -> ContainerFacts {
    let mut c = ContainerFacts::new(serde_json::from_value(v).expect("fixture is inspect JSON"));
    c.setid = Ok(Vec::new());
    c
}

/// Applies a JSON merge patch (RFC 7386) to the hardened fixture.
pub fn with(patch: Value) -> ContainerFacts {
    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    if v.is_null() {
                        a.remove(&k);
                    } else {
                        merge(a.entry(k).or_insert(Value::Null), v);
                    }
                }
            }
            (a, b) => *a = b,
        }
    }
    let mut v = hardened_json();
    merge(&mut v, patch);
    facts(v)
}

pub fn daemon() -> DaemonFacts {
    DaemonFacts {
        security_options: vec!["name=apparmor".into(), "name=seccomp,profile=default".into()],
        bridge_icc: Some(true),
        docker_user: Ok(vec!["-j RETURN".into()]),
        socket: Ok(SocketStat { path: "/var/run/docker.sock".into(), uid: 0, gid: 0, mode: 0o660 }),
        ..DaemonFacts::default()
    }
}

fn flagged(c: &ContainerFacts, d: &DaemonFacts) -> Vec<(&'static str, Level)> {
    check(c, d, None).into_iter().filter(|f| f.level != Level::Pass).map(|f| (f.id, f.level)).collect()
}

#[test]
fn the_hardened_container_passes_every_check() {
    let findings = check(&facts(hardened_json()), &daemon(), None);
    assert_eq!(findings.len(), CHECKS.len());
    let bad: Vec<_> = findings.iter().filter(|f| f.level != Level::Pass).map(|f| (f.id, &f.detail)).collect();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(findings[0].objects[0].name, "hardened");
}

#[test]
fn each_flaw_is_flagged_by_exactly_its_check() {
    let w = Level::Warn;
    let cases: Vec<(Value, Vec<(&str, Level)>)> = vec![
        (json!({"HostConfig": {"Privileged": true}}), vec![(ids::PRIVILEGED, w)]),
        (json!({"Config": {"User": ""}}), vec![(ids::USER, w)]),
        (json!({"Config": {"User": "root:root"}}), vec![(ids::USER, w)]),
        (json!({"Config": {"Healthcheck": {"Test": ["NONE"]}}}), vec![(ids::HEALTHCHECK, w)]),
        (json!({"AppArmorProfile": "unconfined"}), vec![(ids::APPARMOR, w)]),
        (json!({"HostConfig": {"CapAdd": ["CAP_SYS_ADMIN"]}}), vec![(ids::CAPS, w)]),
        (json!({"HostConfig": {"CapAdd": ["NET_BIND_SERVICE"]}}), vec![(ids::CAPS, Level::Info)]),
        (
            json!({"Mounts": [{"Type": "bind", "Source": "/etc", "Destination": "/h", "RW": true}]}),
            vec![(ids::MOUNTS, w)],
        ),
        (
            json!({"Mounts": [{"Type": "bind", "Source": "/etc/localtime", "Destination": "/etc/localtime", "RW": false}]}),
            vec![(ids::MOUNTS, Level::Info)],
        ),
        (
            json!({"HostConfig": {"NetworkMode": "host"}, "NetworkSettings": {"Networks": {"host": {}}}}),
            vec![(ids::HOST_NET, w)],
        ),
        (json!({"HostConfig": {"Memory": 0}}), vec![(ids::MEMORY, w)]),
        (json!({"HostConfig": {"NanoCpus": 0}}), vec![(ids::CPU, w)]),
        (json!({"HostConfig": {"NanoCpus": 0, "CpuShares": 512}}), vec![]),
        (json!({"HostConfig": {"ReadonlyRootfs": false}}), vec![(ids::READ_ONLY, w)]),
        (json!({"HostConfig": {"PidMode": "host"}}), vec![(ids::HOST_PID, w)]),
        (json!({"HostConfig": {"IpcMode": "host"}}), vec![(ids::HOST_IPC, w)]),
        (json!({"HostConfig": {"UTSMode": "host"}}), vec![(ids::HOST_UTS, w)]),
        (
            json!({"HostConfig": {"SecurityOpt": ["no-new-privileges:true", "seccomp=unconfined"]}}),
            vec![(ids::SECCOMP, w)],
        ),
        (json!({"HostConfig": {"SecurityOpt": []}}), vec![(ids::NNP, w)]),
        (json!({"HostConfig": {"SecurityOpt": ["no-new-privileges=false"]}}), vec![(ids::NNP, w)]),
        (json!({"HostConfig": {"PidsLimit": 0}}), vec![(ids::PIDS, w)]),
        (
            json!({"Mounts": [{"Type": "bind", "Source": "/var/run/docker.sock", "Destination": "/var/run/docker.sock", "RW": true}]}),
            vec![(ids::SOCK_MOUNT, w)],
        ),
        (
            json!({"Mounts": [{"Type": "bind", "Source": "/run", "Destination": "/host-run", "RW": false}]}),
            vec![(ids::SOCK_MOUNT, w)],
        ),
    ];
    for (patch, want) in cases {
        let got = flagged(&with(patch.clone()), &daemon());
        assert_eq!(got, want, "patch {patch}");
    }
}

#[test]
fn published_ports_and_docker0() {
    let c = with(json!({
        "HostConfig": {"NetworkMode": "bridge"},
        "NetworkSettings": {"Networks": {"bridge": {}}, "Ports": {
            "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}],
            "443/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8443"}],
            "9000/tcp": null
        }}
    }));
    let f = check(&c, &daemon(), Some(&[ids::PORTS, ids::DOCKER0]));
    assert_eq!(f.len(), 2);
    assert_eq!((f[0].id, f[0].level), (ids::PORTS, Level::Warn));
    assert_eq!(f[0].detail, "published on every address: 0.0.0.0:8080 -> 80/tcp, :::8080 -> 80/tcp");
    assert_eq!((f[1].id, f[1].level), (ids::DOCKER0, Level::Warn));
    let mut d = daemon();
    d.bridge_icc = Some(false);
    assert_eq!(
        check(&c, &d, Some(&[ids::DOCKER0]))[0].level,
        Level::Info,
        "ICC off: on docker0 is only INFO"
    );
}

#[test]
fn restart_always_needs_limits_and_on_failure_a_bound() {
    let level = |patch: Value| {
        check(&with(patch), &daemon(), Some(&[ids::RESTART])).pop().map(|f| (f.level, f.detail)).unwrap()
    };
    let always = json!({"HostConfig": {"RestartPolicy": {"Name": "always"}}});
    assert_eq!(level(always).0, Level::Pass, "always with memory and CPU limits");
    let (l, detail) = level(json!({"HostConfig": {"RestartPolicy": {"Name": "always"}, "Memory": 0}}));
    assert_eq!(l, Level::Warn, "docker-bench passes this one");
    assert!(detail.contains("always without memory and CPU limits"), "{detail}");
    assert_eq!(
        level(json!({"HostConfig": {"RestartPolicy": {"Name": "unless-stopped"}, "NanoCpus": 0}})).0,
        Level::Warn
    );
    assert_eq!(
        level(json!({"HostConfig": {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 5}}})).0,
        Level::Pass
    );
    assert_eq!(
        level(json!({"HostConfig": {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 0}}})).0,
        Level::Warn
    );
    assert_eq!(
        level(json!({"HostConfig": {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 6}}})).0,
        Level::Warn
    );
}

#[test]
fn daemon_defaults_change_container_verdicts() {
    let c = with(json!({"HostConfig": {"SecurityOpt": []}, "AppArmorProfile": ""}));
    let mut d = daemon();
    d.config = Ok(crate::audit::dockerd::DaemonConfig { no_new_privileges: true, ..Default::default() });
    d.security_options = vec!["name=seccomp,profile=default".into()];
    let f = check(&c, &d, None);
    assert!(f.iter().all(|f| f.level == Level::Pass), "nnp by default, no AppArmor on the host");
    assert!(!f.iter().any(|f| f.id == ids::APPARMOR), "AppArmor does not apply without it on the host");
}
