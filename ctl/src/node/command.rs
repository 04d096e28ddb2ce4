//! `segctl node run`: flags, logging set-up, then [`super::run`]. The
//! controller's own command line lives with the controller, so the admin
//! CLI (`crate::cli`) stays a pure client of the admin API.

use super::NodeOptions;
use crate::node;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Clone, Subcommand)]
pub enum NodeCmd {
    /// Run the node controller in the foreground (as root).
    Run(RunArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// State directory: master key, sealed secrets, access log (made 0700).
    #[arg(long, default_value = "/var/lib/seg", value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Run directory: admin.sock and agent/agent.sock (made 0755).
    #[arg(long, env = "SEG_RUN_DIR", default_value = "/run/seg", value_name = "DIR")]
    pub run_dir: PathBuf,
    /// The Docker Engine API socket.
    #[arg(long, default_value = "/var/run/docker.sock", value_name = "PATH")]
    pub docker_socket: PathBuf,
    /// Access log file [default: <state-dir>/access.log].
    #[arg(long, value_name = "PATH")]
    pub access_log: Option<PathBuf>,
    /// Rotate the access log before it would grow past SIZE (e.g. 64MiB,
    /// 500KiB, 1GB; 0 = never rotate): it becomes access.log.1, older ones shift.
    #[arg(long, default_value = "64MiB", value_name = "SIZE", value_parser = parse_size)]
    pub access_log_max_size: u64,
    /// Rotated access logs kept (access.log.1 … access.log.N); 0 keeps none.
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub access_log_keep: u32,
    /// Log filter: error, warn, info, debug, trace, or directives like
    /// `segctl=debug` (debug includes each access-log line).
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    pub log_level: String,
    /// Log lines as `text` (for people) or `json` (one object per line,
    /// for log shippers).
    #[arg(long, default_value = "text", value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Watch streams one container may hold open at once.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_watches_per_container: u32,
    /// Watch streams open at once, in total.
    #[arg(long, default_value_t = 4096, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_watches: u32,
    /// Agent-socket connections one container may hold open at once.
    #[arg(long, default_value_t = crate::node::server::DEFAULT_CONNS_PER_CONTAINER as u32, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_conns_per_container: u32,
    /// How often the live firewall rules are re-read and repaired (e.g. 30s, 1s).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_interval)]
    pub resync_interval: std::time::Duration,
    /// Firewall backend: auto (nftables when `nft` and the kernel support
    /// it, else iptables), nftables or iptables.
    #[arg(long, default_value = "auto", value_name = "BACKEND")]
    pub firewall: crate::firewall::select::Choice,
    /// Secret store: embedded (sealed files in the state directory, one
    /// host) or etcd (the cluster store shared by every node; needs
    /// --etcd-endpoints, --etcd-ca and --kek-file).
    /// [default: etcd when this node is in a cluster (`<state-dir>/cluster/`,
    /// made by `segctl cluster init/join`), else embedded]
    #[arg(long, value_name = "STORE", value_parser = ["embedded", "etcd"])]
    pub store: Option<String>,
    /// etcd members, comma-separated `https://HOST:PORT` (--store etcd).
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// PEM CA certificate that signed the etcd members' certificates.
    #[arg(long, value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// PEM client certificate for etcd's mutual TLS (with --etcd-key).
    #[arg(long, value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,
    /// PEM client key (mode 0600) for etcd's mutual TLS (with --etcd-cert).
    #[arg(long, value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,
    /// Key prefix of this seg cluster in etcd.
    #[arg(long, default_value = "/seg", value_name = "PREFIX")]
    pub etcd_prefix: String,
    /// The cluster's key-encryption key: 32 bytes, mode 0600, the same file
    /// on every node (--store etcd).
    #[arg(long, value_name = "FILE")]
    pub kek_file: Option<PathBuf>,
    /// This node's name in the cluster, unique among its nodes [default:
    /// the host name] (--store etcd).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Where the cluster endpoint (joins, renewals, `segctl --server`)
    /// listens [default: what `cluster init/join --listen` said].
    #[arg(long, value_name = "ADDR:PORT")]
    pub cluster_listen: Option<String>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (off by
    /// default; e.g. 127.0.0.1:9476). Plain HTTP: keep it on loopback or a
    /// monitoring network.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<String>,
}

/// The store the flags choose, or what is missing or contradictory.
fn store_choice(args: &RunArgs) -> Result<node::store_choice::StoreChoice> {
    use node::store_choice::{EtcdSettings, StoreChoice};
    let etcd_flags = !args.etcd_endpoints.is_empty()
        || args.etcd_ca.is_some()
        || args.etcd_cert.is_some()
        || args.etcd_key.is_some()
        || args.kek_file.is_some()
        || args.node_name.is_some();
    let in_cluster = crate::cluster::files::exists(&args.state_dir);
    let store = match args.store.as_deref() {
        Some(store) => store,
        None if in_cluster && !etcd_flags => return cluster_choice(args),
        None => "embedded",
    };
    if store == "embedded" {
        if in_cluster {
            tracing::warn!(
                "--store embedded: this node is in a cluster ({}) but serves its own embedded store",
                crate::cluster::files::dir(&args.state_dir).display()
            );
        }
        if etcd_flags {
            anyhow::bail!(
                "--etcd-*, --kek-file and --node-name need --store etcd (the embedded store is in use without it)"
            );
        }
        return Ok(StoreChoice::Embedded);
    }
    let missing: Vec<&str> = [
        (args.etcd_endpoints.is_empty(), "--etcd-endpoints"),
        (args.etcd_ca.is_none(), "--etcd-ca"),
        (args.kek_file.is_none(), "--kek-file"),
    ]
    .into_iter()
    .filter_map(|(absent, flag)| absent.then_some(flag))
    .collect();
    if !missing.is_empty() {
        anyhow::bail!("--store etcd needs {}", missing.join(", "));
    }
    if let Some(bad) = args.etcd_endpoints.iter().find(|e| !e.starts_with("https://")) {
        anyhow::bail!("--etcd-endpoints: {bad:?} is not an https:// URL (seg talks to etcd over TLS only)");
    }
    let identity = match (&args.etcd_cert, &args.etcd_key) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (None, None) => None,
        _ => anyhow::bail!("--etcd-cert and --etcd-key go together (mutual TLS needs both)"),
    };
    Ok(StoreChoice::Etcd(EtcdSettings {
        endpoints: args.etcd_endpoints.clone(),
        ca: args.etcd_ca.clone().expect("checked above"),
        identity,
        prefix: args.etcd_prefix.clone(),
        kek_file: args.kek_file.clone().expect("checked above"),
        node_name: node_name(args.node_name.as_deref())?,
    }))
}

/// The store of this node's cluster, as `cluster init/join` wrote it down.
fn cluster_choice(args: &RunArgs) -> Result<node::store_choice::StoreChoice> {
    use crate::cluster::files;
    let config = files::load_config(&args.state_dir)?;
    Ok(node::store_choice::StoreChoice::Etcd(node::store_choice::EtcdSettings {
        endpoints: config.etcd_endpoints,
        ca: files::etcd_ca_path(&args.state_dir),
        identity: config.etcd_identity,
        prefix: config.etcd_prefix,
        kek_file: files::kek_path(&args.state_dir),
        node_name: config.node_name,
    }))
}

/// `--node-name`, or the host name: a DNS label's characters, so that it
/// is also an etcd key segment and a table cell.
fn node_name(given: Option<&str>) -> Result<String> {
    let name = match given {
        Some(n) => n.to_owned(),
        None => crate::cluster::default_name()?,
    };
    crate::cluster::check_name(&name)?;
    Ok(name)
}

/// `64MiB`, `500 KiB`, `1GB`, `4096` (bytes), `0`.
fn parse_size(raw: &str) -> Result<u64, String> {
    raw.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| format!("{raw:?} is not a size; use e.g. 64MiB, 500KiB, 1GB, 4096 or 0"))
}

fn parse_interval(raw: &str) -> Result<std::time::Duration, String> {
    let every = humantime::parse_duration(raw)
        .map_err(|e| format!("{raw:?} is not a duration ({e}); use e.g. 500ms, 30s, 5m"))?;
    if every < std::time::Duration::from_millis(100) {
        return Err("--resync-interval must be at least 100ms".into());
    }
    Ok(every)
}

pub async fn run(cmd: NodeCmd) -> Result<()> {
    match cmd {
        NodeCmd::Run(args) => run_node(args).await,
    }
}

async fn run_node(args: RunArgs) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level).with_context(|| {
        format!("--log-level {:?} is not a valid filter; use e.g. info or debug", args.log_level)
    })?;
    // Logs go to stderr; a second init (tests) is harmless.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match args.log_format.as_str() {
        "json" => logs.json().flatten_event(true).try_init(),
        _ => logs.with_ansi(ansi).try_init(),
    };
    let store = store_choice(&args)?;
    let opts = NodeOptions {
        store,
        state_dir: args.state_dir,
        run_dir: args.run_dir,
        docker_socket: args.docker_socket,
        access_log: args.access_log,
        access_log_options: node::access_log::Options {
            rotation: node::access_log::sink::Rotation {
                max_size: args.access_log_max_size,
                keep: args.access_log_keep,
            },
            ..Default::default()
        },
        watch_limits: node::watch::WatchLimits {
            per_container: args.max_watches_per_container as usize,
            total: args.max_watches as usize,
            ..Default::default()
        },
        conns_per_container: args.max_conns_per_container as usize,
        resync_interval: args.resync_interval,
        firewall: args.firewall,
        cluster_listen: args.cluster_listen,
        metrics_addr: args.metrics_addr,
    };
    node::run(opts).await.context("cannot start the seg controller")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("500 KiB"), Ok(500 << 10));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
        let err = parse_size("lots").unwrap_err();
        assert!(err.contains("\"lots\" is not a size"), "{err}");
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn flags_default_and_parse() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let d = Cli::parse_from(["x"]).run;
        assert_eq!((d.access_log_max_size, d.access_log_keep), (64 << 20, 5));
        let a = Cli::parse_from(["x", "--access-log-max-size", "2KiB", "--access-log-keep", "0"]).run;
        assert_eq!((a.access_log_max_size, a.access_log_keep), (2048, 0));
        assert!(Cli::try_parse_from(["x", "--access-log-max-size", "big"]).is_err());
    }

    fn choice(args: &[&str]) -> Result<node::store_choice::StoreChoice> {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        store_choice(&Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))?.run)
    }

    #[test]
    fn the_store_flags_say_what_is_missing_or_contradictory() {
        use node::store_choice::StoreChoice;
        assert!(matches!(choice(&[]).unwrap(), StoreChoice::Embedded));
        let err = |args: &[&str]| choice(args).unwrap_err().to_string();
        assert_eq!(err(&["--store", "etcd"]), "--store etcd needs --etcd-endpoints, --etcd-ca, --kek-file");
        assert!(err(&["--kek-file", "k"]).contains("need --store etcd"));
        let base = ["--store", "etcd", "--etcd-ca", "ca.pem", "--kek-file", "kek"];
        fn with<'a>(base: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
            [base, more].concat()
        }
        assert!(err(&with(&base, &["--etcd-endpoints", "http://a:2379"])).contains("is not an https:// URL"));
        assert!(err(&with(&base, &["--etcd-endpoints", "https://a:2379", "--etcd-cert", "c"]))
            .contains("go together"));
        let ok = choice(&with(
            &base,
            &["--etcd-endpoints", "https://a:1,https://b:2", "--etcd-cert", "c", "--etcd-key", "k"],
        ));
        let Ok(StoreChoice::Etcd(s)) = ok else { panic!("{ok:?}") };
        assert_eq!(s.endpoints, ["https://a:1", "https://b:2"]);
        assert_eq!((s.prefix.as_str(), s.identity.is_some()), ("/seg", true));
        assert!(!s.node_name.is_empty(), "the host name by default");
        let named = choice(&with(&base, &["--etcd-endpoints", "https://a:1", "--node-name", "n/1"]));
        assert!(named.unwrap_err().to_string().contains("node name \"n/1\" is not usable"));
    }
}
