//! Being written.
pub struct MemoryStore {}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        todo!("being written")
    }
}
