//! The `segctl` commands. Each command group is a clap type plus an async
//! `run`, so `main.rs` adds a group with one enum variant and one match arm.
//!
//! - [`node`]: `segctl node run` (the controller itself).
//! - [`status`]: `segctl status`.
//! - [`secret`]: `segctl secret put|ls|get|rm|grant|revoke|ttl|rotate|status|hook`
//!   ([`rotation`] holds the last three).
//!
//! Admin commands talk to `<run-dir>/admin.sock` through [`client`].

pub mod client;
pub mod duration;
pub mod icc;
pub mod input;
pub mod net;
pub mod node;
pub mod policy;
pub mod rotation;
pub mod secret;
pub mod status;

use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// Where the controller's admin socket is; shared by all admin commands.
#[derive(Debug, Clone, Args)]
pub struct AdminOpts {
    /// Run directory of the controller (holds admin.sock).
    #[arg(long, global = true, env = "SEG_RUN_DIR", default_value = "/run/seg", value_name = "DIR")]
    pub run_dir: PathBuf,
}

impl AdminOpts {
    pub fn client(&self) -> client::AdminClient {
        client::AdminClient::new(&self.run_dir)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON for scripts.
    Json,
}
