//! Policies live in the cluster: a policy applied on node b (through its
//! local socket) is stored in etcd and installed by node a within a
//! second or two; node a then enforces it on its host's containers — a
//! client replica started after b stopped is let through to the server by
//! a's rules alone, another service is dropped — and a `policy rm` on a
//! reaches b when it starts again. Real etcd (3 members, mutual TLS), real
//! controllers, real containers and packets on this host's engine.
//!
//! Both nodes share this host's engine and firewall here: they compute the
//! same rules from the same policies and containers, so they agree on the
//! table; three nodes on three engines are still to come (docs/cluster.md).

use seg_e2e::*;
use std::process::Command;
use std::time::Duration;

const A: &str = "127.0.0.1:27453";
const B: &str = "127.0.0.1:27454";

const POLICY: &str = "version: 1
project: segclu
services:
  server: { ingress: [{ from: [client], ports: [7000/tcp] }] }
  client: {}
  other: {}
";

fn segctl(args: &[&str]) -> Out {
    run(Command::new(segctl_bin()).args(args), Duration::from_secs(60))
}

/// `cluster init` (no token) or `cluster join TOKEN` of `ctl`'s state directory; the output.
fn member(etcd: &EtcdCluster, ctl: &Controller, token: Option<&str>, name: &str, at: &str) -> String {
    let mut args: Vec<String> = match token {
        None => [vec!["cluster".into(), "init".into()], etcd.init_flags()].concat(),
        Some(token) => {
            let join = ["cluster", "join", token, "--server", "https://127.0.0.1:27453"];
            [join.map(String::from).to_vec(), etcd.client_cert_flags()].concat()
        }
    };
    let state = ctl.state_dir.to_str().unwrap();
    args.extend(
        ["--state-dir", state, "--node-name", name, "--listen", at, "--advertise", at].map(String::from),
    );
    let out = segctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.success(), "segctl {}: {}", args[1], out.text());
    out.stdout_str()
}

/// A container of `service` in project `segclu` on its default network.
fn service(service: &str, cmd: &[&str]) -> Container {
    let mut args = vec![
        "--network",
        "segclu_default",
        "--label",
        "com.docker.compose.project=segclu",
        "--label",
        service_label(service),
        BUSYBOX_IMAGE,
    ];
    args.extend_from_slice(cmd);
    Container::run(&args)
}

fn service_label(service: &str) -> &'static str {
    Box::leak(format!("com.docker.compose.service={service}").into_boxed_str())
}

fn ip_of(c: &Container) -> String {
    docker_ok(&["inspect", "-f", "{{(index .NetworkSettings.Networks \"segclu_default\").IPAddress}}", &c.id])
}

/// Whether `from` gets the echo of `to`'s server on 7000 within 2 s.
fn reaches(from: &Container, to_ip: &str) -> bool {
    let script = format!("echo seg | nc -w 2 {to_ip} 7000");
    docker(&["exec", &from.id, "sh", "-c", &script]).stdout_str().contains("seg")
}

#[test]
fn a_policy_applied_on_one_node_is_enforced_by_another() {
    let _serial = begin();
    let etcd = EtcdCluster::start();
    let mut a = Controller::prepared(&[]);
    let token = member(&etcd, &a, None, "a", A)
        .split_whitespace()
        .find(|w| w.starts_with("SEGTKN-1-"))
        .expect("a token")
        .to_owned();
    a.start_again();
    let mut b = Controller::prepared(&[]);
    member(&etcd, &b, Some(&token), "b", B);
    b.start_again();

    docker(&["network", "rm", "segclu_default"]);
    docker_ok(&["network", "create", "--label", "seg.e2e=1", "segclu_default"]);
    let file = b.base_dir().join("segclu.yaml");
    std::fs::write(&file, POLICY).unwrap();
    b.segctl_ok(&["policy", "apply", "-f", file.to_str().unwrap()]);
    wait_until(Duration::from_secs(10), "node a to install the policy applied on b", || {
        a.segctl_ok(&["policy", "ls"]).contains("segclu").then_some(())
    });
    let graph = a.segctl_ok(&["policy", "graph", "-o", "dot", "--project", "segclu"]);
    assert!(graph.contains("\"segclu/client\" -> \"segclu/server\" [label=\"7000/tcp\"]"), "{graph}");
    let check =
        a.segctl(&["policy", "check", "--from", "segclu/other", "--to", "segclu/server", "--port", "7000"]);
    assert!(check.text().contains("DENY"), "{}", check.text());

    // b stops (its rules stay); what follows is a's doing.
    b.stop();
    let server = service("server", &["nc", "-ll", "-p", "7000", "-e", "cat"]);
    let ip = ip_of(&server);
    let client = service("client", &["sleep", "600"]);
    let other = service("other", &["sleep", "600"]);
    wait_until(Duration::from_secs(10), "the client reaches the server", || {
        reaches(&client, &ip).then_some(())
    });
    assert!(!reaches(&other, &ip), "another service of the project is dropped");

    // A policy removed on a is gone on b when it starts again.
    a.segctl_ok(&["policy", "rm", "segclu"]);
    b.start_again();
    wait_until(Duration::from_secs(10), "node b to drop the removed policy", || {
        (!b.segctl_ok(&["policy", "ls"]).contains("segclu")).then_some(())
    });
    assert!(reaches(&other, &ip), "no policy, no restriction");
    drop((server, client, other));
    docker(&["network", "rm", "segclu_default"]);
}
