//! What the incremental compiler keeps per address family: the chains of
//! each service group with the hash of its inputs, and the dispatch trees'
//! memo. A leaf shared by the builder (`compile`) and the cache (`cache`),
//! so neither imports the other's internals in a ring.

use super::trie;
use std::collections::HashMap;

/// Chains as the builder emits them: name and rules.
pub(super) type Chains = Vec<(String, super::ruleset::Rules)>;

/// What one family keeps: service groups (root chain → input hash and its
/// chains) and the dispatch trees' chains (tree root → [`trie::Memo`]).
#[derive(Clone, Debug, Default)]
pub(super) struct Groups {
    pub(super) groups: HashMap<String, (u64, Chains)>,
    pub(super) trees: HashMap<String, trie::Memo>,
}
