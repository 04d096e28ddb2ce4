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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
    let opts = NodeOptions {
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
}
