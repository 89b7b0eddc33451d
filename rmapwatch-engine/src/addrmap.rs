//! A compact map from kernel object addresses to small values, for the
//! tables that grow with the system: who owns each live anon_vma and AVC
//! (the accounting) and what the model knows of each anon_vma. Pure.
//!
//! One `u64` per slot: slab objects are 8-byte aligned and live in the
//! kernel's direct map, so an address keeps `64 - VALUE_BITS` significant
//! bits after dropping the three zero bits and the high bits every object
//! shares; the value takes the rest. Linear probing, backward-shift
//! deletion (no tombstones), a load factor of at most 0.8. An entry that
//! does not pack (unaligned, outside the shared high bits, a value too
//! large) goes to a `HashMap` beside it: correct for any input, compact for
//! what the kernel hands out. A `HashMap<u64, (u32, u32)>` took 17 bytes a
//! slot at up to 7/8 load with power-of-two growth (~30 bytes an entry);
//! this takes 8 bytes a slot (10..15 bytes an entry).
use std::sync::atomic::{AtomicU64, Ordering};

use crate::hash::FastMap;

/// Address -> value of at most `VALUE_BITS` bits.
#[derive(Clone, Debug)]
pub struct AddrMap<const VALUE_BITS: u32> {
    slots: Vec<u64>,
    packed: usize,
    /// Address bits above the key's, shared by every packed entry.
    hi: Option<u64>,
    spill: FastMap<u64, u64>,
    /// Per-map hash seed: filling one map in another's slot order (as
    /// seeding does from the model's table) would otherwise hand it keys in
    /// ascending home order and pile them into one region (measured: 3.8 s
    /// instead of 0.1 s for 1M anon_vmas).
    seed: u64,
}

impl<const VALUE_BITS: u32> Default for AddrMap<VALUE_BITS> {
    fn default() -> Self {
        static SEEDS: AtomicU64 = AtomicU64::new(0);
        Self {
            slots: Vec::new(),
            packed: 0,
            hi: None,
            spill: FastMap::default(),
            seed: SEEDS
                .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
                .wrapping_add(0x2545_f491_4f6c_dd1d),
        }
    }
}

const ALIGN_BITS: u32 = 3;

impl<const VALUE_BITS: u32> AddrMap<VALUE_BITS> {
    const KEY_BITS: u32 = 64 - VALUE_BITS;
    const KEY_MASK: u64 = (1 << Self::KEY_BITS) - 1;

    /// An empty map.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.packed + self.spill.len()
    }

    /// Whether it is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held (slots and spilled entries, approximately).
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * 8 + self.spill.capacity() * 17
    }

    /// Removes everything, keeping the slots allocated.
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = 0);
        self.packed = 0;
        self.hi = None;
        self.spill.clear();
    }

    fn hi_of(addr: u64) -> u64 {
        addr >> (ALIGN_BITS + Self::KEY_BITS)
    }

    /// The packed key of `addr`, if it packs.
    fn key(&self, addr: u64) -> Option<u64> {
        let key = (addr >> ALIGN_BITS) & Self::KEY_MASK;
        let fits = addr & ((1 << ALIGN_BITS) - 1) == 0
            && key != 0
            && self.hi.is_none_or(|hi| hi == Self::hi_of(addr));
        fits.then_some(key)
    }

    /// splitmix64's finalizer over the seeded key, reduced to `0..cap`.
    fn home(&self, key: u64, cap: usize) -> usize {
        let mut x = key ^ self.seed;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        ((u128::from(x) * cap as u128) >> 64) as usize
    }

    /// Slot index holding `key`, or the empty slot where it would go.
    fn probe(&self, key: u64) -> (usize, bool) {
        let cap = self.slots.len();
        let mut i = self.home(key, cap);
        loop {
            let s = self.slots[i];
            if s == 0 {
                return (i, false);
            }
            if s & Self::KEY_MASK == key {
                return (i, true);
            }
            i += 1;
            if i == cap {
                i = 0;
            }
        }
    }

    /// The value of `addr`.
    #[must_use]
    pub fn get(&self, addr: u64) -> Option<u64> {
        let packed = self
            .key(addr)
            .filter(|_| !self.slots.is_empty())
            .and_then(|key| {
                let (i, found) = self.probe(key);
                found.then(|| self.slots[i] >> Self::KEY_BITS)
            });
        // A packable address with a value too large sits in the spill.
        packed.or_else(|| self.spill.get(&addr).copied())
    }

    /// Makes room for `additional` more entries without growing.
    pub fn reserve(&mut self, additional: usize) {
        let want = self.packed + additional;
        if want * 5 > self.slots.len() * 4 {
            self.resize(want * 5 / 4 + 1);
        }
    }

    fn resize(&mut self, cap: usize) {
        let old = std::mem::replace(&mut self.slots, vec![0; cap.max(8)]);
        for s in old.into_iter().filter(|&s| s != 0) {
            let (i, _) = self.probe(s & Self::KEY_MASK);
            self.slots[i] = s;
        }
    }

    /// Sets `addr` to `value`, returning the previous value.
    pub fn insert(&mut self, addr: u64, value: u64) -> Option<u64> {
        if value >> VALUE_BITS != 0 {
            return self.spill_insert(addr, value);
        }
        if self.hi.is_none() && self.key(addr).is_some() {
            self.hi = Some(Self::hi_of(addr));
        }
        let Some(key) = self.key(addr) else {
            return self.spill_insert(addr, value);
        };
        if !self.slots.is_empty() {
            let (i, found) = self.probe(key);
            if found {
                let old = self.slots[i] >> Self::KEY_BITS;
                self.slots[i] = key | (value << Self::KEY_BITS);
                return Some(old);
            }
        }
        // A new entry: grow first if it would pass the load factor.
        if (self.packed + 1) * 5 > self.slots.len() * 4 {
            self.resize((self.slots.len() * 3 / 2).max(self.packed * 5 / 4 + 8));
        }
        let (i, _) = self.probe(key);
        self.slots[i] = key | (value << Self::KEY_BITS);
        self.packed += 1;
        // The same address may sit in the spill with a value too large before.
        self.spill.remove(&addr)
    }

    fn spill_insert(&mut self, addr: u64, value: u64) -> Option<u64> {
        let packed_old = self.remove_packed(addr);
        self.spill.insert(addr, value).or(packed_old)
    }

    fn remove_packed(&mut self, addr: u64) -> Option<u64> {
        let key = self.key(addr)?;
        if self.slots.is_empty() {
            return None;
        }
        let (mut hole, found) = self.probe(key);
        if !found {
            return None;
        }
        let old = self.slots[hole] >> Self::KEY_BITS;
        self.slots[hole] = 0;
        self.packed -= 1;
        // Backward shift: pull later entries of the cluster into the hole
        // unless their home lies cyclically in (hole, j].
        let cap = self.slots.len();
        let mut j = hole;
        loop {
            j = if j + 1 == cap { 0 } else { j + 1 };
            let s = self.slots[j];
            if s == 0 {
                break;
            }
            let home = self.home(s & Self::KEY_MASK, cap);
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = s;
                self.slots[j] = 0;
                hole = j;
            }
        }
        Some(old)
    }

    /// Removes `addr`, returning its value.
    pub fn remove(&mut self, addr: u64) -> Option<u64> {
        self.remove_packed(addr)
            .or_else(|| self.spill.remove(&addr))
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let hi = self.hi.unwrap_or(0) << (ALIGN_BITS + Self::KEY_BITS);
        self.slots
            .iter()
            .filter(|&&s| s != 0)
            .map(move |&s| {
                (
                    hi | ((s & Self::KEY_MASK) << ALIGN_BITS),
                    s >> Self::KEY_BITS,
                )
            })
            .chain(self.spill.iter().map(|(&a, &v)| (a, v)))
    }

    /// Visits every entry once: `f(address, value)` returns the new value,
    /// or `None` to remove the entry. New values are written in place
    /// (nothing moves while visiting); removals, and values that no longer
    /// pack, are applied afterwards. Memory beyond the table grows only
    /// with those.
    pub fn update_all(&mut self, mut f: impl FnMut(u64, u64) -> Option<u64>) {
        let hi = self.hi.unwrap_or(0) << (ALIGN_BITS + Self::KEY_BITS);
        let mut later: Vec<(u64, Option<u64>)> = Vec::new();
        for s in &mut self.slots {
            if *s == 0 {
                continue;
            }
            let key = *s & Self::KEY_MASK;
            let addr = hi | (key << ALIGN_BITS);
            match f(addr, *s >> Self::KEY_BITS) {
                Some(v) if v >> VALUE_BITS == 0 => *s = key | (v << Self::KEY_BITS),
                other => later.push((addr, other)),
            }
        }
        for (addr, v) in &mut self.spill {
            match f(*addr, *v) {
                Some(new) => *v = new,
                None => later.push((*addr, None)),
            }
        }
        for (addr, v) in later {
            match v {
                Some(v) => {
                    self.insert(addr, v);
                }
                None => {
                    self.remove(addr);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn update_all_rewrites_removes_and_spills_like_a_hashmap() {
        let mut m: AddrMap<8> = AddrMap::new();
        let mut h: HashMap<u64, u64> = HashMap::new();
        for i in 1..2000u64 {
            let a = 0xffff_8880_0000_0000 + i * 64;
            m.insert(a, i & 0xff);
            h.insert(a, i & 0xff);
        }
        // an unpackable address, in the spill
        m.insert(0x1234_5677, 3);
        h.insert(0x1234_5677, 3);
        let f = |a: u64, v: u64| match a % 3 {
            0 => None,
            1 => Some(v + 1),
            _ => Some(v | 0x1000), // no longer packs: 8 value bits
        };
        m.update_all(f);
        h = h
            .into_iter()
            .filter_map(|(a, v)| f(a, v).map(|v| (a, v)))
            .collect();
        let mut got: Vec<(u64, u64)> = m.iter().collect();
        got.sort_unstable();
        let mut want: Vec<(u64, u64)> = h.into_iter().collect();
        want.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(m.len(), want.len());
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn behaves_like_a_hashmap_under_random_operations() {
        for seed in 1..40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
            let mut m: AddrMap<23> = AddrMap::new();
            let mut r: HashMap<u64, u64> = HashMap::new();
            // Mostly direct-map slab addresses; a few that cannot pack.
            let base = 0xffff_8880_0000_0000u64;
            for step in 0..4000 {
                let x = rng.next();
                let addr = match x % 23 {
                    0 => base + 1 + (x >> 40) % 64,             // unaligned
                    1 => 0xffff_ffff_c000_0000 + (x >> 40) * 8, // other high bits
                    2 => base,                                  // key 0
                    _ => base + ((x >> 20) % 512) * 64,
                };
                let value = if x.is_multiple_of(31) {
                    1 << 30
                } else {
                    (x >> 8) % 5000
                };
                match (x >> 5) % 3 {
                    0 | 1 => assert_eq!(
                        m.insert(addr, value),
                        r.insert(addr, value),
                        "{seed}/{step}"
                    ),
                    _ => assert_eq!(m.remove(addr), r.remove(&addr), "{seed}/{step}"),
                }
                assert_eq!(m.len(), r.len());
                if step % 500 == 0 {
                    for (&a, &v) in &r {
                        assert_eq!(m.get(a), Some(v), "{seed}/{step} {a:#x}");
                    }
                    let mut got: Vec<(u64, u64)> = m.iter().collect();
                    let mut want: Vec<(u64, u64)> = r.iter().map(|(&a, &v)| (a, v)).collect();
                    got.sort_unstable();
                    want.sort_unstable();
                    assert_eq!(got, want, "{seed}/{step}");
                }
            }
        }
    }

    /// Mean distance of the packed entries from their home slots.
    fn mean_displacement<const B: u32>(m: &AddrMap<B>) -> f64 {
        let cap = m.slots.len();
        let total: usize = (0..cap)
            .filter(|&i| m.slots[i] != 0)
            .map(|i| (i + cap - m.home(m.slots[i] & AddrMap::<B>::KEY_MASK, cap)) % cap)
            .sum();
        total as f64 / m.packed as f64
    }

    #[test]
    fn filling_one_map_in_another_maps_order_keeps_probes_short() {
        // Seeding does this: AVC owners as the walk goes, then every
        // anon_vma in the model table's slot order.
        let mut model: AddrMap<26> = AddrMap::new();
        for i in 0..200_000u64 {
            model.insert(0xffff_8000_0000_1000 + i * 0x100, 5);
        }
        let mut owners: AddrMap<23> = AddrMap::new();
        for i in 0..250_000u64 {
            owners.insert(0xffff_8000_0000_1040 + i * 0xc0, 2);
        }
        for (a, _) in model.iter() {
            owners.insert(a, 2);
        }
        let d = mean_displacement(&owners);
        // Linear probing at load <= 0.8 expects ~2.5; one shared hash made it >100.
        assert!(d < 4.0, "mean displacement {d}");
    }

    #[test]
    fn kernel_addresses_take_one_slot_word_each() {
        let mut m: AddrMap<23> = AddrMap::new();
        let n = 100_000u64;
        m.reserve(n as usize);
        let cap = m.slots.len();
        for i in 0..n {
            m.insert(0xffff_8881_0000_0000 + i * 64, i % 4_000_000);
        }
        assert_eq!(m.slots.len(), cap, "reserve made room for all");
        // Updating entries of a full table does not grow it.
        for i in 0..n {
            m.insert(0xffff_8881_0000_0000 + i * 64, 7);
        }
        assert_eq!(m.slots.len(), cap, "updates do not grow");
        assert!(m.spill.is_empty());
        assert!(
            m.heap_bytes() <= 11 * n as usize,
            "{} bytes",
            m.heap_bytes()
        );
        for i in (0..n).step_by(7) {
            assert_eq!(m.remove(0xffff_8881_0000_0000 + i * 64), Some(7));
        }
        assert_eq!(m.get(0xffff_8881_0000_0000 + 64), Some(7));
        m.clear();
        assert!(m.is_empty());
        assert_eq!(m.get(0xffff_8881_0000_0000 + 64), None);
    }
}
