//! `segctl`: the seg node controller (`segctl node run`) and its admin
//! commands. Exit status: 0 success, 1 error, 2 usage error (from clap).
//!
//! Adding a command group (policy, net, icc, audit land later) is one
//! variant in [`Command`] plus one arm in [`dispatch`]; the group's clap
//! type and `run` live in its own module.

use clap::{Parser, Subcommand};
use segctl::cli;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "segctl",
    version,
    about = "seg: secrets for containers by attestation, and a per-service container firewall",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The node controller.
    #[command(subcommand)]
    Node(cli::node::NodeCmd),
    /// Show whether the controller runs and what it sees.
    Status(cli::status::StatusArgs),
    /// Manage secrets: put, ls, get, rm, grant, revoke, ttl.
    Secret(cli::secret::SecretArgs),
    // Reserved for the groups that land later, one variant each:
    // Policy(cli::policy::PolicyArgs), Net(cli::net::NetArgs),
    // Icc(cli::icc::IccArgs), Audit(cli::audit::AuditArgs).
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Node(cmd) => cli::node::run(cmd).await,
        Command::Status(args) => cli::status::run(args).await,
        Command::Secret(args) => cli::secret::run(args).await,
    }
}

fn main() -> ExitCode {
    // Usage errors exit 2 here, before anything else happens.
    let cli = Cli::parse();
    // No core dumps or ptrace of a process that may hold secret values.
    if let Err(err) = seg_common::sys::harden_process() {
        eprintln!("segctl: error: cannot harden the process (core dumps, ptrace): {err}");
        return ExitCode::FAILURE;
    }
    let runtime = match &cli.command {
        // The controller serves many connections; a command makes one call.
        Command::Node(_) => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_current_thread().enable_all().build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("segctl: error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("segctl: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
