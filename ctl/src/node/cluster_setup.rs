//! `segctl cluster init` and `segctl cluster join` (the controller's own
//! side of `segctl cluster`, like `node run`): they set this node up
//! as a member, on the state directory, while its controller is stopped
//! (the state directory's lock says whether one runs). `segctl node run`
//! then finds `<state-dir>/cluster/` and serves the cluster store.
//!
//! Order, so that a failure leaves nothing half-made: everything is made
//! in memory first (CA, KEK, this node's key and certificate), then the
//! cluster's records go to etcd in transactions that refuse a cluster that
//! exists already, then the files are written under a temporary name and
//! renamed into place in one step.

use crate::cluster::api::{self, JoinAnswer, JoinRequest, TokenAnswer};
use crate::cluster::ca::{fingerprint_of_pem, millis, request, ClusterCa, Role, Subject};
use crate::cluster::directory::{ClusterMeta, Directory, Member, TokenRecord};
use crate::cluster::files::{self, Bundle, ClusterConfig};
use crate::cluster::remote::Endpoint;
use crate::cluster::token::JoinToken;
use crate::cluster::{check_name, host_of, tls};
use crate::store::etcd::{EtcdConfig, EtcdStore};
use crate::store::{disk, envelope::Kek, EmbeddedStore, SecretStore};
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use clap::Args;
use seg_common::secret::SecretBytes;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// etcd members, comma-separated `https://HOST:PORT`.
    #[arg(long = "etcd", value_name = "URLS", value_delimiter = ',', required = true)]
    pub etcd: Vec<String>,
    /// PEM CA certificate of etcd's members (handed to the nodes that join).
    #[arg(long, value_name = "FILE")]
    pub etcd_ca: PathBuf,
    /// This node's etcd client certificate (with --etcd-key).
    #[arg(long, value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,
    /// Key prefix of the cluster in etcd.
    #[arg(long, default_value = "/seg", value_name = "PREFIX")]
    pub prefix: String,
    #[command(flatten)]
    pub node: NodeFlags,
    /// Lifetime of node certificates (renewed automatically at two thirds).
    #[arg(long, default_value = "24h", value_name = "DURATION", value_parser = parse_duration)]
    pub cert_ttl: Duration,
    /// How long the printed join token may be used.
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = parse_duration)]
    pub token_ttl: Duration,
    /// Move the secrets of this node's embedded store into the cluster
    /// (values are re-sealed under the cluster's KEK, never shown).
    #[arg(long)]
    pub import: bool,
}

#[derive(Debug, Clone, Args)]
pub struct JoinArgs {
    /// The token `segctl cluster token` (or `init`) printed.
    pub token: String,
    /// A node of the cluster that holds its CA (the URL the token was printed with).
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// This node's etcd client certificate (with --etcd-key).
    #[arg(long, value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,
    #[command(flatten)]
    pub node: NodeFlags,
}

#[derive(Debug, Clone, Args)]
pub struct NodeFlags {
    /// The controller's state directory.
    #[arg(long, default_value = "/var/lib/seg", value_name = "DIR")]
    pub state_dir: PathBuf,
    /// This node's name in the cluster [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Where this node's cluster endpoint listens.
    #[arg(long, default_value = "0.0.0.0:7443", value_name = "ADDR:PORT")]
    pub listen: String,
    /// How other nodes and admins reach it [default: this host's address
    /// on its default route, with the --listen port].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
}

/// What both commands check first.
struct Node {
    name: String,
    advertise: String,
    host: String,
    /// Held until the files are in place: no controller starts meanwhile.
    _lock: Option<std::fs::File>,
}

fn prepare(flags: &NodeFlags, lock: bool) -> Result<Node> {
    let name = match &flags.node_name {
        Some(n) => n.clone(),
        None => crate::cluster::default_name()?,
    };
    check_name(&name)?;
    let advertise = match &flags.advertise {
        Some(a) => a.clone(),
        None => default_advertise(&flags.listen)?,
    };
    let host = host_of(&advertise)?;
    if files::exists(&flags.state_dir) {
        return Err(crate::cluster::ClusterError::AlreadyMember { dir: files::dir(&flags.state_dir) }.into());
    }
    disk::ensure_private_dir(&flags.state_dir)?;
    let lock = match lock {
        true => Some(disk::lock_dir(&flags.state_dir).context("the controller must be stopped first")?),
        false => None,
    };
    Ok(Node { name, advertise, host, _lock: lock })
}

/// The host's address on its default route, with `listen`'s port.
fn default_advertise(listen: &str) -> Result<String> {
    let port = listen
        .rsplit_once(':')
        .map(|(_, p)| p)
        .ok_or_else(|| anyhow!("--listen {listen:?} is not ADDR:PORT"))?;
    let listen_host = host_of(listen)?;
    let unspecified = listen_host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified());
    if !unspecified {
        return Ok(listen.to_owned());
    }
    // Connecting a UDP socket sends nothing; it only picks the source address.
    let probe = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|()| s))
        .and_then(|s| s.local_addr())
        .context("finding this host's address (no default route?); give --advertise HOST:PORT")?;
    Ok(format!("{}:{port}", probe.ip()))
}

fn absolute(path: Option<&PathBuf>) -> Result<Option<PathBuf>> {
    path.map(|p| std::fs::canonicalize(p).with_context(|| format!("{}", p.display()))).transpose()
}

fn identity(cert: Option<&PathBuf>, key: Option<&PathBuf>) -> Result<Option<(PathBuf, PathBuf)>> {
    match (absolute(cert)?, absolute(key)?) {
        (Some(c), Some(k)) => Ok(Some((c, k))),
        (None, None) => Ok(None),
        _ => bail!("--etcd-cert and --etcd-key go together (mutual TLS needs both)"),
    }
}

/// `24h`, `90s`, `7d`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(raw)
        .map_err(|e| format!("{raw:?} is not a duration ({e}); use e.g. 90s, 24h, 7d"))?;
    if d < Duration::from_secs(1) {
        return Err(format!("{raw:?} is shorter than a second"));
    }
    Ok(d)
}

fn random_kek() -> SecretBytes {
    let mut kek = SecretBytes::zeroed(32);
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), kek.as_mut_bytes())
        .expect("the system RNG works");
    kek
}

/// What `init` makes in memory before anything is written.
struct FirstNode {
    ca: ClusterCa,
    kek: SecretBytes,
    node_key: SecretBytes,
    cert: crate::cluster::ca::Issued,
    config: ClusterConfig,
}

/// What `--import` brought along.
#[derive(Default)]
struct Imported {
    secrets: Vec<String>,
    policies: Vec<String>,
}

pub async fn init(args: InitArgs) -> Result<()> {
    if let Some(bad) = args.etcd.iter().find(|e| !e.starts_with("https://")) {
        bail!("--etcd: {bad:?} is not an https:// URL (seg talks to etcd over TLS only)");
    }
    let node = prepare(&args.node, !args.import)?;
    let etcd_ca = std::fs::read_to_string(&args.etcd_ca)
        .with_context(|| format!("reading --etcd-ca {}", args.etcd_ca.display()))?;
    let first = make_first_node(&args, &node)?;
    let now = millis(SystemTime::now());
    let meta = ClusterMeta {
        format: 1,
        ca_cert: first.ca.cert_pem().to_owned(),
        ca_fingerprint: first.ca.fingerprint().to_owned(),
        ca_url: first.config.ca_url.clone(),
        cert_ttl_ms: args.cert_ttl.as_millis() as u64,
        created_at_ms: now,
        created_on: node.name.clone(),
        kek_id: Kek::from_secret(&first.kek)?.id(),
    };
    let token = JoinToken::generate(first.ca.fingerprint());
    let expires_at_ms = now + args.token_ttl.as_millis() as u64;
    let imported = write_records(&args, &first, meta.clone(), &token, expires_at_ms).await?;
    let bundle = Bundle {
        config: first.config,
        ca_cert: first.ca.cert_pem().to_owned(),
        etcd_ca,
        node_cert: first.cert.pem.clone(),
        node_key: first.node_key,
        kek: first.kek,
        ca_key: Some(first.ca.key_pem()),
    };
    files::install(&args.node.state_dir, &bundle).context(
        "the cluster's records are in etcd but this node's files could not be written: remove them with \
         `etcdctl del --prefix <prefix>/cluster/` and run init again",
    )?;
    println!(
        "initialized cluster (CA {}…) with this node, {}, at {}.",
        &meta.ca_fingerprint[..16],
        node.name,
        meta.ca_url
    );
    if args.import {
        let (secrets, policies) = (imported.secrets.join(", "), imported.policies.join(", "));
        println!("imported {} secret(s) from the embedded store: {secrets}", imported.secrets.len());
        if !policies.is_empty() {
            println!("imported {policies}");
        }
    }
    println!("start the controller: segctl node run --state-dir {}\n", args.node.state_dir.display());
    let answer = TokenAnswer { token: token.reveal().to_string(), expires_at_ms, ca_url: meta.ca_url };
    println!("{}", answer.join_command());
    Ok(())
}

/// The CA, the KEK, this node's key and certificate, its configuration.
fn make_first_node(args: &InitArgs, node: &Node) -> Result<FirstNode> {
    let ca = ClusterCa::create(&node.name)?;
    let (node_key, csr) = request(&node.name)?;
    let subject = Subject { role: Role::Node, name: node.name.clone(), hosts: vec![node.host.clone()] };
    let cert = ca.issue(&csr, &subject, args.cert_ttl)?;
    let config = ClusterConfig {
        format: 1,
        node_name: node.name.clone(),
        etcd_endpoints: args.etcd.clone(),
        etcd_prefix: args.prefix.clone(),
        etcd_identity: identity(args.etcd_cert.as_ref(), args.etcd_key.as_ref())?,
        listen: args.node.listen.clone(),
        advertise: node.advertise.clone(),
        ca_url: format!("https://{}", node.advertise),
    };
    Ok(FirstNode { ca, kek: random_kek(), node_key, cert, config })
}

/// The cluster's metadata (refused if a cluster exists), this node's member
/// record and the first token into etcd; then, with `--import`, the
/// embedded store's secrets and the node's policies.
async fn write_records(
    args: &InitArgs,
    first: &FirstNode,
    meta: ClusterMeta,
    token: &JoinToken,
    expires_at_ms: u64,
) -> Result<Imported> {
    let member = Member {
        name: first.config.node_name.clone(),
        role: Role::Node,
        address: first.config.advertise.clone(),
        certs: vec![first.cert.clone()],
        joined_at_ms: meta.created_at_ms,
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let record =
        TokenRecord { expires_at_ms, created_at_ms: meta.created_at_ms, created_on: member.name.clone() };
    let cfg = EtcdConfig {
        endpoints: args.etcd.clone(),
        ca: args.etcd_ca.clone(),
        identity: first.config.etcd_identity.clone(),
        prefix: args.prefix.clone(),
        kek: Kek::from_secret(&first.kek)?,
        timeout: Duration::from_secs(5),
    };
    let (state_dir, import, token) = (args.node.state_dir.clone(), args.import, token.reveal());
    tokio::task::spawn_blocking(move || -> Result<Imported> {
        let store = std::sync::Arc::new(open_fresh(cfg)?);
        let dir = Directory { kv: store.as_ref() };
        dir.create(&meta)?;
        dir.add_member(&member)?;
        dir.add_token(&JoinToken::parse(&token)?, &record)?;
        if !import {
            return Ok(Imported::default());
        }
        let secrets = import_embedded(&state_dir, &store)?;
        Ok(Imported { secrets, policies: import_policies(&state_dir, store)? })
    })
    .await?
}

/// The cluster store under a prefix no cluster (or hand-set node) uses yet.
fn open_fresh(cfg: EtcdConfig) -> Result<EtcdStore> {
    let prefix = cfg.prefix.clone();
    EtcdStore::open(cfg).map_err(|e| match e {
        // Loading found secrets sealed under another KEK: the prefix is taken.
        crate::store::StoreError::Corrupt { ref reason, .. } if reason.contains("key-encryption key") => anyhow!(
            "this etcd prefix is in use: a seg cluster (or nodes set up by hand with --kek-file) already keeps \
             secrets under {prefix}, sealed under another KEK; join it with a token (`segctl cluster token` on \
             one of its nodes), or give another --prefix"
        ),
        e => e.into(),
    })
}

/// Puts the current version of every secret of the embedded store into the
/// cluster store with its lease, grants and hooks (values stay in locked
/// memory). A secret the cluster has already is left alone and named.
fn import_embedded(state_dir: &Path, cluster: &EtcdStore) -> Result<Vec<String>> {
    let local = EmbeddedStore::open(state_dir)
        .context("opening the embedded store to import (is the controller stopped?)")?;
    let mut done = Vec::new();
    for meta in SecretStore::list(&local)? {
        if SecretStore::meta(cluster, &meta.name).is_ok() {
            eprintln!("segctl: not importing {}: the cluster has a secret of that name", meta.name);
            continue;
        }
        let current = SecretStore::get(&local, &meta.name)?;
        SecretStore::put(cluster, &meta.name, &current.value, Some(meta.ttl_ms))?;
        for grant in &meta.grants {
            cluster.grant(&meta.name, grant)?;
        }
        cluster.set_hooks(&meta.name, &meta.hooks)?;
        done.push(meta.name.to_string());
    }
    Ok(done)
}

/// The network policies and the ICC setting of this node's state
/// directory, into the cluster's (which every node then enforces).
fn import_policies(state_dir: &Path, cluster: std::sync::Arc<EtcdStore>) -> Result<Vec<String>> {
    use crate::segregation::store::Store;
    let local = Store::open(state_dir)?;
    let shared = Store::cluster(cluster);
    let mut done = Vec::new();
    for (record, _) in local.load_all()? {
        shared.save(&record)?;
        done.push(format!("policy {}", record.name));
    }
    if !local.load_icc()? {
        shared.save_icc(false)?;
        done.push("ICC off on docker0".into());
    }
    Ok(done)
}

pub async fn join(args: JoinArgs) -> Result<()> {
    let token = JoinToken::parse(&args.token)?;
    let server = Endpoint::parse(&args.server)?;
    let etcd_identity = identity(args.etcd_cert.as_ref(), args.etcd_key.as_ref())?;
    let node = prepare(&args.node, true)?;
    let (node_key, csr) = request(&node.name)?;
    let body = JoinRequest {
        token: token.reveal().to_string(),
        name: node.name.clone(),
        advertise: node.advertise.clone(),
        csr,
    };
    let answer: JoinAnswer = server.call(tls::pinned(token.fingerprint())?, "POST", api::JOIN, &body).await?;
    if fingerprint_of_pem(&answer.ca_cert)? != token.fingerprint() {
        bail!("{} answered with a CA that is not the token's; nothing was written", server.url);
    }
    let raw = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(&answer.kek_b64)
            .map_err(|_| anyhow!("{} sent a malformed KEK", server.url))?,
    );
    let kek = SecretBytes::from_slice(&raw);
    Kek::from_secret(&kek).map_err(|e| anyhow!("{} sent an unusable KEK: {e}", server.url))?;
    let bundle = Bundle {
        config: ClusterConfig {
            format: 1,
            node_name: node.name.clone(),
            etcd_endpoints: answer.etcd_endpoints.clone(),
            etcd_prefix: answer.etcd_prefix.clone(),
            etcd_identity,
            listen: args.node.listen.clone(),
            advertise: node.advertise.clone(),
            ca_url: answer.ca_url.clone(),
        },
        ca_cert: answer.ca_cert.clone(),
        etcd_ca: answer.etcd_ca.clone(),
        node_cert: answer.cert.pem.clone(),
        node_key,
        kek,
        ca_key: None,
    };
    files::install(&args.node.state_dir, &bundle).context(
        "this node joined but its files could not be written: remove it (`segctl cluster remove`) and join again",
    )?;
    println!(
        "joined the cluster as {} (certificate valid until {}, renewed automatically).\n\
         start the controller: segctl node run --state-dir {}",
        node.name,
        crate::timefmt::rfc3339_ms(answer.cert.not_after_ms),
        args.node.state_dir.display()
    );
    Ok(())
}
