//! `segctl icc`: inter-container traffic on docker0. `disable` puts a rule
//! into the controller's ruleset (effective at once, no daemon restart,
//! kept across controller restarts); `--persist` also writes `"icc"` into
//! daemon.json for dockerd's next start.

use super::{AdminOpts, Output};
use crate::daemon_json;
use anyhow::Result;
use clap::{Args, Subcommand};
use seg_common::api::policy::{IccRequest, IccStatus};
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct IccArgs {
    #[command(subcommand)]
    pub cmd: IccCmd,
    #[command(flatten)]
    pub admin: AdminOpts,
    /// The Docker daemon's config file (read by `status`, written with `--persist`).
    #[arg(long, global = true, default_value = daemon_json::DEFAULT_PATH, value_name = "PATH")]
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
    let path = args.daemon_json.clone();
    let (enabled, persist) = match args.cmd {
        IccCmd::Status { output } => {
            let status: IccStatus = client.get("/v1/icc").await?;
            let file = daemon_json::read_icc(&path).map_err(|e| e.to_string());
            match output {
                Output::Json => {
                    let file_icc = file.clone().ok().flatten();
                    let v = serde_json::json!({ "controller": status, "daemon_json": { "path": path, "icc": file_icc, "error": file.err() } });
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                Output::Table => print!("{}", render(&status, &path, &file)),
            }
            return Ok(());
        }
        IccCmd::Disable { persist } => (false, persist),
        IccCmd::Enable { persist } => (true, persist),
    };
    let request = IccRequest { enabled, persist, daemon_json: Some(path.display().to_string()) };
    let status: IccStatus = client.call("PUT", "/v1/icc", Some(&request)).await?;
    let word = if enabled { "enabled" } else { "disabled" };
    println!("ICC on docker0 {word} by the controller's rule (in force now)");
    if let Some(d) = status.daemon_json {
        println!("{d}");
    } else if let Ok(Some(file)) = daemon_json::read_icc(&path) {
        if file != enabled {
            println!(
                "note: {} says \"icc\": {file}, which dockerd applies at its next start (use --persist)",
                path.display()
            );
        }
    }
    Ok(())
}

pub fn render(s: &IccStatus, path: &std::path::Path, file: &Result<Option<bool>, String>) -> String {
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
    let file = match file {
        Ok(Some(b)) => format!("\"icc\": {b}"),
        Ok(None) => "no \"icc\" key (dockerd's default: on)".to_string(),
        Err(e) => format!("unreadable: {e}"),
    };
    format!("controller    {controller}\ndocker        {docker} (dockerd's own setting on docker0)\ndaemon.json   {file} ({})\n", path.display())
}
