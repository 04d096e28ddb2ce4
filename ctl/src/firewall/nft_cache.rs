//! Translating a ruleset to nftables again after one container changed,
//! without translating every service's chains again: a service tree's or a
//! plain chain's nft form depends only on the chains it reads, and the
//! cached compile ([`super::compile_cached`]) hands back the very same
//! `Arc` for every chain whose inputs did not change. So each translated
//! piece is kept with the chains it read, and reused while each of them is
//! still the same allocation (`Arc::ptr_eq`; the piece holds a clone, so
//! an address cannot be reused by another chain meanwhile).
//!
//! The output is exactly [`super::nft_render::to_nft`]'s (tested on random
//! sequences of changes); the cache only saves work.

use super::nft_model::{Chain, Set};
use super::ruleset::{Rules, Table};
use crate::policy::Family;
use std::collections::HashMap;
use std::sync::Arc;

/// What [`super::nft_render::to_nft_cached`] keeps between calls.
#[derive(Clone, Debug, Default)]
pub struct NftCache {
    pieces: HashMap<(Family, String), Piece>,
    /// The pieces used by the translation under way (the others go).
    used: HashMap<(Family, String), Piece>,
}

/// One translated chain or tree.
#[derive(Clone, Debug)]
pub(super) struct Piece {
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
        self.pieces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The piece for `name` if every chain it read is unchanged in `table`.
    pub(super) fn get(&mut self, family: Family, name: &str, table: &Table) -> Option<Piece> {
        let key = (family, name.to_string());
        let piece = self.pieces.remove(&key)?;
        let fresh = piece.read.iter().all(|(n, r)| table.chains.get(n).is_some_and(|c| Arc::ptr_eq(c, r)));
        if !fresh {
            return None;
        }
        self.used.insert(key, piece.clone());
        Some(piece)
    }

    pub(super) fn put(&mut self, family: Family, name: &str, piece: Piece) {
        self.used.insert((family, name.to_string()), piece);
    }

    /// Ends a translation: what it did not use is dropped.
    pub(super) fn finish(&mut self) {
        self.pieces = std::mem::take(&mut self.used);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::nft_render::{to_nft, to_nft_cached};
    use crate::firewall::{compile_cached, synth, CompileCache, HostSettings, PublishedPort};
    use crate::policy::Proto;

    /// Random container starts, stops, moves and publications through the
    /// cached compile: the cached translation always equals a fresh one,
    /// and reuses what did not change.
    #[test]
    fn cached_translations_equal_fresh_ones() {
        let (policies, mut inv) = synth::scenario(6, 2);
        let (mut compiled, mut translated) = (CompileCache::new(), NftCache::new());
        let mut rng = fastrand::Rng::with_seed(0x5e9_7ab1e);
        let host = HostSettings::default();
        let mut reused = 0;
        for step in 0..100 {
            match rng.u8(..4) {
                0 if inv.containers.len() > 1 => {
                    drop(inv.containers.remove(rng.usize(..inv.containers.len())))
                }
                1 => {
                    let mut c = inv.containers[rng.usize(..inv.containers.len())].clone();
                    c.id = format!("x{step}");
                    c.endpoints[0].ipv4 =
                        Some(synth::address(rng.usize(..6), rng.usize(..10), 5 + rng.usize(..4)));
                    inv.containers.push(c);
                }
                2 => {
                    let i = rng.usize(..inv.containers.len());
                    let port = PublishedPort {
                        proto: Proto::Tcp,
                        container_port: 80,
                        host_ip: None,
                        host_port: 30000 + step,
                    };
                    inv.containers[i].published = vec![port];
                }
                _ => {
                    let i = rng.usize(..inv.containers.len());
                    inv.containers[i].endpoints[0].ipv4 =
                        Some(synth::address(rng.usize(..6), rng.usize(..10), 9));
                }
            }
            let rs = compile_cached(&policies, &inv, &host, &mut compiled);
            let before = translated.len();
            let cached = to_nft_cached(&rs, &mut translated).unwrap();
            assert_eq!(cached, to_nft(&rs).unwrap(), "step {step}");
            reused += usize::from(before > 0 && !translated.is_empty());
        }
        assert!(reused > 90, "the cache is used: {reused}");
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
