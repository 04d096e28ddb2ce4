//! Shared pieces of seg: what both `segctl` (the node controller) and
//! `seg-sidecar` must agree on.
//!
//! - [`name`]: the one rule for secret names (they become file names).
//! - [`secret`]: [`secret::SecretBytes`], the only type that holds secret
//!   values: fixed-size, locked, zeroized on drop, redacted in `Debug`.
//! - [`api`]: the wire contract of the agent and admin sockets.
//! - [`uds_http`]: a small HTTP/1.1 client over unix sockets that reads
//!   bodies straight into [`secret::SecretBytes`].
//! - [`sys`]: process hardening and memory locking (the only `unsafe`).

pub mod api;
pub mod file_name;
pub mod name;
pub mod secret;
pub mod sys;
pub mod uds_http;
