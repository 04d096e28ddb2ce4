//! The `segctl` commands. Each command group is a clap type plus an async
//! `run`, so `main.rs` adds a group with one enum variant and one match arm.
//!
//! - [`status`]: `segctl status`.
//! - [`cluster`]: `segctl cluster ls|remove|token|admin-cert` (`init` and
//!   `join` set a node up: the controller's side, `node::cluster_setup`).
//! - [`compose`]: `segctl compose` (local: writes the secrets override file).
//! - [`secret`]: `segctl secret put|ls|get|rm|grant|revoke|ttl|rotate|status|hook`
//!   ([`rotation`] holds the last three).
//!
//! Admin commands talk to `<run-dir>/admin.sock` through [`crate::client`]:
//! the CLI is a client of the admin API and imports nothing of the
//! controller (`segctl node run` lives in [`crate::node::command`]).

pub mod cluster;
pub mod compose;
pub mod duration;
mod hook;
pub mod icc;
pub mod input;
pub mod net;
pub mod policy;
mod policy_graph;
pub mod rotation;
pub mod secret;
pub mod status;

use clap::ValueEnum;

pub use crate::client::{AdminClient, AdminOpts};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON for scripts.
    Json,
}
