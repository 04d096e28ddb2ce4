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
    /// Run directory of the controller (holds admin.sock); same as the
    /// command's own --run-dir or SEG_RUN_DIR. Default /run/seg.
    #[arg(long = "run-dir", value_name = "DIR")]
    top_run_dir: Option<std::ffi::OsString>,
    #[command(subcommand)]
    command: Command,
}

/// Parses the command line. A `--run-dir` given before the command group is
/// handed to every group through `SEG_RUN_DIR` (each group's own flag reads
/// it), then the line is parsed again so the groups see it as their default.
fn parse_cli() -> Cli {
    let first = Cli::parse();
    match &first.top_run_dir {
        Some(dir) => {
            // Still single-threaded: no other thread can be reading the environment.
            std::env::set_var("SEG_RUN_DIR", dir);
            Cli::parse()
        }
        None => first,
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The node controller.
    #[command(subcommand)]
    Node(segctl::node::command::NodeCmd),
    /// Show whether the controller runs and what it sees.
    Status(cli::status::StatusArgs),
    /// Manage secrets: put, ls, get, rm, grant, revoke, ttl, rotate, status, hook.
    Secret(cli::secret::SecretArgs),
    /// Check this Docker host's security (CIS Docker Benchmark + seg's own); --fix what seg owns.
    Audit(segctl::audit::AuditArgs),
    /// Network policies: apply, ls, show, rm, diff, lint, check, verify.
    Policy(cli::policy::PolicyArgs),
    /// Docker networks for segregation: create, ls, rm (straight to Docker).
    Net(cli::net::NetArgs),
    /// Inter-container traffic on docker0: status, disable, enable.
    Icc(cli::icc::IccArgs),
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Node(cmd) => segctl::node::command::run(cmd).await,
        Command::Status(args) => cli::status::run(args).await,
        Command::Secret(args) => cli::secret::run(args).await,
        Command::Audit(args) => segctl::audit::run(args).await,
        Command::Policy(args) => cli::policy::run(args).await,
        Command::Net(args) => cli::net::run(args).await,
        Command::Icc(args) => cli::icc::run(args).await,
    }
}

fn main() -> ExitCode {
    // Usage errors exit 2 here, before anything else happens.
    let cli = parse_cli();
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
