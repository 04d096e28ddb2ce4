//! Being written.
use super::*;
use std::path::Path;

pub struct EmbeddedStore {}

impl EmbeddedStore {
    /// Opens (creating on first use) the store under `state_dir`.
    pub fn open(_state_dir: &Path) -> Result<EmbeddedStore, StoreError> {
        todo!("being written")
    }
}
