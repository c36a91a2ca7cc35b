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
    hash: ChunkHasher,
    offset: u64,
}

impl PagesWriter {
    pub fn new(mut file: File, path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let mut first = [0u8; PAGE_SIZE];
        first[..header::HEADER_LEN].copy_from_slice(&header::encode(Kind::Pages));
        file.write_all(&first)
            .map_err(|e| ImageError::io(&path, e))?;
        let mut hash = ChunkHasher::new(CHUNK_SIZE);
        hash.update(&first);
        Ok(PagesWriter {
            file,
            path,
            hash,
            offset: PAGE_SIZE as u64,
        })
    }

    /// Where the next page will land.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Appends one zstd frame holding `raw_len` bytes of pages (see `Compression`).
    pub fn write_frame(&mut self, raw_len: usize, compressed: &[u8]) -> Result<()> {
        let mut head = [0u8; FRAME_HEADER];
        head[..4].copy_from_slice(&FRAME_MAGIC);
        head[4..8].copy_from_slice(&(raw_len as u32).to_le_bytes());
        head[8..12].copy_from_slice(&(compressed.len() as u32).to_le_bytes());
        for part in [&head[..], compressed] {
            self.file
                .write_all(part)
                .map_err(|e| ImageError::io(&self.path, e))?;
            self.hash.update(part);
            self.offset += part.len() as u64;
        }
        Ok(())
    }

    /// Appends whole pages.
    pub fn write(&mut self, data: &[u8]) -> Result<u64> {
        debug_assert_eq!(data.len() % PAGE_SIZE, 0);
        let at = self.offset;
        self.file
            .write_all(data)
            .map_err(|e| ImageError::io(&self.path, e))?;
        self.hash.update(data);
        self.offset += data.len() as u64;
        Ok(at)
    }

    /// The file, its size, and its chunk checksums with the checksum over them.
    pub fn finish(self) -> Result<(File, u64, Vec<u64>, u64)> {
        let (chunks, top) = self.hash.finish();
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
