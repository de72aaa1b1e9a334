//! The log cleaner's key → latest offset map (Kafka's SkimpyOffsetMap): a fixed table of
//! 128-bit key hashes and offsets, 24 bytes a slot, so the cleaner's memory is what
//! `log.cleaner.dedupe.buffer.size` allows and no more. Two keys with the same 128-bit hash
//! would be taken for one; at 2^-64 per pair that is as likely as Kafka's MD5.

use std::hash::{DefaultHasher, Hash, Hasher};

/// Bytes one slot takes.
pub const SLOT_BYTES: usize = 24;
/// At most this share of the slots is filled, so probes stay short (Kafka's default
/// `log.cleaner.io.buffer.load.factor`).
const LOAD_FACTOR: f64 = 0.9;

pub struct OffsetMap {
    /// 0 marks a free slot; a key whose hash is 0 is stored as 1.
    hashes: Vec<u128>,
    offsets: Vec<i64>,
    len: usize,
    max_entries: usize,
}

fn key_hash(key: &[u8]) -> u128 {
    let half = |seed: u8| {
        let mut h = DefaultHasher::new();
        seed.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    };
    let h = ((half(1) as u128) << 64) | half(2) as u128;
    h.max(1)
}

impl OffsetMap {
    /// A map of at most `memory` bytes, and no larger than `expected_keys` need.
    pub fn new(memory: usize, expected_keys: usize) -> Self {
        let by_memory = (memory / SLOT_BYTES).max(2);
        let by_need = ((expected_keys as f64 / LOAD_FACTOR) as usize + 2).max(16);
        let slots = by_memory.min(by_need);
        OffsetMap {
            hashes: vec![0; slots],
            offsets: vec![0; slots],
            len: 0,
            max_entries: ((slots as f64 * LOAD_FACTOR) as usize).max(1),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Room for `n` more keys, whatever they are.
    pub fn has_room_for(&self, n: usize) -> bool {
        self.len + n <= self.max_entries
    }

    /// How full the map is (0..1), for the buffer-utilization metric.
    pub fn utilization(&self) -> f64 {
        self.len as f64 / self.hashes.len() as f64
    }

    fn slot(&self, h: u128) -> usize {
        let n = self.hashes.len();
        let mut i = (h as u64 as usize) % n;
        while self.hashes[i] != 0 && self.hashes[i] != h {
            i = (i + 1) % n;
        }
        i
    }

    /// Record `offset` as the latest of `key`. The caller checks `has_room_for` first.
    pub fn put(&mut self, key: &[u8], offset: i64) {
        let h = key_hash(key);
        let i = self.slot(h);
        if self.hashes[i] == 0 {
            assert!(self.len < self.max_entries, "offset map over its load factor");
            self.hashes[i] = h;
            self.len += 1;
        }
        self.offsets[i] = offset;
    }

    pub fn get(&self, key: &[u8]) -> Option<i64> {
        let i = self.slot(key_hash(key));
        (self.hashes[i] != 0).then(|| self.offsets[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_offset_wins_and_room_is_bounded() {
        let mut m = OffsetMap::new(24 * 100, 1_000_000);
        assert!(m.has_room_for(90) && !m.has_room_for(91));
        for round in 0..3 {
            for k in 0..90 {
                m.put(format!("key-{k}").as_bytes(), round * 100 + k);
            }
        }
        assert_eq!(m.len(), 90);
        assert_eq!(m.get(b"key-7"), Some(207));
        assert_eq!(m.get(b"key-90"), None);
        let small = OffsetMap::new(1 << 30, 10);
        assert!(small.hashes.len() < 100, "sized by the keys expected, not the whole buffer");
    }
}
