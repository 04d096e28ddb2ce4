//! `segctl icc`: inter-container traffic on docker0. `disable` puts a rule
//! into the controller's ruleset (effective at once, no daemon restart,
//! kept across controller restarts); `--persist` also writes `"icc"` into
//! daemon.json for dockerd's next start. The controller reads and writes
//! daemon.json: `segctl` only asks.

use super::{AdminOpts, Output};
use crate::client::encode;
use anyhow::Result;
use clap::{Args, Subcommand};
use seg_common::api::policy::{DaemonJsonIcc, IccRequest, IccStatus, DEFAULT_DAEMON_JSON};
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct IccArgs {
    #[command(subcommand)]
    pub cmd: IccCmd,
    #[command(flatten)]
    pub admin: AdminOpts,
    /// The Docker daemon's config file (read by `status`, written with `--persist`).
    #[arg(long, global = true, default_value = DEFAULT_DAEMON_JSON, value_name = "PATH")]
    pub daemon_json: PathBuf,
}

#[derive(Debug, Clone, Subcommand)]
pub enum IccCmd {
    /// Show the controller's setting, the live rule, Docker's and daemon.json's.
    Status {
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Containers on docker0 reach each other only where a policy allows (at once).
    Disable {
        /// Also set `"icc": false` in daemon.json (other keys are kept).
        #[arg(long)]
        persist: bool,
    },
    /// Remove the controller's docker0 ICC rule.
    Enable {
        /// Also set `"icc": true` in daemon.json.
        #[arg(long)]
        persist: bool,
    },
}

pub async fn run(args: IccArgs) -> Result<()> {
    let client = args.admin.client();
    let path = args.daemon_json.display().to_string();
    let (enabled, persist) = match args.cmd {
        IccCmd::Status { output } => {
            let mut status: IccStatus = client.get(&format!("/v1/icc?daemon_json={}", encode(&path))).await?;
            let file = status.daemon_json_file.take().unwrap_or_else(|| unknown_file(&path));
            match output {
                Output::Json => {
                    let v = serde_json::json!({ "controller": status, "daemon_json": file });
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                Output::Table => print!("{}", render(&status, &file)),
            }
            return Ok(());
        }
        IccCmd::Disable { persist } => (false, persist),
        IccCmd::Enable { persist } => (true, persist),
    };
    let request = IccRequest { enabled, persist, daemon_json: Some(path) };
    let status: IccStatus = client.call("PUT", "/v1/icc", Some(&request)).await?;
    let word = if enabled { "enabled" } else { "disabled" };
    println!("ICC on docker0 {word} by the controller's rule (in force now)");
    if let Some(d) = status.daemon_json {
        println!("{d}");
    } else if let Some(DaemonJsonIcc { path, icc: Some(file), .. }) = status.daemon_json_file {
        if file != enabled {
            println!(
                "note: {path} says \"icc\": {file}, which dockerd applies at its next start (use --persist)"
            );
        }
    }
    Ok(())
}

/// A controller too old to read daemon.json for us.
fn unknown_file(path: &str) -> DaemonJsonIcc {
    let error = Some("the controller did not report it".to_owned());
    DaemonJsonIcc { path: path.to_owned(), icc: None, error }
}

pub fn render(s: &IccStatus, file: &DaemonJsonIcc) -> String {
    let onoff = |b: bool| if b { "on" } else { "off" };
    let controller = if s.enabled {
        "on (no seg rule)".to_string()
    } else {
        format!(
            "off (rule {})",
            if s.rule_live { "in force" } else { "NOT in the kernel: see the controller's log" }
        )
    };
    let docker = s.docker_bridge_icc.map_or("unknown".to_string(), |b| onoff(b).to_string());
    let said = match (&file.error, file.icc) {
        (Some(e), _) => format!("unreadable: {e}"),
        (None, Some(b)) => format!("\"icc\": {b}"),
        (None, None) => "no \"icc\" key (dockerd's default: on)".to_string(),
    };
    format!(
        "controller    {controller}\ndocker        {docker} (dockerd's own setting on docker0)\ndaemon.json   {said} ({})\n",
        file.path
    )
}
