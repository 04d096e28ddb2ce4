//! A real 3-member etcd cluster with mutual TLS on loopback, started by
//! `scripts/etcd` (fixed ports 23790-23795: one at a time, which the e2e
//! lock already ensures) and stopped on drop, also when the test fails.

use crate::workspace_root;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct EtcdCluster {
    dir: tempfile::TempDir,
    endpoints: String,
}

fn etcd_script(args: &[&str]) -> String {
    let script = workspace_root().join("scripts/etcd");
    let out = Command::new(&script).args(args).output().expect("running scripts/etcd");
    assert!(
        out.status.success(),
        "scripts/etcd {args:?} failed (run scripts/setup to install etcd): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

impl EtcdCluster {
    pub fn start() -> EtcdCluster {
        let dir = tempfile::Builder::new().prefix("seg-e2e-etcd-").tempdir().expect("temp dir");
        let env = etcd_script(&["start", dir.path().to_str().expect("utf-8 path")]);
        let endpoints = env
            .lines()
            .find_map(|l| l.strip_prefix("SEG_ETCD_ENDPOINTS="))
            .expect("scripts/etcd prints SEG_ETCD_ENDPOINTS")
            .to_owned();
        EtcdCluster { dir, endpoints }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `https://…` of each member, comma-separated.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// A file of the test cluster's TLS material: `ca.crt`, `client.crt`, `client.key`.
    pub fn tls(&self, file: &str) -> PathBuf {
        self.dir.path().join("tls").join(file)
    }

    /// `--etcd-cert FILE --etcd-key FILE`: a node's client certificate
    /// (`cluster init` and `cluster join` take it).
    pub fn client_cert_flags(&self) -> Vec<String> {
        let path = |f: &str| self.tls(f).to_str().expect("utf-8 path").to_owned();
        vec!["--etcd-cert".into(), path("client.crt"), "--etcd-key".into(), path("client.key")]
    }

    /// `segctl cluster init`'s etcd flags for this cluster.
    pub fn init_flags(&self) -> Vec<String> {
        let ca = self.tls("ca.crt").to_str().expect("utf-8 path").to_owned();
        let mut flags = vec!["--etcd".into(), self.endpoints.clone(), "--etcd-ca".into(), ca];
        flags.extend(self.client_cert_flags());
        flags
    }

    /// The `segctl node run` flags of a node on this cluster with the KEK
    /// in `kek_file`.
    pub fn node_flags(&self, kek_file: &Path) -> Vec<String> {
        let path = |p: PathBuf| p.to_str().expect("utf-8 path").to_owned();
        vec![
            "--store".into(),
            "etcd".into(),
            "--etcd-endpoints".into(),
            self.endpoints.clone(),
            "--etcd-ca".into(),
            path(self.tls("ca.crt")),
            "--etcd-cert".into(),
            path(self.tls("client.crt")),
            "--etcd-key".into(),
            path(self.tls("client.key")),
            "--kek-file".into(),
            path(kek_file.to_owned()),
        ]
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        let _ = Command::new(workspace_root().join("scripts/etcd"))
            .args(["stop", self.dir.path().to_str().unwrap_or_default()])
            .status();
    }
}
