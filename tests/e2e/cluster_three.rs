//! Three seg nodes on one machine, each a host of its own: its own dockerd
//! in its own network namespace and data root, its controller in that
//! namespace (so attestation, sidecars and the firewall are real on each),
//! one real 3-member etcd over mutual TLS on the host's loopback. Joined
//! with `cluster init/join`. A secret put on node 1 reaches an app on
//! node 3; rotated on node 2 with `--wait`, every app on all three has the
//! new bytes with no restart and `secret status` lists the three; a policy
//! applied on node 1 is enforced by node 3's firewall on node 3's
//! containers (real packets in its namespace).

use seg_e2e::*;
use std::net::SocketAddr;
use std::time::Duration;

const ETCD_PORTS: [u16; 3] = [23790, 23791, 23792];
/// Node k's cluster endpoint, on its namespace's loopback.
fn endpoint(k: usize) -> String {
    format!("127.0.0.1:{}", 27470 + k)
}

const POLICY: &str = "version: 1
project: tri
services:
  server: { ingress: [{ from: [client], ports: [7000/tcp] }] }
  client: {}
  other: {}
";

struct Node {
    engine: PrivateDocker,
    ctl: Controller,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// `segctl` inside node `n`'s namespace.
fn segctl_in(n: &Node, args: &[&str]) -> Out {
    let mut cmd = n.engine.in_ns(segctl_bin());
    run(cmd.args(args), Duration::from_secs(60))
}

fn start_nodes(etcd: &EtcdCluster, base: &std::path::Path) -> Vec<Node> {
    let mut nodes: Vec<Node> = (1..=3)
        .map(|k| {
            let ns = format!("seg3-n{k}");
            let engine =
                PrivateDocker::start(&ns, &base.join(format!("engine{k}")), &[SIDECAR_IMAGE, BUSYBOX_IMAGE]);
            let sock = engine.socket().to_str().unwrap().to_owned();
            let ctl = Controller::prepared_in(&ns, &["--docker-socket", &sock, "--resync-interval", "2s"]);
            for port in ETCD_PORTS {
                let at = addr(&format!("127.0.0.1:{port}"));
                Forward::start(Net::Ns(ns.clone()), at, Net::Host, at);
            }
            if k > 1 {
                Forward::start(
                    Net::Ns(ns.clone()),
                    addr(&endpoint(1)),
                    Net::Ns("seg3-n1".into()),
                    addr(&endpoint(1)),
                );
            }
            Node { engine, ctl }
        })
        .collect();
    let mut token = String::new();
    for (i, n) in nodes.iter_mut().enumerate() {
        let (name, at) = (format!("n{}", i + 1), endpoint(i + 1));
        let mut args: Vec<String> = if i == 0 {
            [vec!["cluster".into(), "init".into()], etcd.init_flags()].concat()
        } else {
            let server = format!("https://{}", endpoint(1));
            [
                ["cluster", "join", &token, "--server", &server].map(String::from).to_vec(),
                etcd.client_cert_flags(),
            ]
            .concat()
        };
        let state = n.ctl.state_dir.to_str().unwrap();
        args.extend(
            ["--state-dir", state, "--node-name", &name, "--listen", &at, "--advertise", &at]
                .map(String::from),
        );
        let out = segctl_in(n, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.success(), "{name}: {}", out.text());
        n.ctl.start_again();
        if i < 2 {
            token = nodes_token(n);
        }
    }
    nodes
}

/// A fresh join token from node `n`.
fn nodes_token(n: &Node) -> String {
    let out = n.ctl.segctl_ok(&["cluster", "token"]);
    out.split_whitespace().find(|w| w.starts_with("SEGTKN-1-")).expect("a token").to_owned()
}

/// An app (busybox) and its sidecar on node `n`'s engine, sharing a tmpfs;
/// both labelled `app/web`. Returns the app's container id.
fn app_with_sidecar(n: &Node, tag: &str) -> String {
    let vol = format!("secrets-{tag}");
    n.engine.docker_ok(&[
        "volume",
        "create",
        "--driver",
        "local",
        "--opt",
        "type=tmpfs",
        "--opt",
        "device=tmpfs",
        "--opt",
        "o=uid=1000,gid=1000,mode=0700",
        &vol,
    ]);
    let agent = n.ctl.agent_volume();
    let labels = ["--label", "com.docker.compose.project=app", "--label", "com.docker.compose.service=web"];
    let mut sidecar = vec!["run", "-d", "--network", "none", "--user", "1000:1000", "--read-only"];
    let mount_rw = format!("{vol}:/run/secrets");
    sidecar.extend(["-v", &mount_rw, "-v", &agent]);
    sidecar.extend(["-e", "SEG_SECRETS=db", "-e", "SEG_DIR=/run/secrets"]);
    sidecar.extend(labels);
    sidecar.push(SIDECAR_IMAGE);
    n.engine.docker_ok(&sidecar);
    let mut app = vec!["run", "-d", "--network", "none", "--user", "1000:1000"];
    let mount = format!("{vol}:/run/secrets:ro");
    app.extend(["-v", &mount]);
    app.extend(labels);
    app.extend([BUSYBOX_IMAGE, "sleep", "3600"]);
    n.engine.docker_ok(&app).trim().to_owned()
}

fn file_in(n: &Node, app: &str) -> Vec<u8> {
    n.engine.docker(&["exec", app, "cat", "/run/secrets/db"]).stdout
}

/// Whether `from` (on node `n`) gets the echo of the server at `ip:7000`.
fn reaches(n: &Node, from: &str, ip: &str) -> bool {
    let script = format!("echo seg | nc -w 2 {ip} 7000");
    n.engine.docker(&["exec", from, "sh", "-c", &script]).stdout_str().contains("seg")
}

#[test]
fn three_nodes_on_three_engines_share_secrets_rotations_and_policies() {
    let _serial = begin();
    let etcd = EtcdCluster::start();
    let base = tempfile::Builder::new().prefix("seg-e2e-three-").tempdir().unwrap();
    let nodes = start_nodes(&etcd, base.path());
    let listed = nodes[0].ctl.segctl_ok(&["cluster", "ls"]);
    assert!(["n1", "n2", "n3"].iter().all(|n| listed.contains(n)), "{listed}");

    // Put on node 1: the app on node 3 (and on 1 and 2) gets the bytes.
    let v1 = random_text(24);
    let put = nodes[0].ctl.segctl_stdin(&["secret", "put", "db", "--from-stdin", "--ttl", "10m"], Some(&v1));
    assert!(put.success(), "{}", put.text());
    nodes[0].ctl.segctl_ok(&["secret", "grant", "db", "--to", "app/web"]);
    let apps: Vec<String> =
        nodes.iter().enumerate().map(|(i, n)| app_with_sidecar(n, &format!("n{i}"))).collect();
    for (n, app) in nodes.iter().zip(&apps) {
        wait_until(Duration::from_secs(30), "the app to see version 1", || {
            (file_in(n, app) == v1).then_some(())
        });
    }

    // Rotate on node 2 with --wait: all three apps, no restart; node 3 lists all.
    let started: Vec<String> = nodes
        .iter()
        .zip(&apps)
        .map(|(n, a)| n.engine.docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", a]))
        .collect();
    wait_until(Duration::from_secs(15), "node 2 to see the three consumers", || {
        let status = nodes[1].ctl.segctl_ok(&["secret", "status", "db", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&status).ok()?;
        (v["consumers"].as_array()?.len() == 3).then_some(())
    });
    let v2 = random_text(24);
    let rotated = nodes[1]
        .ctl
        .segctl_stdin(&["secret", "rotate", "db", "--from-stdin", "--wait", "--timeout", "20s"], Some(&v2));
    assert!(
        rotated.success() && rotated.text().contains("all 3 consumer(s) have version 2"),
        "{}",
        rotated.text()
    );
    for ((n, app), was) in nodes.iter().zip(&apps).zip(&started) {
        assert_eq!(file_in(n, app), v2, "--wait returned before every app had it");
        assert_eq!(&n.engine.docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", app]), was, "no restart");
    }
    let table = nodes[2].ctl.segctl_ok(&["secret", "status", "db"]);
    for name in ["n1", "n2", "n3"] {
        assert!(table.lines().any(|l| l.contains(&format!(" {name} "))), "{name} in\n{table}");
    }

    // A policy applied on node 1, enforced by node 3's firewall on node 3's containers.
    let n3 = &nodes[2];
    n3.engine.docker_ok(&["network", "create", "tri_default"]);
    let start = |service: &str, cmd: &[&str]| {
        let label = format!("com.docker.compose.service={service}");
        let mut args =
            vec!["run", "-d", "--network", "tri_default", "--label", "com.docker.compose.project=tri"];
        args.extend(["--label", &label, BUSYBOX_IMAGE]);
        args.extend_from_slice(cmd);
        n3.engine.docker_ok(&args).trim().to_owned()
    };
    let server = start("server", &["nc", "-ll", "-p", "7000", "-e", "cat"]);
    let ip = n3.engine.docker_ok(&[
        "inspect",
        "-f",
        "{{(index .NetworkSettings.Networks \"tri_default\").IPAddress}}",
        &server,
    ]);
    let ip = ip.trim().to_owned();
    let (client, other) = (start("client", &["sleep", "600"]), start("other", &["sleep", "600"]));
    assert!(reaches(n3, &other, &ip), "no policy yet: open");
    let file = base.path().join("tri.yaml");
    std::fs::write(&file, POLICY).unwrap();
    nodes[0].ctl.segctl_ok(&["policy", "apply", "-f", file.to_str().unwrap()]);
    wait_until(Duration::from_secs(10), "node 3 to drop `other`", || {
        (!reaches(n3, &other, &ip)).then_some(())
    });
    assert!(reaches(n3, &client, &ip), "the client is let through");
    let table = run_in_ns(n3, &["nft", "list", "table", "inet", "seg"]);
    assert!(table.contains("SEG-IN-"), "node 3's own namespace holds the rules:\n{table}");
    let host_table = run(
        std::process::Command::new("nft").args(["list", "table", "inet", "seg"]),
        Duration::from_secs(10),
    );
    assert!(!host_table.success(), "the host's own firewall is untouched");
    nodes[0].ctl.segctl_ok(&["policy", "rm", "tri"]);
    wait_until(Duration::from_secs(10), "node 3 to lift the policy", || {
        reaches(n3, &other, &ip).then_some(())
    });
}

fn run_in_ns(n: &Node, args: &[&str]) -> String {
    let mut cmd = n.engine.in_ns(args[0]);
    run(cmd.args(&args[1..]), Duration::from_secs(10)).stdout_str()
}
