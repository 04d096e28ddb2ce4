//! `segctl net`: seg-managed Docker networks, straight through the Docker
//! API (no controller needed): create (bridge, optionally internal, ICC off,
//! a fixed subnet), list, remove (only when nothing is attached).

use super::Output;
use crate::docker;
use crate::network::{self, DockerNetworks, NetworkInfo, NetworkSpec};
use crate::policy::Cidr;
use crate::table::Table;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct NetArgs {
    #[command(subcommand)]
    pub cmd: NetCmd,
    /// The Docker Engine API socket.
    #[arg(long, global = true, default_value = "/var/run/docker.sock", value_name = "PATH")]
    pub docker_socket: PathBuf,
}

#[derive(Debug, Clone, Subcommand)]
pub enum NetCmd {
    /// Create a bridge network (labelled seg.managed=true).
    Create {
        #[arg(value_parser = parse_name)]
        name: String,
        /// No route out of the host.
        #[arg(long)]
        internal: bool,
        /// Containers on it cannot talk to each other (Docker's enable_icc=false).
        #[arg(long)]
        no_icc: bool,
        /// E.g. 10.30.0.0/24 (default: Docker picks one).
        #[arg(long, value_name = "CIDR", value_parser = parse_subnet)]
        subnet: Option<Cidr>,
    },
    /// List networks.
    Ls {
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Remove a network nothing is attached to.
    Rm { name: String },
}

pub async fn run(args: NetArgs) -> Result<()> {
    let api = DockerNetworks { docker: docker::connect(&args.docker_socket).await? };
    match args.cmd {
        NetCmd::Create { name, internal, no_icc, subnet } => {
            let spec = NetworkSpec::new(&name, internal, !no_icc, subnet)?;
            let id = network::create(&api, &spec)
                .await
                .with_context(|| format!("cannot create network {name}"))?;
            println!("created network {name} ({})", &id[..id.len().min(12)]);
        }
        NetCmd::Ls { output } => {
            let list = network::list(&api).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&json(&list))?),
                Output::Table => print!("{}", render(&list)),
            }
        }
        NetCmd::Rm { name } => {
            network::remove(&api, &name).await.with_context(|| format!("cannot remove network {name}"))?;
            println!("removed network {name}");
        }
    }
    Ok(())
}

/// Bad names and subnets are usage errors (exit 2), caught before Docker is asked.
fn parse_name(raw: &str) -> Result<String, String> {
    network::validate_name(raw).map(|()| raw.to_owned()).map_err(|e| e.to_string())
}

fn parse_subnet(raw: &str) -> Result<Cidr, String> {
    network::parse_subnet(raw).map_err(|e| e.to_string())
}

fn json(list: &[NetworkInfo]) -> serde_json::Value {
    list.iter()
        .map(|n| {
            serde_json::json!({
                "name": n.name, "id": n.id, "driver": n.driver, "internal": n.internal, "icc": n.icc,
                "subnets": n.subnets, "bridge": n.bridge_if, "managed": n.managed, "containers": n.containers,
            })
        })
        .collect()
}

pub fn render(list: &[NetworkInfo]) -> String {
    let mut table = Table::new(1)
        .header(["NAME", "DRIVER", "INTERNAL", "ICC", "SUBNETS", "BRIDGE", "CONTAINERS"])
        .min_widths(&[28, 8, 8, 5, 18, 16]);
    for n in list {
        let yes = |b: bool| if b { "yes" } else { "no" }.to_owned();
        let name = if n.managed { format!("{} (seg)", n.name) } else { n.name.clone() };
        table.row([
            name,
            n.driver.clone(),
            yes(n.internal),
            yes(n.icc),
            n.subnets.join(","),
            n.bridge_if.clone().unwrap_or_else(|| "-".into()),
            n.containers.len().to_string(),
        ]);
    }
    table.render()
}
