//! A hasher that sends every key to the same place: hash 0, so all keys share one index
//! shard, one tag and one home bucket, and only the key comparison and the overflow bits
//! tell them apart. Shared by the integration tests (`common`) and the loom models
//! (`loom-tests/tests/index.rs` includes this file by path).

use std::hash::{BuildHasher, Hasher};

/// Builds [`ZeroHasher`]s.
#[derive(Clone, Copy, Debug, Default)]
pub struct Colliding;

/// Hashes everything to 0.
#[derive(Debug)]
pub struct ZeroHasher;

impl BuildHasher for Colliding {
    type Hasher = ZeroHasher;
    fn build_hasher(&self) -> ZeroHasher {
        ZeroHasher
    }
}

impl Hasher for ZeroHasher {
    fn write(&mut self, _: &[u8]) {}
    fn finish(&self) -> u64 {
        0
    }
}
