//! `segctl net`: seg-managed Docker networks, through the controller (which
//! holds the host's one Docker connection): create (bridge, optionally
//! internal, ICC off, a fixed subnet), list, remove (only when nothing is
//! attached). Names and subnets are checked here too, so a typo is a usage
//! error before anything is sent.

use super::{AdminOpts, Output};
use crate::network;
use crate::policy::Cidr;
use crate::table::Table;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use seg_common::api::network::{NetworkCreate, NetworkCreated, NetworkInfo, NetworkRemoved};

#[derive(Debug, Clone, Args)]
pub struct NetArgs {
    #[command(subcommand)]
    pub cmd: NetCmd,
    #[command(flatten)]
    pub admin: AdminOpts,
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
    let client = args.admin.client();
    match args.cmd {
        NetCmd::Create { name, internal, no_icc, subnet } => {
            let request = NetworkCreate {
                name: name.clone(),
                internal,
                icc: !no_icc,
                subnet: subnet.map(|s| s.to_string()),
            };
            let created: NetworkCreated = client
                .call("POST", "/v1/networks", Some(&request))
                .await
                .with_context(|| format!("cannot create network {name}"))?;
            let id = &created.id;
            println!("created network {name} ({})", &id[..id.len().min(12)]);
        }
        NetCmd::Ls { output } => {
            let list: Vec<NetworkInfo> = client.get("/v1/networks").await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&list)?),
                Output::Table => print!("{}", render(&list)),
            }
        }
        NetCmd::Rm { name } => {
            let _: NetworkRemoved = client
                .call("DELETE", &format!("/v1/networks/{name}"), None::<&()>)
                .await
                .with_context(|| format!("cannot remove network {name}"))?;
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
