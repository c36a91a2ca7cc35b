//! zstd on the wire, where it pays: each data frame's chunk is compressed (level 1) and
//! sent compressed only if that saves at least an eighth; after 16 chunks in a row that
//! did not pay, the next 256 go raw without trying (random-looking memory costs a try
//! per 272 chunks, not one per chunk). The destination decompresses into a buffer of
//! the frame's size at most: a frame that would inflate beyond it is garbage.

use crate::error::{HaulError, R};

/// Chunks in a row that did not pay before trying stops for a while.
const GIVE_UP_AFTER: u32 = 16;
/// Chunks sent raw without trying, once given up.
const PAUSE: u32 = 256;

pub struct Squeezer {
    z: Option<zstd::bulk::Compressor<'static>>,
    out: Vec<u8>,
    misses: u32,
    paused: u32,
}

/// What to send for a chunk.
pub enum Packed<'a> {
    Raw(&'a [u8]),
    Zstd(&'a [u8]),
}

impl Squeezer {
    /// `on`: try at all (`--no-zstd` turns it off).
    pub fn new(on: bool) -> Squeezer {
        Squeezer {
            z: on.then(|| zstd::bulk::Compressor::new(1).ok()).flatten(),
            out: Vec::new(),
            misses: 0,
            paused: 0,
        }
    }

    pub fn pack<'a>(&'a mut self, chunk: &'a [u8]) -> Packed<'a> {
        let Some(z) = self.z.as_mut() else {
            return Packed::Raw(chunk);
        };
        if self.paused > 0 {
            self.paused -= 1;
            return Packed::Raw(chunk);
        }
        self.out.clear();
        self.out
            .reserve(zstd::zstd_safe::compress_bound(chunk.len()));
        let paid = z
            .compress_to_buffer(chunk, &mut self.out)
            .is_ok_and(|n| n < chunk.len() - chunk.len() / 8);
        if paid {
            self.misses = 0;
            return Packed::Zstd(&self.out);
        }
        self.misses += 1;
        if self.misses >= GIVE_UP_AFTER {
            self.misses = 0;
            self.paused = PAUSE;
        }
        Packed::Raw(chunk)
    }
}

/// The destination's side.
pub struct Unsqueezer {
    dz: Option<zstd::bulk::Decompressor<'static>>,
    out: Vec<u8>,
}

impl Unsqueezer {
    pub fn new() -> Unsqueezer {
        Unsqueezer {
            dz: None,
            out: vec![0; crate::wire::MAX_PLAIN],
        }
    }

    /// The chunk `packed` holds, at most `limit` bytes (and never more than a frame).
    pub fn unpack(&mut self, packed: &[u8], limit: u64) -> R<&[u8]> {
        let dz = match &mut self.dz {
            Some(d) => d,
            None => self.dz.insert(
                zstd::bulk::Decompressor::new()
                    .map_err(|e| HaulError::Protocol(format!("zstd: {e}")))?,
            ),
        };
        let cap = (limit as usize).min(self.out.len());
        let n = dz
            .decompress_to_buffer(packed, &mut self.out[..cap])
            .map_err(|e| {
                HaulError::Protocol(format!(
                    "a compressed frame that does not decompress within {cap} bytes ({e}): garbage"
                ))
            })?;
        Ok(&self.out[..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pays_or_goes_raw_and_is_bounded() {
        let mut s = Squeezer::new(true);
        let zeros = vec![0u8; 65000];
        let packed = match s.pack(&zeros) {
            Packed::Zstd(p) => p.to_vec(),
            Packed::Raw(_) => panic!("zeros did not compress"),
        };
        let mut u = Unsqueezer::new();
        assert_eq!(u.unpack(&packed, 65000).unwrap(), &zeros[..]);
        // Declared to be shorter than it inflates to: refused.
        assert!(u.unpack(&packed, 1000).is_err());
        assert!(u.unpack(b"garbage", 65000).is_err());
        // Random-looking bytes go raw, and after 16 misses without a try.
        let mut x = 0x9e3779b97f4a7c15u64;
        let noise: Vec<u8> = (0..65000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for _ in 0..GIVE_UP_AFTER {
            assert!(matches!(s.pack(&noise), Packed::Raw(_)));
        }
        assert_eq!(s.paused, PAUSE);
    }
}
