//! Cluster membership with a real 3-member etcd (mutual TLS) and real
//! controllers: `cluster init --import` of an embedded store, join tokens
//! (used, expired, impostor server), the endpoint's mutual TLS (no
//! certificate, a node's certificate, an admin's), remote administration
//! with `segctl --server`, automatic renewal of short-lived certificates,
//! and removal: the removed node's certificate refused at once, the node
//! stopping itself and refusing to start again. Nothing of the KEK, the CA
//! key or a token's secret is in etcd.
//!
//! Both nodes share this host's Docker engine and enforce no policy, as in
//! `cluster_push.rs`.

use seg_e2e::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const A: &str = "127.0.0.1:27443";
const B: &str = "127.0.0.1:27444";

fn segctl(args: &[&str]) -> Out {
    run(Command::new(segctl_bin()).args(args), Duration::from_secs(60))
}

fn token_in(text: &str) -> String {
    text.split_whitespace()
        .find(|w| w.starts_with("SEGTKN-1-"))
        .expect("a join token in the output")
        .to_owned()
}

/// `curl` to an endpoint with the cluster CA and, optionally, a client certificate.
fn curl(ca: &Path, cert: Option<&Path>, url: &str) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "5", "--cacert"]).arg(ca);
    if let Some(cert) = cert {
        cmd.arg("--cert").arg(cert).arg("--key").arg(cert);
    }
    run(cmd.arg(url), Duration::from_secs(10)).stdout_str()
}

fn join(etcd: &EtcdCluster, ctl: &Controller, token: &str, name: &str, at: &str) -> Out {
    let server = format!("https://{A}");
    let mut args: Vec<String> = ["cluster", "join", token, "--server", &server].map(String::from).to_vec();
    args.extend(etcd.client_cert_flags());
    let state = ctl.state_dir.to_str().unwrap();
    args.extend(
        ["--state-dir", state, "--node-name", name, "--listen", at, "--advertise", at].map(String::from),
    );
    segctl(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn nodes_join_with_a_token_are_administered_remotely_renew_and_are_removed() {
    let _serial = begin();
    let etcd = EtcdCluster::start();
    // An embedded store with a secret, then made the cluster's first node.
    let mut a = Controller::start();
    let legacy = random_text(24);
    let put = a.segctl_stdin(&["secret", "put", "legacy", "--from-stdin"], Some(&legacy));
    assert!(put.success(), "{}", put.text());
    a.segctl_ok(&["secret", "grant", "legacy", "--to", "shop/api"]);
    a.stop();
    let (ca, cert, key) = (etcd.tls("ca.crt"), etcd.tls("client.crt"), etcd.tls("client.key"));
    let state = a.state_dir.to_str().unwrap().to_owned();
    let mut init_args: Vec<String> = vec!["cluster".into(), "init".into()];
    init_args.extend(etcd.init_flags());
    init_args.extend(
        [
            "--state-dir",
            &state,
            "--node-name",
            "a",
            "--listen",
            A,
            "--advertise",
            A,
            "--cert-ttl",
            "9s",
            "--import",
        ]
        .map(String::from),
    );
    let init = segctl(&init_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(init.success(), "cluster init: {}", init.text());
    assert!(
        init.stdout_str().contains("imported 1 secret(s) from the embedded store: legacy"),
        "{}",
        init.text()
    );
    let token = token_in(&init.stdout_str());
    a.start_again();
    assert!(a.segctl_ok(&["status"]).contains("node a at 127.0.0.1:27443, holds the CA"));
    let mut again_args = init_args[..2 + etcd.init_flags().len()].to_vec();
    again_args.extend(["--state-dir".to_owned(), "/tmp/seg-e2e-second-init".to_owned()]);
    let again = segctl(&again_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!again.success() && again.text().contains("join it with a token"), "{}", again.text());
    let _ = std::fs::remove_dir_all("/tmp/seg-e2e-second-init");

    // A token works once; an expired one and one for another CA are refused.
    let mut b = Controller::prepared(&[]);
    let joined = join(&etcd, &b, &token, "b", B);
    assert!(joined.success(), "cluster join: {}", joined.text());
    let c = Controller::prepared(&[]);
    let used = join(&etcd, &c, &token, "c", "127.0.0.1:27445");
    assert!(!used.success() && used.text().contains("used already"), "{}", used.text());
    let short = token_in(&a.segctl_ok(&["cluster", "token", "--ttl", "1s"]));
    std::thread::sleep(Duration::from_millis(1500));
    let expired = join(&etcd, &c, &short, "c", "127.0.0.1:27445");
    assert!(!expired.success() && expired.text().contains("expired"), "{}", expired.text());
    let forged = format!("SEGTKN-1-{}-{}", "ab".repeat(32), &short[short.len() - 32..]);
    let impostor = join(&etcd, &c, &forged, "c", "127.0.0.1:27445");
    assert!(
        !impostor.success() && impostor.text().contains("not of the cluster in the token"),
        "{}",
        impostor.text()
    );
    assert!(!c.state_dir.join("cluster").exists(), "a refused join writes nothing");
    b.start_again();
    // The imported secret, served by the node that joined.
    assert_eq!(b.segctl(&["secret", "get", "legacy"]).stdout, legacy);
    assert!(b.segctl_ok(&["secret", "ls"]).contains("shop/api"), "grants came along");

    // The endpoint: no certificate, a node's, then an admin's through `--server`.
    let cluster_ca = a.state_dir.join("cluster/ca.crt");
    let b_node = b.state_dir.join("cluster/node.pem");
    assert!(curl(&cluster_ca, None, &format!("https://{B}/v1/status")).contains("\"no_certificate\""));
    assert!(
        curl(&cluster_ca, Some(&b_node), &format!("https://{A}/v1/status")).contains("\"node_certificate\"")
    );
    let admin_dir = a.base_dir().join("admin");
    a.segctl_ok(&["cluster", "admin-cert", "--out", admin_dir.to_str().unwrap(), "--name", "ops"]);
    let remote = |url: &str, args: &[&str]| {
        let mut all = vec!["--server", url, "--admin-dir", admin_dir.to_str().unwrap()];
        all.extend_from_slice(args);
        segctl(&all)
    };
    let put = remote(&format!("https://{B}"), &["secret", "put", "remote-made", "--generate", "16"]);
    assert!(put.success(), "{}", put.text());
    assert!(a.segctl_ok(&["secret", "ls"]).contains("remote-made"));
    let no_dir = segctl(&["--server", &format!("https://{B}"), "secret", "ls"]);
    assert!(!no_dir.success() && no_dir.text().contains("--server needs --admin-dir"), "{}", no_dir.text());

    // Renewal: 9 s certificates are renewed at 6 s, on both nodes.
    let serials = |ctl: &Controller| -> Vec<u64> {
        let list: serde_json::Value =
            serde_json::from_str(&ctl.segctl_ok(&["cluster", "ls", "-o", "json"])).unwrap();
        list["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["role"] == "node")
            .map(|n| n["cert_expires_at_ms"].as_u64().unwrap())
            .collect()
    };
    let before = serials(&a);
    wait_until(Duration::from_secs(20), "both node certificates renewed", || {
        let now = serials(&a);
        (now.len() == 2 && now.iter().zip(&before).all(|(n, b)| n > b)).then_some(())
    });
    let after = remote(&format!("https://{B}"), &["status"]);
    assert!(
        after.success() && after.stdout_str().contains("node b"),
        "b's renewed certificate serves: {}",
        after.text()
    );

    // Removal: refused at once everywhere, and b stops itself.
    let b_node_pem = std::fs::read(&b_node).unwrap();
    let removed_at = Instant::now();
    a.segctl_ok(&["cluster", "remove", "b"]);
    let kept = a.base_dir().join("b-node.pem");
    write_private(&kept, &b_node_pem);
    wait_until(Duration::from_secs(5), "b's certificate refused by a", || {
        curl(&cluster_ca, Some(&kept), &format!("https://{A}/v1/status"))
            .contains("\"revoked\"")
            .then_some(())
    });
    let refused_after = removed_at.elapsed();
    assert!(refused_after < Duration::from_secs(1), "refused after {refused_after:?}");
    let exit = b.wait_exit(Duration::from_secs(5));
    eprintln!("removal: refused by a after {refused_after:?}, b stopped after {:?}", removed_at.elapsed());
    assert!(exit.is_some(), "b stops itself once removed:\n{}", b.log_tail(10));
    let restart = run(
        Command::new(segctl_bin())
            .args(["node", "run", "--state-dir"])
            .arg(&b.state_dir)
            .arg("--run-dir")
            .arg(&b.run_dir),
        Duration::from_secs(30),
    );
    assert!(
        !restart.success() && restart.text().contains("was removed from the cluster"),
        "{}",
        restart.text()
    );

    // etcd holds no key material and no token secret.
    let dump = run(
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", etcd.endpoints()])
            .arg("--cacert")
            .arg(&ca)
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args(["get", "--prefix", "/seg"]),
        Duration::from_secs(30),
    );
    assert!(dump.success(), "{}", dump.text());
    let kek = std::fs::read(a.state_dir.join("cluster/kek")).unwrap();
    let text = dump.stdout_str();
    assert!(text.contains("/seg/cluster/members/a") && !text.contains("PRIVATE KEY"), "{text}");
    assert!(!dump.stdout.windows(kek.len()).any(|w| w == kek.as_slice()), "the KEK is not in etcd");
    assert!(
        !text.contains(&token[token.len() - 32..]) && !text.contains(&short[short.len() - 32..]),
        "no token secret"
    );
    assert!(!dump.stdout.windows(legacy.len()).any(|w| w == legacy.as_slice()), "no secret value");
}
