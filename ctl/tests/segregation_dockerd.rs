//! Network segregation across a dockerd restart: a private dockerd in its
//! own network namespace (its bridges and iptables live there, so restarting
//! it disturbs nobody else's containers), a controller in the same
//! namespace, containers with `restart: unless-stopped`. Rules stay while
//! dockerd is down (fail closed); once it is back the event stream
//! reconnects and the restarted containers (new PIDs, maybe new addresses)
//! are covered again. On both firewall backends.
//!
//! Needs root, dockerd and busybox-static; fails, never skips, without them.
//! Run: `cargo test -p segctl --test segregation_dockerd`.

mod segregation_support;

use seg_common::api::policy::Reach::{Blocked, Reachable};
use segregation_support::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A dockerd of our own, in its own network namespace (its bridges and
/// iptables live there), so restarting it disturbs nobody.
struct PrivateDocker {
    ns: String,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl PrivateDocker {
    fn start(dir: &Path) -> PrivateDocker {
        let ns = format!("segt-dk-{}", tag());
        ok(Command::new("ip").args(["netns", "add", &ns]));
        ok(Command::new("ip").args(["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]));
        let mut d = PrivateDocker { ns, dir: dir.to_owned(), child: None };
        d.launch();
        d
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// `nsenter --net` (not `ip netns exec`, which remounts /sys and hides the cgroups).
    fn launch(&mut self) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("dockerd.log")).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .args(["dockerd", "--host", &self.host()])
            .arg("--data-root")
            .arg(self.dir.join("data"))
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("docker.pid"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start a private dockerd");
        self.child = Some(child);
        let host = self.host();
        eventually("the private dockerd answers", Duration::from_secs(30), || {
            docker(Some(&host)).arg("info").output().is_ok_and(|o| o.status.success())
        });
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = child.wait();
    }
}

impl Drop for PrivateDocker {
    fn drop(&mut self) {
        let host = self.host();
        let ids = docker(Some(&host))
            .args(["ps", "-aq"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        for id in ids.unwrap_or_default().split_whitespace() {
            let _ = docker(Some(&host)).args(["rm", "-f", id]).output();
        }
        self.stop();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[test]
fn a_dockerd_restart_keeps_the_policy_enforced_with_iptables() {
    dockerd_restart_keeps_the_policy_enforced("iptables");
}

#[test]
fn a_dockerd_restart_keeps_the_policy_enforced_with_nftables() {
    dockerd_restart_keeps_the_policy_enforced("nftables");
}

/// seg's rules in the namespace `ns`, as `backend` holds them.
fn rules_in(ns: &str, backend: &str) -> String {
    match backend {
        "nftables" => {
            ok(Command::new("ip").args(["netns", "exec", ns, "nft", "list", "table", "inet", "seg"]))
        }
        _ => seg_rules(Some(ns)),
    }
}

fn dockerd_restart_keeps_the_policy_enforced(backend: &str) {
    let _lock = HostLock::take();
    build_image();
    let dir = tempfile::tempdir().unwrap();
    let mut engine = PrivateDocker::start(dir.path());
    let host = engine.host();
    let h = Some(host.as_str());
    // No registry: the test image goes over by `docker save | docker load`.
    let mut save =
        Command::new("docker").args(["save", IMAGE]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    ok(docker(h).arg("load").stdin(save.stdout.take().unwrap()));
    assert!(save.wait().unwrap().success(), "docker save {IMAGE}");
    ok(docker(h).args(["network", "create", "segtnet"]));
    for (name, cmd) in [("db", "nc -ll -p 5432 -e cat"), ("api", "sleep 3600"), ("web", "sleep 3600")] {
        ok(docker(h)
            .args(["run", "-d", "--name", name, "--network", "segtnet", "--restart", "unless-stopped"])
            .args(["--label", "com.docker.compose.project=segtdk", "--label"])
            .arg(format!("com.docker.compose.service={name}"))
            .arg(IMAGE)
            .args(cmd.split(' ')));
    }
    let sock = dir.path().join("docker.sock");
    let flags = ["--resync-interval", "1s", "--firewall", backend];
    let ctl = Controller::start_with(
        &dir.path().join("ctl"),
        Some(&engine.ns),
        Some(sock.to_str().unwrap()),
        &flags,
    );
    let policy = dir.path().join("dk.yaml");
    let text = "version: 1\nproject: segtdk\nservices:\n  db: { ingress: [{ from: [api], ports: [5432/tcp] }] }\n  api: { ingress: any }\n";
    std::fs::write(&policy, text).unwrap();
    ctl.ok(&["policy", "apply", "-f", policy.to_str().unwrap()]);
    let enforced = || {
        let db = ip_of(h, "db", "segtnet");
        reach(h, "api", db, 5432) == Reachable && reach(h, "web", db, 5432) == Blocked
    };
    assert!(enforced(), "before the restart");

    engine.stop();
    assert!(rules_in(&engine.ns, backend).contains("SEG-FORWARD"), "rules stay while dockerd is down");
    engine.launch();
    eventually("the containers are back", Duration::from_secs(30), || {
        ok(docker(h).args(["ps", "-q", "--filter", "status=running"])).lines().count() == 3
    });
    eventually("enforced after the restart", Duration::from_secs(15), enforced);
    assert!(ctl.log_text().contains("reconnecting"), "the event stream reconnected:\n{}", ctl.log_text());
}
