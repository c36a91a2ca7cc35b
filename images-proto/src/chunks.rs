//! Checksums of large files in fixed-size chunks.
//!
//! A single xxh3 over a pages file can only be computed by one thread, front to back, so
//! verifying a 4 GiB image before a restore would cost a quarter of a second on one CPU.
//! Hashing it in chunks lets every CPU verify a share, and lets a reader that only needs a
//! part (the lazy pager) verify just that part before using it. The inventory lists the
//! chunk digests; the file's `xxh3` is then the xxh3 of those digests (little-endian,
//! back to back), so the sealed inventory still pins the whole file with one number.

use crate::error::{ImageError, Result};
use crate::hash::{xxh3_64, Xxh3};
use crate::pb;
use std::path::Path;

/// 16 MiB: a 1 GiB file has 64 chunks to spread over the CPUs, and verifying one chunk
/// on demand takes about a millisecond.
pub const CHUNK_SIZE: u64 = 16 << 20;

/// Hashes a stream chunk by chunk as it is written (or read back).
pub struct ChunkHasher {
    chunk_size: u64,
    cur: Xxh3,
    cur_len: u64,
    digests: Vec<u64>,
}

impl ChunkHasher {
    pub fn new(chunk_size: u64) -> Self {
        assert!(chunk_size > 0);
        ChunkHasher {
            chunk_size,
            cur: Xxh3::new(),
            cur_len: 0,
            digests: Vec::new(),
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = (self.chunk_size - self.cur_len) as usize;
            let (now, rest) = data.split_at(room.min(data.len()));
            self.cur.update(now);
            self.cur_len += now.len() as u64;
            if self.cur_len == self.chunk_size {
                self.digests.push(self.cur.digest());
                self.cur.reset();
                self.cur_len = 0;
            }
            data = rest;
        }
    }

    /// The chunk digests (the last chunk may be short) and the digest over them.
    pub fn finish(mut self) -> (Vec<u64>, u64) {
        if self.cur_len > 0 {
            self.digests.push(self.cur.digest());
        }
        let top = digest_of(&self.digests);
        (self.digests, top)
    }
}

/// The file-level checksum of a chunked file.
pub fn digest_of(chunks: &[u64]) -> u64 {
    let bytes: Vec<u8> = chunks.iter().flat_map(|d| d.to_le_bytes()).collect();
    xxh3_64(&bytes)
}

/// Checks that `entry`'s chunk list is consistent with its size and its file checksum, so
/// a verified chunk is as good as a verified file. Returns the chunk size.
pub fn check_entry(path: &Path, entry: &pb::ImageFile) -> Result<u64> {
    let cs = entry.chunk_size;
    if cs == 0 || cs % crate::PAGE_SIZE as u64 != 0 {
        return Err(ImageError::invalid(
            path,
            format!("inventory lists a chunk size of {cs} bytes"),
        ));
    }
    let want = entry.size.div_ceil(cs);
    if entry.chunk_xxh3.len() as u64 != want {
        return Err(ImageError::invalid(
            path,
            format!(
                "inventory lists {} chunk checksums for {} bytes in {cs}-byte chunks",
                entry.chunk_xxh3.len(),
                entry.size
            ),
        ));
    }
    if digest_of(&entry.chunk_xxh3) != entry.xxh3 {
        return Err(ImageError::Checksum { path: path.into() });
    }
    Ok(cs)
}

/// Verifies a whole chunked file held in memory on `threads` threads (chunks dealt out
/// round-robin). `prefetch` runs on each chunk before it is hashed: for a mapped file the
/// caller populates the range in one call instead of taking a fault per 64 KiB; `release`
/// runs after (the caller can unmap it, so the check of a large file does not hold it all
/// in memory).
pub fn verify(
    path: &Path,
    data: &[u8],
    entry: &pb::ImageFile,
    threads: usize,
    prefetch: &(dyn Fn(usize, usize) + Sync),
    release: &(dyn Fn(usize, usize) + Sync),
) -> Result<()> {
    let cs = check_entry(path, entry)? as usize;
    if data.len() as u64 != entry.size {
        return Err(ImageError::Size {
            path: path.into(),
            found: data.len() as u64,
            expected: entry.size,
        });
    }
    let threads = threads.clamp(1, entry.chunk_xxh3.len().max(1));
    let bad = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t..entry.chunk_xxh3.len()).step_by(threads).find(|&i| {
                        let ok = chunk_ok(data, cs, i, entry.chunk_xxh3[i], prefetch);
                        release(i * cs, cs);
                        !ok
                    })
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|w| w.join().expect("a hashing thread does not panic"))
            .min()
    });
    match bad {
        None => Ok(()),
        Some(i) => Err(ImageError::invalid(
            path,
            format!(
                "checksum mismatch in bytes {}..{} (image corrupted)",
                i * cs,
                ((i + 1) * cs).min(data.len())
            ),
        )),
    }
}

/// Verifies chunk `i` of a chunked file held in `data`.
pub fn chunk_ok(
    data: &[u8],
    chunk_size: usize,
    i: usize,
    want: u64,
    prefetch: &(dyn Fn(usize, usize) + Sync),
) -> bool {
    let start = i * chunk_size;
    let end = (start + chunk_size).min(data.len());
    if start >= end {
        return false;
    }
    prefetch(start, end - start);
    xxh3_64(&data[start..end]) == want
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry_for(data: &[u8], cs: u64) -> pb::ImageFile {
        let mut h = ChunkHasher::new(cs);
        for part in data.chunks(1000) {
            h.update(part);
        }
        let (chunks, top) = h.finish();
        pb::ImageFile {
            name: "pages-1.img".into(),
            size: data.len() as u64,
            xxh3: top,
            chunk_size: cs,
            chunk_xxh3: chunks,
            ..Default::default()
        }
    }

    #[test]
    fn streaming_and_parallel_agree_and_catch_a_flipped_byte() {
        let mut data: Vec<u8> = (0..3 * 8192 + 4096).map(|i| (i * 7 % 251) as u8).collect();
        let e = entry_for(&data, 8192);
        assert_eq!(e.chunk_xxh3.len(), 4);
        let p = Path::new("pages-1.img");
        for threads in 1..=3 {
            verify(p, &data, &e, threads, &|_, _| (), &|_, _| ()).unwrap();
        }
        data[2 * 8192 + 5] ^= 1;
        let err = verify(p, &data, &e, 2, &|_, _| (), &|_, _| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bytes 16384..24576"), "{err}");
    }

    #[test]
    fn a_chunk_list_that_does_not_fit_the_file_is_refused() {
        let data = vec![1u8; 3 * 4096];
        let p = Path::new("pages-1.img");
        let mut e = entry_for(&data, 4096);
        e.chunk_xxh3.pop();
        assert!(check_entry(p, &e).is_err());
        let mut e = entry_for(&data, 4096);
        e.chunk_xxh3.swap(0, 1);
        e.chunk_xxh3[0] ^= 1;
        assert!(matches!(
            check_entry(p, &e),
            Err(ImageError::Checksum { .. })
        ));
        let mut e = entry_for(&data, 4096);
        e.chunk_size = 0;
        assert!(check_entry(p, &e).is_err());
        let e = entry_for(&data, 4096);
        assert!(verify(p, &data[..8192], &e, 2, &|_, _| (), &|_, _| ()).is_err());
    }
}
