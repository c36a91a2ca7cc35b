//! The raw page store: `pages-<id>.img` is a header padded to one page, then page contents
//! back to back, 4 KiB aligned, so a restore can map the file and copy straight out of it.

use crate::error::{ImageError, Result};
use crate::header::{self, Kind};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::Xxh3;

pub const PAGE_SIZE: usize = 4096;

pub struct PagesWriter {
    file: File,
    path: PathBuf,
    hash: Xxh3,
    offset: u64,
}

impl PagesWriter {
    pub fn new(mut file: File, path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let mut first = [0u8; PAGE_SIZE];
        first[..header::HEADER_LEN].copy_from_slice(&header::encode(Kind::Pages));
        file.write_all(&first)
            .map_err(|e| ImageError::io(&path, e))?;
        let mut hash = Xxh3::new();
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

    pub fn finish(self) -> Result<(File, u64, u64)> {
        Ok((self.file, self.offset, self.hash.digest()))
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
