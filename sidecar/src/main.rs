//! `seg-sidecar`: keeps the secrets granted to its container in a tmpfs
//! shared with the app, under leases from the seg node controller.

mod acks;
mod agent;
mod config;
#[cfg(test)]
mod fakes;
mod health;
mod lease;
mod notify;
mod probe;
mod retry;
mod run;
mod supervise;
mod watch;
mod writer;

use anyhow::Context;
use clap::Parser;
use config::{Cli, Command, RunArgs};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

fn main() -> ExitCode {
    run::mark_start();
    // Before anything can hold a secret: no core dumps, no ptrace-style
    // reads of our memory by other processes of the same uid.
    let hardened = seg_common::sys::harden_process();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Health) => health_command(&cli.health_socket),
        Some(Command::Watch(args)) => watch_command(args),
        Some(Command::Run(ref args)) => run_command(args, hardened, &cli.health_socket),
        None => run_command(&cli.run, hardened, &cli.health_socket),
    }
}

fn health_command(socket: &str) -> ExitCode {
    match health::query(socket, Duration::from_secs(3)) {
        Ok((healthy, line)) => {
            println!("{line}");
            if healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            println!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn watch_command(args: config::WatchArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build();
    let result = runtime.map_err(anyhow::Error::from).and_then(|rt| rt.block_on(probe::run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seg-sidecar watch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_command(args: &RunArgs, hardened: std::io::Result<()>, health_socket: &str) -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .with_max_level(args.log_level)
        .init();
    match start(args, hardened, health_socket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn start(args: &RunArgs, hardened: std::io::Result<()>, health_socket: &str) -> anyhow::Result<()> {
    hardened.context(
        "cannot harden the process (core dumps off, not dumpable); refusing to handle secrets without it",
    )?;
    let requested = args.requested();
    let sink = writer::TmpfsDir::open(&args.dir, args.dir_options())?;
    // Touch a locked buffer now so a missing RLIMIT_MEMLOCK shows at start.
    drop(seg_common::secret::SecretBytes::zeroed(1));
    run::warn_once_if_unlocked();
    tracing::info!(
        "seg-sidecar {} starting: agent {}, dir {}, secrets {}, mode {:04o}{}, push {}{}",
        env!("CARGO_PKG_VERSION"),
        args.agent_socket.display(),
        args.dir.display(),
        match &requested {
            Some(names) => names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(","),
            None => "all granted".to_owned(),
        },
        args.mode,
        args.owner.map(|o| format!(", owner {o}")).unwrap_or_default(),
        if args.watch { "on" } else { "off" },
        args.on_rotate().map(|o| format!(", on rotate {}", o.action)).unwrap_or_default(),
    );
    let push = supervise::Push { watch: args.watch, on_rotate: args.on_rotate() };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("cannot start the async runtime")?;
    let agent = agent::Agent::new(args.agent_socket.clone());
    runtime.block_on(serve(sink, agent, requested, push, health_socket))
}

async fn serve(
    sink: writer::TmpfsDir,
    agent: agent::Agent,
    requested: Option<Vec<seg_common::name::SecretName>>,
    push: supervise::Push,
    health_socket: &str,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let listener = health::bind(health_socket)?;
    let ctx = run::Ctx::new(sink, agent, requested.is_none());
    let status_ctx = Arc::clone(&ctx);
    let health_task = tokio::spawn(health::serve(listener, move || status_ctx.health_line()));
    let shutdown = async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!("{which} received: wiping secrets and exiting");
    };
    supervise::run(ctx, requested, push, shutdown).await;
    health_task.abort();
    tracing::info!("stopped");
    Ok(())
}
