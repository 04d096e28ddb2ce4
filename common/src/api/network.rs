//! The admin API of seg-managed Docker networks (`segctl net`), as JSON
//! types shared by the controller and `segctl`.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /v1/networks` | every network, sorted by name → `Vec<`[`NetworkInfo`]`>` |
//! | `POST /v1/networks` | create a bridge network: [`NetworkCreate`] → [`NetworkCreated`] |
//! | `DELETE /v1/networks/{name}` | remove one nothing is attached to → [`NetworkRemoved`] |

use serde::{Deserialize, Serialize};

/// A network as the Docker Engine reports it, joined with the containers on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub name: String,
    pub id: String,
    pub driver: String,
    pub internal: bool,
    /// Inter-container traffic on the bridge (the `enable_icc` option; on when absent).
    pub icc: bool,
    /// The IPAM subnets as Docker spells them (`172.18.0.0/16`, `fd00::/64`).
    pub subnets: Vec<String>,
    /// The host interface of a bridge network; `None` for other drivers.
    #[serde(rename = "bridge")]
    pub bridge_if: Option<String>,
    /// Carries `seg.managed=true`: created by seg.
    pub managed: bool,
    /// Names of the containers attached to it, running or stopped, sorted.
    pub containers: Vec<String>,
}

/// `segctl net create`: a bridge network, labelled `seg.managed=true`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkCreate {
    pub name: String,
    /// No route out of the host.
    #[serde(default)]
    pub internal: bool,
    /// Containers on it may talk to each other (Docker's `enable_icc`).
    #[serde(default = "yes")]
    pub icc: bool,
    /// E.g. `10.30.0.0/24`; Docker picks one when absent.
    #[serde(default)]
    pub subnet: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkCreated {
    pub name: String,
    pub id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRemoved {
    pub name: String,
}
