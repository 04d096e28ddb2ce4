//! The node controller and the admin client behind `segctl`.
//!
//! - [`cluster`]: the cluster's CA, join tokens, membership records.
//! - [`store`]: where secrets live (trait + the embedded sealed store).
//! - [`identity`]: container labels → seg identity, the one rule every part uses.
//! - [`attest`]: who is calling on the agent socket (peer PID → container → identity).
//! - [`docker`]: the one Docker layer: connection, event fan-out, mapping into seg's types.
//! - [`node`]: `segctl node run` — the sockets, the HTTP APIs, the access log.
//! - [`cli`]: the admin-side commands that talk to the admin socket.

pub mod attest;
pub mod audit;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod compose;
pub mod daemon_json;
pub mod docker;
pub mod firewall;
pub mod identity;
pub mod network;
pub mod node;
pub mod policy;
pub mod segregation;
pub mod store;
pub mod table;
pub mod timefmt;
