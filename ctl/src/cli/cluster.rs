//! `segctl cluster ls|remove|token|admin-cert`: they ask a running
//! controller (the local admin socket, or `--server` with an admin
//! certificate). `init` and `join` set up a node itself, with its
//! controller stopped: `node::cluster_setup`.

use super::{AdminOpts, Output};
use crate::client::encode;
use crate::cluster::api::{self, AdminCertAnswer, AdminCertRequest, NodeList, TokenAnswer, TokenRequest};
use crate::cluster::ca::request;
use crate::timefmt;
use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Subcommand)]
pub enum ClusterCmd {
    /// The cluster's nodes and admins.
    Ls {
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        #[command(flatten)]
        admin: AdminOpts,
    },
    /// Remove a node (or with --admin an admin): its certificate is refused at once.
    Remove {
        name: String,
        /// NAME is an admin certificate's holder, not a node.
        #[arg(long = "admin")]
        is_admin: bool,
        #[command(flatten)]
        admin: AdminOpts,
    },
    /// A new join token (works once).
    Token {
        /// How long it may be used.
        #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = parse_duration)]
        ttl: Duration,
        #[command(flatten)]
        admin: AdminOpts,
    },
    /// An admin certificate for `segctl --server` (the key is made here).
    AdminCert {
        /// Where to write ca.crt, admin.crt and admin.key (made 0700).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The admin's name (the certificate's common name).
        #[arg(long, default_value = "admin", value_name = "NAME")]
        name: String,
        #[arg(long, default_value = "30d", value_name = "DURATION", value_parser = parse_duration)]
        ttl: Duration,
        #[command(flatten)]
        admin: AdminOpts,
    },
}

pub async fn run(cmd: ClusterCmd) -> Result<()> {
    match cmd {
        ClusterCmd::Ls { output, admin } => {
            let client = admin.client();
            let list: NodeList = client.get(api::NODES).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&list)?),
                Output::Table => print!("{}", render(&list)),
            }
            Ok(())
        }
        ClusterCmd::Remove { name, is_admin, admin } => {
            let client = admin.client();
            let role = if is_admin { "admin" } else { "node" };
            let path = format!("{}/{}?role={role}", api::NODES, encode(&name));
            let _: serde_json::Value = client.call("DELETE", &path, None::<&()>).await?;
            println!("removed {role} {name}: its certificates are refused from now on");
            Ok(())
        }
        ClusterCmd::Token { ttl, admin } => {
            let client = admin.client();
            let body = TokenRequest { ttl_ms: ttl.as_millis() as u64 };
            let answer: TokenAnswer = client.call("POST", api::TOKENS, Some(&body)).await?;
            println!("{}", answer.join_command());
            Ok(())
        }
        ClusterCmd::AdminCert { out, name, ttl, admin } => {
            let client = admin.client();
            let (key, csr) = request(&name)?;
            let body = AdminCertRequest { name: name.clone(), csr, ttl_ms: ttl.as_millis() as u64 };
            let answer: AdminCertAnswer = client.call("POST", api::ADMIN_CERTS, Some(&body)).await?;
            crate::cluster::files::write_admin_dir(&out, &answer.ca_cert, &answer.cert.pem, &key)?;
            println!(
                "wrote {}/{{ca.crt,admin.crt,admin.key}} for admin {name}, valid until {}.\n\
                 use it with: segctl --server https://NODE:PORT --admin-dir {} secret ls",
                out.display(),
                timefmt::rfc3339_ms(answer.cert.not_after_ms),
                out.display()
            );
            Ok(())
        }
    }
}

pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    super::duration::parse_ms(raw).map(Duration::from_millis).map_err(|e| e.to_string())
}

fn render(list: &NodeList) -> String {
    let mut table = crate::table::Table::new(2).header([
        "NAME",
        "ROLE",
        "ADDRESS",
        "CERT EXPIRES",
        "LAST SEEN",
        "VERSION",
    ]);
    let now = crate::cluster::ca::millis(std::time::SystemTime::now());
    for n in &list.nodes {
        let seen = match n.last_seen_ms {
            Some(at) => format!("{} s ago", now.saturating_sub(at) / 1000),
            None if n.role == "node" => "not seen (down?)".into(),
            None => "-".into(),
        };
        let address = if n.address.is_empty() { "-" } else { &n.address };
        table.row([
            n.name.clone(),
            n.role.clone(),
            address.to_owned(),
            timefmt::rfc3339_ms(n.cert_expires_at_ms),
            seen,
            n.version.clone(),
        ]);
    }
    format!("cluster CA {}…\n{}", &list.cluster_ca[..16.min(list.cluster_ca.len())], table.render())
}
