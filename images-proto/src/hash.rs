//! XXH3-64, the one checksum of the image format (records, the inventory seal, pages
//! chunks, the vDSO).
//!
//! Behind this module so that every crate hashes the same way and the implementation
//! can change without touching the format: twox-hash picks AVX2 at run time where the CPU
//! has it (about 2x the SSE2 code a portable build gets otherwise on data in cache, ~20
//! against ~40 ms per GiB on the reference VM; from memory both wait on memory), which
//! matters because dump hashes every page it writes, restore every page before it forks,
//! and the lazy pager every chunk it serves.
//! The digests are XXH3's, seed 0: identical to any other implementation (tested below).

use std::hash::Hasher;

/// XXH3-64 of `data` in one call.
pub fn xxh3_64(data: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(data)
}

/// Streaming XXH3-64: `update` as often as needed, `digest` any time.
pub struct Xxh3(twox_hash::XxHash3_64);

impl Default for Xxh3 {
    fn default() -> Self {
        Self::new()
    }
}

impl Xxh3 {
    pub fn new() -> Self {
        Xxh3(twox_hash::XxHash3_64::new())
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.write(data);
    }

    /// The digest of everything so far (the state is kept: more updates may follow).
    pub fn digest(&self) -> u64 {
        self.0.finish()
    }

    pub fn reset(&mut self) {
        *self = Self::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..300_000u32).map(|i| (i * 31 + i / 4096) as u8).collect()
    }

    /// XXH3-64 (seed 0) digests as computed by xxhash-rust 0.8, which wrote the images of
    /// earlier ckpt versions: they must still verify. The long input takes the
    /// vectorised stripe loop (AVX2 here), the short ones the scalar paths.
    #[test]
    fn digests_are_xxh3s() {
        assert_eq!(xxh3_64(b""), 0x2d06800538d394c2);
        assert_eq!(xxh3_64(b"a"), 0xe6c632b61e964e1f);
        assert_eq!(xxh3_64(b"abc"), 0x78af5f94892f3950);
        assert_eq!(xxh3_64(b"ckpt"), 0x1706a06eedcbaa94);
        assert_eq!(xxh3_64(&sample()), 0xb90f042ffe97a163);
    }

    #[test]
    fn streaming_matches_one_shot_at_every_split() {
        let data = sample();
        for len in [
            0, 1, 16, 17, 128, 129, 240, 241, 1024, 1025, 4096, 65_537, 300_000,
        ] {
            let want = xxh3_64(&data[..len]);
            for cut in [0, 1, len / 3, len / 2, len.saturating_sub(1), len].map(|c| c.min(len)) {
                let mut h = Xxh3::new();
                h.update(&data[..cut]);
                h.update(&data[cut..len]);
                assert_eq!(h.digest(), want, "len {len} cut {cut}");
            }
        }
        let mut h = Xxh3::new();
        h.update(b"junk");
        h.reset();
        h.update(b"abc");
        assert_eq!(h.digest(), xxh3_64(b"abc"));
    }
}
