//! Which secret store the node serves from (`segctl node run --store`):
//! the embedded one in the state directory (the default, one host), or the
//! cluster store in etcd shared by every node (`docs/cluster.md`).

use crate::store::etcd::{EtcdConfig, EtcdStore};
use crate::store::{ClusterKv, EmbeddedStore, NodeRegistry, SecretStore, StoreError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub enum StoreChoice {
    #[default]
    Embedded,
    Etcd(EtcdSettings),
}

/// How this node reaches etcd, and the file of the cluster's KEK (the
/// same on every node; `segctl cluster init/join` will hand it out).
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    pub ca: PathBuf,
    /// Client certificate and key for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
    pub prefix: String,
    pub kek_file: PathBuf,
    /// This node's name in the cluster (unique; `--node-name`, default the host name).
    pub node_name: String,
}

/// The opened store and, in a cluster, where the nodes publish their
/// consumers (the same etcd connection) with this node's name.
pub struct Opened {
    pub store: Arc<dyn SecretStore>,
    pub registry: Option<(Arc<dyn NodeRegistry>, String)>,
    /// The cluster's membership records (the same etcd connection).
    pub kv: Option<Arc<dyn ClusterKv>>,
}

/// How long one etcd request of a write (or of the first load) may take.
const ETCD_TIMEOUT: Duration = Duration::from_secs(3);

/// Opens the chosen store. The etcd store runs its own runtime and blocks
/// while it loads, so it is opened on the blocking pool.
pub async fn open(choice: &StoreChoice, state_dir: &Path) -> Result<Opened, StoreError> {
    match choice {
        StoreChoice::Embedded => {
            Ok(Opened { store: Arc::new(EmbeddedStore::open(state_dir)?), registry: None, kv: None })
        }
        StoreChoice::Etcd(settings) => {
            let kek = crate::store::etcd::read_kek_file(&settings.kek_file)?;
            let cfg = EtcdConfig {
                endpoints: settings.endpoints.clone(),
                ca: settings.ca.clone(),
                identity: settings.identity.clone(),
                prefix: settings.prefix.clone(),
                kek,
                timeout: ETCD_TIMEOUT,
            };
            let store = tokio::task::spawn_blocking(move || EtcdStore::open(cfg)).await.map_err(|e| {
                StoreError::Io {
                    action: "opening",
                    path: "the etcd store".into(),
                    cause: std::io::Error::other(e),
                }
            })??;
            let store = Arc::new(store);
            Ok(Opened {
                store: store.clone(),
                registry: Some((store.clone(), settings.node_name.clone())),
                kv: Some(store),
            })
        }
    }
}
