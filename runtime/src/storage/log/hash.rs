//! The 64-bit hash of record ids and keys that the `.ids` and `.keys` files and the in-memory
//! maps are keyed by. It is part of the on-disk format, so it is written here rather than taken
//! from a crate whose output may change between versions: a word-at-a-time multiply-rotate over
//! the bytes (FxHash's step) seeded with the length, then MurmurHash3's `fmix64` finalizer so
//! every input bit reaches every output bit. Equal hashes are always confirmed against the
//! stored record, so a collision costs a read, never a wrong answer.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

const K: u64 = 0x517c_c1b7_2722_0a95;

/// The hash of an id or key (`docs/storage-format.md`, "Hash").
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    fmix64(h)
}

fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A hasher for maps keyed by a [`hash64`] value: the key already is a hash, so it is used as is.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A map keyed by hashes.
pub type HashKeyed<V> = HashMap<u64, V, BuildHasherDefault<PassThrough>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_values_and_length_matters() {
        // The hash is on disk: these values must never change.
        assert_eq!(hash64(b""), 0);
        assert_ne!(hash64(b"a"), hash64(b"a\0"));
        assert_ne!(hash64(b"abcdefgh"), hash64(b"abcdefgh\0"));
        assert_eq!(hash64(b"order-42"), hash64(b"order-42"));
        let distinct: std::collections::HashSet<_> = (0..10_000)
            .map(|i| hash64(format!("id-{i}").as_bytes()))
            .collect();
        assert_eq!(distinct.len(), 10_000);
    }
}
