//! Harness for seg's end-to-end tests: they run the real `segctl` controller
//! and the real `seg-sidecar:dev` image against the real Docker engine.
//!
//! - [`begin`] checks the prerequisites (root, Docker, docker-compose, the
//!   images, the `segctl` binary) and serializes the tests, across threads and
//!   processes, with a lock file; it also removes leftovers of killed runs.
//! - [`Controller`] runs `segctl node run` with a temporary state dir and run
//!   dir (never `/var/lib/seg` or `/run/seg`, so a demo can run alongside).
//! - [`Project`] is a compose project with a unique name, generated from
//!   `examples/secrets/docker-compose.yml` with the agent mount pointed at the
//!   test controller; dropping it runs `docker-compose down -v`.
//! - [`Container`] is a single `docker run -d`, removed on drop.
//!
//! Nothing here skips: a missing prerequisite is a loud failure.

mod attack;
mod compose;
mod controller;
mod docker;
mod etcd;
mod lock;
mod private_docker;
mod process;
mod short_form;
mod util;
mod wait;

pub use attack::{attack_bin, get_on, pid_in_container, DropSocket};
pub use compose::{add_service, add_tmpfs_volume, example_yaml, service_mut, services_mut, Project};
pub use controller::{agent_get, detach_mounts_under, error_code, Controller};
pub use docker::{docker, docker_ok, Container};
pub use etcd::EtcdCluster;
pub use lock::{begin, segctl_bin, Serial};
pub use private_docker::{Forward, Net, PrivateDocker};
pub use process::{run, run_with_stdin, Out};
pub use short_form::SegTable;
pub use util::{block_on, mode_of, random_bytes, random_text, unique_name, write_private};
pub use wait::wait_until;

pub use serde_json;
pub use serde_norway;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub const SIDECAR_IMAGE: &str = "seg-sidecar:dev";
pub const BUSYBOX_IMAGE: &str = "seg-busybox:dev";
/// The example the tests bring up (relative to the workspace root).
pub const EXAMPLE: &str = "examples/secrets/by-hand.yml";
/// Label put on every container and volume the tests create (for the sweep).
pub const E2E_LABEL: &str = "seg.e2e";
/// Where the example mounts the agent directory inside its containers.
pub const AGENT_MOUNT: &str = "/run/seg/agent";
/// The secret the example's sidecar fetches for its app…
pub const SECRET_NAME: &str = "db-password";
/// …and where the app reads it.
pub const SECRET_FILE: &str = "/run/secrets/db-password";

/// Generous bound for one docker / docker-compose command.
pub const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound for one segctl admin command.
pub const SEGCTL_TIMEOUT: Duration = Duration::from_secs(30);

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_owned()
}
