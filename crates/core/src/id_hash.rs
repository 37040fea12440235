//! Maps keyed by our own small integers (database row ids, queue slots), on the hot path
//! of every poll: a multiply instead of SipHash. Their keys never come from outside, so
//! the hash needs no defence against chosen collisions.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
};

/// A `HashMap` keyed by one of our own integers.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Fibonacci hashing of an integer key: sequential ids spread over the table's buckets.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only integers are hashed here; anything else still gets a usable hash.
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_fill_distinct_buckets() {
        let mut map: IdMap<i64, i64> = IdMap::default();
        for id in 1..=10_000 {
            map.insert(id, -id);
        }
        assert_eq!(map.len(), 10_000);
        assert!((1..=10_000).all(|id| map.get(&id) == Some(&-id)));
        // The top bits (what hashbrown picks buckets and tags from) differ between
        // neighbours.
        let top = |id: u64| {
            let mut h = IdHasher::default();
            h.write_u64(id);
            h.finish() >> 57
        };
        let tags: std::collections::HashSet<u64> = (0..64).map(top).collect();
        assert!(tags.len() > 32, "{tags:?}");
    }
}
