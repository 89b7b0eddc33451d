//! Hashing for kernel addresses and ids (the keys of the hot tables).
use std::collections::{HashMap, HashSet};

/// Hasher for kernel addresses and ids: one folded multiply. std's SipHash
/// dominated the pipeline (every event looks up its object's owner), and
/// the keys are not attacker-chosen.
#[derive(Clone, Copy, Debug, Default)]
pub struct PtrHasher(u64);

impl std::hash::Hasher for PtrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        let p = u128::from(self.0 ^ x) * 0x9e37_79b9_7f4a_7c15;
        self.0 = (p as u64) ^ ((p >> 64) as u64);
    }

    fn write_u32(&mut self, x: u32) {
        self.write_u64(u64::from(x));
    }
}

/// A `HashMap` keyed by addresses or ids.
pub type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<PtrHasher>>;

/// A `HashSet` of addresses or ids.
pub type FastSet<K> = HashSet<K, std::hash::BuildHasherDefault<PtrHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptr_hasher_spreads_aligned_addresses() {
        use std::hash::{BuildHasher as _, BuildHasherDefault};
        let b = BuildHasherDefault::<PtrHasher>::default();
        // 64-byte aligned slab objects must not share their low hash bits.
        let low: std::collections::BTreeSet<u64> = (0..1024u64)
            .map(|i| b.hash_one(0xffff_8880_0000_0000 + i * 64) & 1023)
            .collect();
        assert!(low.len() > 600, "{} distinct buckets of 1024", low.len());
    }
}
