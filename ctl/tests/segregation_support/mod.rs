//! Helpers of the segregation tests against the real engine: the host
//! firewall lock, a controller process, the `segctl` and `docker` CLIs,
//! probes from inside containers, a "world" namespace routed to the host.
//! Every object is named `segt…` and removed by a guard however a test ends.

#![allow(dead_code)]

use seg_common::api::policy::Reach;
use segctl::segregation::probe::{probe, Target};
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const SEGCTL: &str = env!("CARGO_BIN_EXE_segctl");
pub const IMAGE: &str = "seg-test-busybox:seg";
pub const PROBE: Duration = Duration::from_millis(700);

/// A number to make names unique among concurrent runs.
pub fn tag() -> u32 {
    std::process::id() % 100_000 * 10 + fastrand::u32(..10)
}

// The host lock and the firewall reset are shared with the audit tests.
#[path = "../support/host.rs"]
mod host;
#[allow(unused_imports)] // each test binary uses part of it
pub use host::{FirewallReset, HostLock};

/// seg's chains and the DOCKER-USER rules as `iptables-save` prints them.
pub fn seg_rules(netns: Option<&str>) -> String {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "iptables-save", "-t", "filter"]);
            c
        }
        None => {
            let mut c = Command::new("iptables-save");
            c.args(["-t", "filter"]);
            c
        }
    };
    let out = cmd.output().expect("iptables-save");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines: Vec<&str> =
        text.lines().filter(|l| l.contains("SEG-") || l.starts_with("-A DOCKER-USER")).collect();
    lines.sort();
    lines.join("\n")
}

/// seg's nftables table as `nft -j` lists it, without handles (they change
/// with every rebuild) and with set elements sorted (listed in any order).
pub fn seg_table() -> String {
    let out = run(Command::new("nft").args(["-j", "list", "table", "inet", "seg"]));
    let mut json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    normalize(&mut json);
    let mut items: Vec<String> =
        json["nftables"].as_array().into_iter().flatten().map(|i| i.to_string()).collect();
    items.sort();
    items.join("\n")
}

fn normalize(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("handle");
            if let Some(serde_json::Value::Array(elems)) = map.get_mut("elem") {
                elems.sort_by_key(|e| e.to_string());
            }
            map.values_mut().for_each(normalize);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}

/// seg's live rules as the backend holds them: `iptables-save`'s seg lines
/// (iptables) or the `inet seg` table (nftables).
pub fn live_rules(backend: &str) -> String {
    match backend {
        "nftables" => seg_table(),
        _ => seg_rules(None),
    }
}

pub fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output().unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

pub fn ok(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub fn docker(host: Option<&str>) -> Command {
    let mut c = Command::new("docker");
    if let Some(h) = host {
        c.args(["-H", h]);
    }
    c.env("DOCKER_BUILDKIT", "0");
    c
}

/// A `FROM scratch` image holding only a static busybox (no registry here).
pub fn build_image() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", dir.path().join("busybox"))
        .expect("copy /bin/busybox into the build context: apt-get install -y busybox-static");
    let dockerfile =
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    ok(docker(None).args(["build", "-q", "-t", IMAGE, dir.path().to_str().unwrap()]));
}

/// Removes containers, networks, compose projects when dropped.
pub struct Cleanup(pub Vec<Command>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for cmd in &mut self.0 {
            let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
    }
}

pub fn pid_of(host: Option<&str>, container: &str) -> u32 {
    ok(docker(host).args(["inspect", "-f", "{{.State.Pid}}", container])).parse().expect("a pid")
}

pub fn ip_of(host: Option<&str>, container: &str, network: &str) -> IpAddr {
    let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    ok(docker(host).args(["inspect", "-f", &format, container])).parse().expect("an address")
}

/// A TCP connection from inside `container`'s network namespace.
pub fn reach(host: Option<&str>, from: &str, to: IpAddr, port: u16) -> Reach {
    probe(&Target::from_pid(pid_of(host, from), SocketAddr::new(to, port)), PROBE).0
}

pub fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `segctl node run` in the background (optionally inside a network
/// namespace, with its own Docker), stopped with SIGTERM when dropped.
pub struct Controller {
    child: Child,
    pub run_dir: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
}

impl Controller {
    pub fn start(dir: &Path, netns: Option<&str>, docker_socket: Option<&str>) -> Controller {
        Controller::start_with(dir, netns, docker_socket, &["--resync-interval", "1s"])
    }

    /// [`Controller::start`] with other `node run` flags: e.g. a resync of
    /// `1h` (only the kernel's change notifications can repair in a test's
    /// time) or `--firewall nftables`. Give `--resync-interval` here.
    pub fn start_with(
        dir: &Path,
        netns: Option<&str>,
        docker_socket: Option<&str>,
        flags: &[&str],
    ) -> Controller {
        std::fs::create_dir_all(dir).unwrap();
        let (run_dir, state_dir) = (dir.join("run"), dir.join("state"));
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let log = dir.join(format!("controller-{n}.log"));
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(SEGCTL);
                c
            }
            None => Command::new(SEGCTL),
        };
        cmd.args(["node", "run", "--log-level", "info,segctl=debug"])
            .args(flags)
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--run-dir")
            .arg(&run_dir)
            .args(docker_socket.map(|s| ["--docker-socket", s]).into_iter().flatten())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        let child = cmd.spawn().expect("start segctl node run");
        let ctl = Controller { child, run_dir, state_dir, log };
        eventually("the controller answers", Duration::from_secs(10), || {
            ctl.segctl(&["status", "--exit-zero"]).status.success()
        });
        ctl
    }

    pub fn segctl(&self, args: &[&str]) -> Output {
        run(Command::new(SEGCTL).args(args).arg("--run-dir").arg(&self.run_dir))
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.segctl(args);
        assert!(
            out.status.success(),
            "segctl {args:?} failed:\n{}{}\n--- controller log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.terminate();
        // The controller keeps agent/ mounted read-only after it stops.
        segctl::node::agent_dir::release(&self.run_dir);
    }
}

/// A namespace standing for the world: a veth pair to the host, routed, so
/// its connections to the host's address go through Docker's DNAT and
/// FORWARD like traffic from another machine.
pub struct World {
    pub ns: String,
    /// The host's side (connect to published ports here).
    pub host_ip: IpAddr,
    /// The world's own address.
    pub ip: IpAddr,
    veth: String,
}

impl World {
    pub fn new(tag: u32) -> World {
        let ns = format!("segt-w-{tag}");
        let veth = format!("sgw{}", tag % 100_000);
        let net = format!("10.252.{}", tag % 250);
        let (host_ip, ip) = (format!("{net}.1"), format!("{net}.2"));
        let world = World {
            ns: ns.clone(),
            host_ip: host_ip.parse().unwrap(),
            ip: ip.parse().unwrap(),
            veth: veth.clone(),
        };
        let sh = |args: &[&str]| ok(Command::new(args[0]).args(&args[1..]));
        sh(&["ip", "netns", "add", &ns]);
        sh(&[
            "ip",
            "link",
            "add",
            &format!("{veth}h"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("{veth}w"),
            "netns",
            &ns,
        ]);
        sh(&["ip", "addr", "add", &format!("{host_ip}/30"), "dev", &format!("{veth}h")]);
        sh(&["ip", "link", "set", &format!("{veth}h"), "up"]);
        let inside = |args: &[&str]| sh(&[&["ip", "netns", "exec", &ns], args].concat());
        inside(&["ip", "addr", "add", &format!("{ip}/30"), "dev", &format!("{veth}w")]);
        inside(&["ip", "link", "set", &format!("{veth}w"), "up"]);
        inside(&["ip", "link", "set", "lo", "up"]);
        inside(&["ip", "route", "add", "default", "via", &host_ip]);
        world
    }

    /// A TCP connection from the world to the host's `port`.
    pub fn reach_host(&self, port: u16) -> Reach {
        let target = Target {
            netns: format!("/run/netns/{}", self.ns).into(),
            addr: SocketAddr::new(self.host_ip, port),
        };
        probe(&target, PROBE).0
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &format!("{}h", self.veth)]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}
