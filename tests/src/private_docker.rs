//! A Docker engine of a test's own, in its own network namespace (its
//! bridges, NAT and firewall live there) and data root: a "host" of a
//! cluster test, so that attestation, sidecars and the firewall are real on
//! each node. TCP between namespaces goes through [`Forward`]s (etcd on the
//! host's loopback, a node's cluster endpoint on another namespace's), so
//! no route or host firewall rule is needed.

use crate::process::{run, Out};
use crate::wait::wait_until;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct PrivateDocker {
    pub ns: String,
    dir: PathBuf,
    child: Option<Child>,
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd, Duration::from_secs(120));
    assert!(out.success(), "{cmd:?} failed: {}", out.text());
    out.stdout_str()
}

impl PrivateDocker {
    /// A fresh namespace `ns` with its own dockerd, and `images` of the
    /// host's engine loaded into it (no registry: `docker save | load`).
    pub fn start(ns: &str, dir: &Path, images: &[&str]) -> PrivateDocker {
        let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        ok(Command::new("ip").args(["netns", "add", ns]));
        ok(Command::new("ip").args(["netns", "exec", ns, "ip", "link", "set", "lo", "up"]));
        std::fs::create_dir_all(dir).expect("engine dir");
        let log = std::fs::File::create(dir.join("dockerd.log")).expect("dockerd log");
        let mut engine = PrivateDocker { ns: ns.to_owned(), dir: dir.to_owned(), child: None };
        // `nsenter --net`, not `ip netns exec` (which remounts /sys and hides the cgroups).
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .args(["dockerd", "--host", &engine.host()])
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("start a private dockerd");
        engine.child = Some(child);
        wait_until(Duration::from_secs(60), "the private dockerd to answer", || {
            engine.docker(&["info"]).success().then_some(())
        });
        for image in images {
            let mut save =
                Command::new("docker").args(["save", image]).stdout(Stdio::piped()).spawn().unwrap();
            let stdin = save.stdout.take().unwrap();
            let loaded = Command::new("docker")
                .args(["-H", &engine.host(), "load", "-q"])
                .stdin(stdin)
                .stdout(Stdio::null())
                .status()
                .expect("docker load");
            assert!(save.wait().unwrap().success() && loaded.success(), "docker save {image} | docker load");
        }
        engine
    }

    /// `unix://…/docker.sock`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    pub fn docker(&self, args: &[&str]) -> Out {
        run(Command::new("docker").arg("-H").arg(self.host()).args(args), Duration::from_secs(60))
    }

    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(out.success(), "docker -H {} {args:?}: {}", self.host(), out.text());
        out.stdout_str()
    }

    /// A command in this engine's network namespace.
    pub fn in_ns(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.ns)).arg(program);
        cmd
    }
}

impl Drop for PrivateDocker {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]).stdout_str();
        for id in ids.split_whitespace() {
            self.docker(&["rm", "-f", "-v", id]);
        }
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        // The engine's own mounts under its data root.
        let data = self.dir.join("data");
        let _ = Command::new("umount").arg("-R").arg("-l").arg(data).stderr(Stdio::null()).status();
    }
}

/// Where a [`Forward`] listens or connects: a named namespace, or the host's.
#[derive(Clone, Debug)]
pub enum Net {
    Host,
    Ns(String),
}

impl Net {
    fn enter(&self, host: &std::fs::File) {
        let file = match self {
            Net::Host => host.try_clone().expect("dup"),
            Net::Ns(ns) => std::fs::File::open(format!("/run/netns/{ns}")).expect("open the namespace"),
        };
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    }
}

/// A TCP forwarder from one namespace's address to another's, for the
/// test's life (its threads end with the process).
pub struct Forward;

impl Forward {
    pub fn start(from: Net, listen: SocketAddr, to: Net, target: SocketAddr) -> Forward {
        let host = std::fs::File::open("/proc/self/ns/net").expect("this process's namespace");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // setns is per thread: this one lives in `from`.
            from.enter(&host);
            let listener = TcpListener::bind(listen).expect("bind the forwarder");
            ready_tx.send(()).unwrap();
            for conn in listener.incoming().flatten() {
                let (to, host) = (to.clone(), host.try_clone().expect("dup"));
                std::thread::spawn(move || {
                    to.enter(&host);
                    if let Ok(upstream) = TcpStream::connect(target) {
                        splice(conn, upstream);
                    }
                });
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("the forwarder listens");
        Forward
    }
}

/// Copies both ways until either side closes.
fn splice(a: TcpStream, b: TcpStream) {
    let (mut a2, mut b2) = (a.try_clone().expect("dup"), b.try_clone().expect("dup"));
    let back = std::thread::spawn(move || {
        copy(&mut b2, &mut a2);
    });
    let (mut a, mut b) = (a, b);
    copy(&mut a, &mut b);
    let _ = back.join();
}

fn copy(from: &mut TcpStream, to: &mut TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
