//! Translating a ruleset to nftables again after one container changed,
//! without translating every service's chains again: a service tree's or a
//! plain chain's nft form depends only on the chains it reads, and the
//! cached compile ([`super::compile_cached`]) hands back the very same
//! `Arc` for every chain whose inputs did not change. So each translated
//! piece is kept with the chains it read, and reused while each of them is
//! still the same allocation (`Arc::ptr_eq`; the piece holds a clone, so
//! an address cannot be reused by another chain meanwhile).
//!
//! A dispatch tree (`SEG-EGRESS`, `SEG-INGRESS`: every container) changes
//! at every event, but only along the changed addresses' paths: the
//! flattening of each inner chain is kept too ([`Flat`]), and reused while
//! every chain of its subtree is the same allocation and it is entered with
//! the same address ranges, so an event parses the rules of a few chains,
//! not of all of them.
//!
//! The output is exactly [`super::nft_render::to_nft`]'s (tested on random
//! sequences of changes); the cache only saves work.

use super::nft_model::{Chain, Set};
use super::ruleset::{Rules, Table};
use crate::policy::Family;
use std::collections::HashMap;
use std::sync::Arc;

/// What a tree decides for a range of addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Return,
    Drop,
    Goto(String),
}

/// A range of addresses, both ends included.
pub(super) type Span = (u128, u128);
pub(super) type Decided = (Span, Outcome);

/// What flattening one inner chain of a tree gave: the address keys and
/// ranges of its subtree, for the domain it was entered with.
#[derive(Clone, Debug)]
pub(super) struct Flat {
    pub(super) domain: Vec<Span>,
    pub(super) hosts: Vec<(std::net::IpAddr, Outcome)>,
    pub(super) spans: Vec<Decided>,
    /// The subtree's chains (this one first), as they were.
    pub(super) read: Vec<(String, Rules)>,
}

/// What [`super::nft_render::to_nft_cached`] keeps between calls, by
/// family (v4, v6) and chain name. Looked up by `&str` and moved between
/// the maps with its own key: reusing a piece allocates nothing.
#[derive(Clone, Debug, Default)]
pub struct NftCache {
    pieces: [HashMap<String, Piece>; 2],
    /// The pieces used by the translation under way (the others go).
    used: [HashMap<String, Piece>; 2],
    /// Flattened inner chains of trees, the same way.
    flats: [HashMap<String, Arc<Flat>>; 2],
    flats_used: [HashMap<String, Arc<Flat>>; 2],
}

/// One translated chain or tree (shared: handing it out is a count).
pub(super) type Piece = Arc<PieceData>;

#[derive(Debug)]
pub(super) struct PieceData {
    /// The chains it was made from, as they were.
    pub(super) read: Vec<(String, Rules)>,
    /// Its chain in nft syntax.
    pub(super) chain: Arc<Chain>,
    pub(super) sets: Vec<(String, Arc<Set>)>,
}

impl NftCache {
    pub fn new() -> NftCache {
        NftCache::default()
    }

    /// Pieces kept, for tests.
    pub fn len(&self) -> usize {
        self.pieces.iter().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The piece for `name` if every chain it read is unchanged in `table`.
    pub(super) fn get(&mut self, family: Family, name: &str, table: &Table) -> Option<Piece> {
        let i = index(family);
        let (key, piece) = self.pieces[i].remove_entry(name)?;
        let fresh = piece.read.iter().all(|(n, r)| table.chains.get(n).is_some_and(|c| Arc::ptr_eq(c, r)));
        if !fresh {
            return None;
        }
        // Its trees' flattened subtrees stay for when the tree changes.
        for (n, _) in &piece.read {
            if let Some((k, flat)) = self.flats[i].remove_entry(n.as_str()) {
                self.flats_used[i].insert(k, flat);
            }
        }
        self.used[i].insert(key, Arc::clone(&piece));
        Some(piece)
    }

    pub(super) fn put(&mut self, family: Family, name: &str, piece: Piece) {
        self.used[index(family)].insert(name.to_string(), piece);
    }

    /// The flattening of inner chain `name` entered with `domain`, if its
    /// whole subtree is unchanged in `table`.
    pub(super) fn flat(
        &mut self,
        family: Family,
        name: &str,
        domain: &[Span],
        table: &Table,
    ) -> Option<Arc<Flat>> {
        let i = index(family);
        let (key, flat) = self.flats[i].remove_entry(name)?;
        let same = |(n, r): &(String, Rules)| table.chains.get(n).is_some_and(|c| Arc::ptr_eq(c, r));
        if flat.domain != domain || !flat.read.iter().all(same) {
            return None;
        }
        self.flats_used[i].insert(key, Arc::clone(&flat));
        Some(flat)
    }

    pub(super) fn put_flat(&mut self, family: Family, name: &str, flat: Flat) {
        self.flats_used[index(family)].insert(name.to_string(), Arc::new(flat));
    }

    /// Ends a translation: what it did not use is dropped.
    pub(super) fn finish(&mut self) {
        self.pieces = std::mem::take(&mut self.used);
        self.flats = std::mem::take(&mut self.flats_used);
    }
}

fn index(family: Family) -> usize {
    usize::from(family == Family::V6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::fixture::random_change;
    use crate::firewall::nft_render::{to_nft, to_nft_cached};
    use crate::firewall::{compile_cached, synth, CompileCache, HostSettings};

    /// Random container starts, stops, moves and publications (IPv4 and
    /// IPv6, one to three at once) through the cached compile: the cached translation always equals a fresh one,
    /// and reuses what did not change.
    #[test]
    fn cached_translations_equal_fresh_ones() {
        let (policies, mut inv) = synth::scenario(6, 2);
        let (mut compiled, mut translated) = (CompileCache::new(), NftCache::new());
        let mut rng = fastrand::Rng::with_seed(0x5e9_7ab1e);
        let host = HostSettings::default();
        let mut reused = 0;
        for step in 0..300 {
            for _ in 0..rng.usize(1..=3) {
                random_change(&mut inv, &mut rng, step);
            }
            let rs = compile_cached(&policies, &inv, &host, &mut compiled);
            let before = translated.len();
            let cached = to_nft_cached(&rs, &mut translated).unwrap();
            assert_eq!(cached, to_nft(&rs).unwrap(), "step {step}");
            reused += usize::from(before > 0 && !translated.is_empty());
        }
        assert!(reused > 250, "the cache is used: {reused}");
        let flats = translated.flats.iter().map(HashMap::len).sum::<usize>();
        assert!(flats > 0, "inner chains of trees are kept flattened");
    }

    /// A piece is reused only while the chains it read are the same ones.
    #[test]
    fn a_changed_chain_is_translated_again() {
        let (policies, inv) = synth::scenario(2, 1);
        let rs = crate::firewall::compile(&policies, &inv);
        let mut cache = NftCache::new();
        let first = to_nft_cached(&rs, &mut cache).unwrap();
        let again = to_nft_cached(&rs, &mut cache).unwrap();
        let shared = first.chains.iter().filter(|(n, c)| Arc::ptr_eq(c, &again.chains[*n])).count();
        assert_eq!(shared, first.chains.len() - 1, "all but the base chain come from the cache");
        let mut changed = rs.clone();
        let (name, rules) =
            changed.v4.chains.iter_mut().find(|(n, _)| n.starts_with("SEG-P-")).expect("a port chain");
        let name = name.clone();
        *rules = Arc::new(rules.iter().cloned().chain(["-j DROP".to_string()]).collect());
        let third = to_nft_cached(&changed, &mut cache).unwrap();
        assert_eq!(third, to_nft(&changed).unwrap());
        assert!(!Arc::ptr_eq(&third.chains[&name], &first.chains[&name]), "{name} translated again");
    }
}
