//! The raw page store: `pages-<id>.img` is a header padded to one page, then page contents
//! back to back, 4 KiB aligned, so a restore can map the file and copy straight out of it.

use crate::chunks::{ChunkHasher, CHUNK_SIZE};
use crate::error::{ImageError, Result};
use crate::header::{self, Kind};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const PAGE_SIZE: usize = 4096;
pub const FRAME_MAGIC: [u8; 4] = *b"ZFRM";
pub const FRAME_HEADER: usize = 16;
/// No frame may claim to expand to more than this (dump writes 8 MiB frames).
pub const FRAME_MAX_RAW: u64 = 64 << 20;

/// One zstd frame of a compressed pages file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Offset of its first byte in the uncompressed page stream.
    pub raw_offset: u64,
    pub raw_len: u64,
    /// Where its compressed bytes are in the file, after the frame header.
    pub file_offset: u64,
    pub file_len: u64,
}

/// Walks the frame headers of a compressed pages file of `size` bytes (positional reads
/// of 16 bytes each): every frame must hold whole pages, stay under the size cap and end
/// inside the file, and the last one must end exactly at its end.
pub fn zstd_frames(file: &File, path: &Path, size: u64) -> Result<Vec<Frame>> {
    use std::os::unix::fs::FileExt;
    let mut out = Vec::new();
    let mut at = PAGE_SIZE as u64;
    let mut raw = PAGE_SIZE as u64;
    while at < size {
        let bad = |what: String| {
            ImageError::invalid(path, format!("frame {} at byte {at}: {what}", out.len()))
        };
        let mut head = [0u8; FRAME_HEADER];
        file.read_exact_at(&mut head, at)
            .map_err(|_| bad("truncated frame header".into()))?;
        if head[..4] != FRAME_MAGIC {
            return Err(bad("bad frame magic".into()));
        }
        let raw_len = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes")) as u64;
        let file_len = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) as u64;
        if raw_len == 0 || raw_len % PAGE_SIZE as u64 != 0 || raw_len > FRAME_MAX_RAW {
            return Err(bad(format!("uncompressed length {raw_len}")));
        }
        let file_offset = at + FRAME_HEADER as u64;
        if file_len == 0 || file_offset + file_len > size {
            return Err(bad(format!(
                "compressed length {file_len} runs past the end"
            )));
        }
        out.push(Frame {
            raw_offset: raw,
            raw_len,
            file_offset,
            file_len,
        });
        raw += raw_len;
        at = file_offset + file_len;
    }
    Ok(out)
}

pub struct PagesWriter {
    file: File,
    path: PathBuf,
    chunk_size: u64,
    /// None while the caller hashes the bytes itself (`hash_elsewhere`).
    hash: Option<ChunkHasher>,
    /// Bytes the chunk hashes cover, which must be every byte written (`finish`).
    hashed: u64,
    offset: u64,
    /// Offset in the uncompressed page stream (the same as `offset` for raw pages).
    raw_offset: u64,
    /// `leave_unwritten`: pages are hashed and counted, the file only grows (a hole).
    unwritten: bool,
    /// `leave_unread`: neither read nor hashed; no chunk checksums at all.
    unread: bool,
}

/// The chunk hashing of a pages file, handed to whoever has the bytes in cache first
/// (`PagesWriter::hash_elsewhere`). It must be fed exactly the bytes given to
/// `PagesWriter::write`, in the same order.
pub struct PagesHasher {
    hash: ChunkHasher,
    /// Bytes hashed so far, counted from the start of the file.
    len: u64,
}

impl PagesHasher {
    pub fn update(&mut self, data: &[u8]) {
        self.hash.update(data);
        self.len += data.len() as u64;
    }
}

impl PagesWriter {
    pub fn new(file: File, path: impl Into<PathBuf>) -> Result<Self> {
        Self::with_chunk_size(file, path, CHUNK_SIZE)
    }

    /// With checksums over chunks of `chunk_size` bytes (a multiple of the page size):
    /// smaller chunks for a file read a piece at a time as it arrives (post-copy).
    pub fn with_chunk_size(
        mut file: File,
        path: impl Into<PathBuf>,
        chunk_size: u64,
    ) -> Result<Self> {
        let path = path.into();
        let mut first = [0u8; PAGE_SIZE];
        first[..header::HEADER_LEN].copy_from_slice(&header::encode(Kind::Pages));
        file.write_all(&first)
            .map_err(|e| ImageError::io(&path, e))?;
        let mut hash = ChunkHasher::new(chunk_size);
        hash.update(&first);
        Ok(PagesWriter {
            chunk_size,
            file,
            path,
            hash: Some(hash),
            hashed: PAGE_SIZE as u64,
            offset: PAGE_SIZE as u64,
            raw_offset: PAGE_SIZE as u64,
            unwritten: false,
            unread: false,
        })
    }

    /// The bytes each chunk checksum covers.
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// The file written (in the staging directory until the image is finished).
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Where the next page will land.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Where the next page lands in the page stream that page runs address (the
    /// uncompressed one): a tree's processes write one after the other.
    pub fn raw_offset(&self) -> u64 {
        self.raw_offset
    }

    /// Writes what was written so far to disk (fdatasync): done before a tree is frozen,
    /// so that the inventory's fsync, frozen, does not wait for the journal to write
    /// these bytes out first (ext4's ordered mode, once background writeback started).
    pub fn sync_data(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| ImageError::io(&self.path, e))
    }

    /// Appends one zstd frame holding `raw_len` bytes of pages (see `Compression`).
    pub fn write_frame(&mut self, raw_len: usize, compressed: &[u8]) -> Result<()> {
        // Frames exist only here: whoever took the hasher cannot have seen these bytes.
        let Some(hash) = self.hash.as_mut() else {
            return Err(ImageError::invalid(
                &self.path,
                "a compressed frame written while its chunk hashing was handed out",
            ));
        };
        let mut head = [0u8; FRAME_HEADER];
        head[..4].copy_from_slice(&FRAME_MAGIC);
        head[4..8].copy_from_slice(&(raw_len as u32).to_le_bytes());
        head[8..12].copy_from_slice(&(compressed.len() as u32).to_le_bytes());
        for part in [&head[..], compressed] {
            self.file
                .write_all(part)
                .map_err(|e| ImageError::io(&self.path, e))?;
            hash.update(part);
            self.hashed += part.len() as u64;
            self.offset += part.len() as u64;
        }
        self.raw_offset += raw_len as u64;
        Ok(())
    }

    /// From here on, raw pages given to `write` are hashed and their place kept, but
    /// not written: the file gets a hole there. For a post-copy migration, whose source
    /// sends those bytes from the stopped tree itself once the copy runs (the frozen
    /// dump then costs a read and a hash of the memory, not a write of it).
    pub fn leave_unwritten(&mut self) {
        self.unwritten = true;
    }

    /// Beyond `leave_unwritten`: the caller does not even read the pages (it passes
    /// buffers of whatever they held), nothing is hashed, and the file's entry gets no
    /// chunk checksums (which every restore but a fed one refuses: `check_entry`). For a
    /// post-copy migration whose source hashes each chunk as it sends it from the
    /// stopped tree: the frozen dump then costs neither a read nor a hash of the memory.
    pub fn leave_unread(&mut self) {
        self.unwritten = true;
        self.unread = true;
    }

    /// Whether the pages given to `write` need not be read (`leave_unread`).
    pub fn unread(&self) -> bool {
        self.unread
    }

    /// Appends whole pages.
    pub fn write(&mut self, data: &[u8]) -> Result<u64> {
        debug_assert_eq!(data.len() % PAGE_SIZE, 0);
        let at = self.offset;
        let end = at + data.len() as u64;
        if self.unwritten {
            use std::io::Seek;
            self.file
                .set_len(end)
                .and_then(|()| self.file.seek(std::io::SeekFrom::Start(end)))
                .map_err(|e| ImageError::io(&self.path, e))?;
        } else {
            self.file
                .write_all(data)
                .map_err(|e| ImageError::io(&self.path, e))?;
        }
        if let Some(h) = self.hash.as_mut().filter(|_| !self.unread) {
            h.update(data);
            self.hashed += data.len() as u64;
        }
        self.offset += data.len() as u64;
        self.raw_offset += data.len() as u64;
        Ok(at)
    }

    /// Takes the chunk hashing out of `write` (raw pages only: `write_frame` then fails):
    /// the dump's reader hashes each batch right after copying it out of the task and
    /// leaves the writer thread, the slower half, only the write. Give it back with
    /// `hashed_elsewhere` before `finish`, which checks that it saw as many bytes as were
    /// written.
    pub fn hash_elsewhere(&mut self) -> Option<PagesHasher> {
        self.hash.take().map(|hash| PagesHasher {
            hash,
            len: self.hashed,
        })
    }

    pub fn hashed_elsewhere(&mut self, h: PagesHasher) {
        self.hash = Some(h.hash);
        self.hashed = h.len;
    }

    /// The file, its size, and its chunk checksums with the checksum over them. Refuses
    /// (rather than seal checksums that a restore would reject) unless the hashes cover
    /// exactly the bytes written.
    pub fn finish(self) -> Result<(File, u64, Vec<u64>, u64)> {
        let hash = self.hash.ok_or_else(|| {
            ImageError::invalid(&self.path, "its chunk hashes were never handed back")
        })?;
        if self.unread {
            return Ok((self.file, self.offset, Vec::new(), 0));
        }
        if self.hashed != self.offset {
            return Err(ImageError::invalid(
                &self.path,
                format!(
                    "{} bytes written but {} hashed for its chunk checksums",
                    self.offset, self.hashed
                ),
            ));
        }
        let (chunks, top) = hash.finish();
        Ok((self.file, self.offset, chunks, top))
    }
}

/// A pages file's bytes (read or mapped by the caller: mapping is `unsafe` and lives in
/// ckpt-sys); every lookup is bounds-checked against the file.
pub struct PagesReader<D: AsRef<[u8]>> {
    data: D,
    path: PathBuf,
}

impl<D: AsRef<[u8]>> PagesReader<D> {
    pub fn new(path: &Path, data: D) -> Result<Self> {
        let bytes = data.as_ref();
        header::check(
            path,
            &bytes[..bytes.len().min(header::HEADER_LEN)],
            Kind::Pages,
        )?;
        if bytes.len() < PAGE_SIZE {
            return Err(ImageError::Truncated {
                path: path.into(),
                what: "header page".into(),
            });
        }
        Ok(PagesReader {
            data,
            path: path.into(),
        })
    }

    pub fn len(&self) -> u64 {
        self.data.as_ref().len() as u64
    }

    /// The whole file (what its checksum covers).
    pub fn bytes(&self) -> &[u8] {
        self.data.as_ref()
    }

    pub fn is_empty(&self) -> bool {
        self.data.as_ref().len() <= PAGE_SIZE
    }

    /// `len` bytes at `offset`, refused unless page aligned and inside the page area.
    pub fn slice(&self, offset: u64, len: u64) -> Result<&[u8]> {
        let total = self.data.as_ref().len() as u64;
        match offset.checked_add(len) {
            Some(end)
                if offset >= PAGE_SIZE as u64 && offset % PAGE_SIZE as u64 == 0 && end <= total =>
            {
                Ok(&self.data.as_ref()[offset as usize..end as usize])
            }
            _ => Err(ImageError::invalid(
                &self.path,
                format!(
                    "page run at offset {offset} of {len} bytes lies outside the {total} byte file"
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(dir: &Path) -> PagesWriter {
        let path = dir.join("pages.img");
        PagesWriter::new(File::create(&path).unwrap(), path).unwrap()
    }

    /// The dump's reader hashes raw pages itself: the chunk digests must be exactly the
    /// ones the writer would have computed, and a writer whose hasher was never handed back
    /// must not seal a file with no checksums.
    /// Pages left unwritten (post-copy's frozen dump) get the digests of the same pages
    /// written, and a file of the same size that holds only its header: a hole after it.
    #[test]
    fn unwritten_pages_keep_their_place_and_digests() {
        let t = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..40 * PAGE_SIZE).map(|i| (i * 7 + 1) as u8).collect();
        let mut written = writer(t.path());
        written.write(&data).unwrap();
        let (_, size_a, chunks_a, top_a) = written.finish().unwrap();

        let path = t.path().join("hole.img");
        let mut hole = PagesWriter::new(File::create(&path).unwrap(), &path).unwrap();
        hole.leave_unwritten();
        for part in data.chunks(3 * PAGE_SIZE) {
            hole.write(part).unwrap();
        }
        let (_, size_b, chunks_b, top_b) = hole.finish().unwrap();
        assert_eq!((size_a, &chunks_a, top_a), (size_b, &chunks_b, top_b));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, size_b);
        assert_eq!(
            &bytes[..header::HEADER_LEN],
            &header::encode(Kind::Pages)[..]
        );
        assert!(bytes[PAGE_SIZE..].iter().all(|&b| b == 0));
    }

    #[test]
    fn hashing_elsewhere_gives_the_same_digests() {
        let t = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..40 * PAGE_SIZE)
            .map(|i| (i * 13 + i / 4096) as u8)
            .collect();

        let mut inside = writer(t.path());
        for part in data.chunks(7 * PAGE_SIZE) {
            inside.write(part).unwrap();
        }
        let (_, size_a, chunks_a, top_a) = inside.finish().unwrap();

        let mut outside = writer(t.path());
        let mut h = outside.hash_elsewhere().unwrap();
        for part in data.chunks(7 * PAGE_SIZE) {
            h.update(part);
            outside.write(part).unwrap();
        }
        outside.hashed_elsewhere(h);
        let (_, size_b, chunks_b, top_b) = outside.finish().unwrap();
        assert_eq!((size_a, &chunks_a, top_a), (size_b, &chunks_b, top_b));

        let mut lost = writer(t.path());
        let _ = lost.hash_elsewhere();
        lost.write(&data[..PAGE_SIZE]).unwrap();
        assert!(lost.write_frame(PAGE_SIZE, b"zstd").is_err());
        let err = lost.finish().unwrap_err().to_string();
        assert!(err.contains("never handed back"), "{err}");

        // A hasher that missed a batch (or saw one twice) is caught before the seal.
        let mut short = writer(t.path());
        let mut h = short.hash_elsewhere().unwrap();
        short.write(&data[..2 * PAGE_SIZE]).unwrap();
        h.update(&data[..PAGE_SIZE]);
        short.hashed_elsewhere(h);
        let err = short.finish().unwrap_err().to_string();
        assert!(err.contains("bytes written but"), "{err}");
    }
}
