//! The inspection cache: container id → what Docker said about it.
//!
//! Labels cannot change during a container's life and ids are never reused,
//! so an entry stays valid until the container is destroyed; entries are
//! still dropped on `die`/`stop`, on event-stream gaps and when the cache is
//! full, because a needless re-inspection is cheap and a stale one is not.
//!
//! Concurrent lookups of one id share one inspection (one slot per id); the
//! mutex is never held across an `.await`.

use super::{ContainerInfo, ContainerLookup, LookupError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::OnceCell;

/// How many containers are remembered at most (a flood of containers must
/// not grow the controller without limit).
pub const DEFAULT_CAPACITY: usize = 4096;

type Slot = Arc<OnceCell<Arc<ContainerInfo>>>;

pub(crate) struct InspectCache {
    slots: Mutex<HashMap<String, Slot>>,
    capacity: usize,
}

impl InspectCache {
    pub(crate) fn new(capacity: usize) -> InspectCache {
        InspectCache { slots: Mutex::new(HashMap::new()), capacity: capacity.max(1) }
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        // Nothing panics while the lock is held; a poisoned map is still consistent.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The slot for `id`, created (evicting an arbitrary entry when full) if absent.
    fn slot(&self, id: &str) -> Slot {
        let mut slots = self.slots();
        if let Some(slot) = slots.get(id) {
            return slot.clone();
        }
        if slots.len() >= self.capacity {
            // HashMap order is randomly seeded: this evicts an arbitrary entry.
            if let Some(victim) = slots.keys().next().cloned() {
                slots.remove(&victim);
            }
        }
        let slot = Slot::default();
        slots.insert(id.to_owned(), slot.clone());
        slot
    }

    /// Removes `id` only if it still maps to `slot` (a newer slot stays).
    fn remove_slot(&self, id: &str, slot: &Slot) {
        let mut slots = self.slots();
        if slots.get(id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(id);
        }
    }

    /// The cached inspection of `id`, or a fresh one. Failures and containers
    /// that are not running are not kept, so the next caller asks again.
    pub(crate) async fn get_or_inspect(
        &self,
        id: &str,
        lookup: &dyn ContainerLookup,
    ) -> Result<Arc<ContainerInfo>, LookupError> {
        let slot = self.slot(id);
        // If the initialising caller is cancelled or fails, the next waiter
        // runs the inspection itself (tokio's OnceCell semantics).
        let result = slot.get_or_try_init(|| async { lookup.inspect(id).await.map(Arc::new) }).await.cloned();
        if !result.as_ref().is_ok_and(|info| info.running) {
            self.remove_slot(id, &slot);
        }
        result
    }

    pub(crate) fn forget(&self, id: &str) {
        self.slots().remove(id);
    }

    pub(crate) fn clear(&self) {
        self.slots().clear();
    }

    /// Whether an inspection of `id` is cached.
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.slots().get(id).is_some_and(|slot| slot.initialized())
    }

    pub(crate) fn len(&self) -> usize {
        self.slots().len()
    }
}
