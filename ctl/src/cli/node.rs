//! `segctl node run`: flags, logging set-up, then [`crate::node::run`].

use crate::node::{self, NodeOptions};
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
    /// Log filter: error, warn, info, debug, trace, or directives like
    /// `segctl=debug` (debug includes each access-log line).
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    pub log_level: String,
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
    };
    node::run(opts).await.context("cannot start the seg controller")
}
