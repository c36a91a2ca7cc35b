//! Length-delimited protobuf records: `varint length` then the message bytes.
//!
//! Readers cap every length before allocating: an image is untrusted input at restore.

use crate::error::{ImageError, Result};
use crate::hash::Xxh3;
use crate::header::{self, Kind, HEADER_LEN};
use prost::Message;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The largest record: a socket's description carries its queues (a TCP receive queue
/// grows with the buffer's autotuning, past 16 MiB under load), everything else is small.
/// Bounded by what a whole file may hold, so a hostile length allocates no more than the
/// file already did; the writer refuses what a reader would.
pub const MAX_RECORD: u64 = 128 << 20;
/// A whole record file is read into memory; refuse anything bigger than this up front.
pub const MAX_RECORD_FILE: u64 = 256 << 20;

/// Writes records to any `Write`, keeping the running checksum and size.
pub struct RecordWriter<W: Write> {
    out: W,
    path: PathBuf,
    hash: Xxh3,
    size: u64,
    /// Records written so far (the next one's index).
    records: usize,
}

impl<W: Write> RecordWriter<W> {
    pub fn new(out: W, path: impl Into<PathBuf>, kind: Kind) -> Result<Self> {
        let mut w = RecordWriter {
            out,
            path: path.into(),
            hash: Xxh3::new(),
            size: 0,
            records: 0,
        };
        w.write_raw(&header::encode(kind))?;
        Ok(w)
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| ImageError::io(&self.path, e))?;
        self.hash.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    pub fn write<M: Message>(&mut self, msg: &M) -> Result<()> {
        let len = msg.encoded_len() as u64;
        if len > MAX_RECORD {
            return Err(ImageError::RecordTooLarge {
                path: self.path.clone(),
                index: self.records,
                len,
                limit: MAX_RECORD,
            });
        }
        let buf = msg.encode_length_delimited_to_vec();
        self.records += 1;
        self.write_raw(&buf)
    }

    /// Checksum of everything written so far (used by the inventory seal).
    pub fn digest(&self) -> u64 {
        self.hash.digest()
    }

    pub fn finish(mut self) -> Result<(W, u64, u64)> {
        self.out
            .flush()
            .map_err(|e| ImageError::io(&self.path, e))?;
        Ok((self.out, self.size, self.hash.digest()))
    }
}

/// Iterates the records of one image file held in memory.
pub struct RecordReader {
    path: PathBuf,
    data: Vec<u8>,
    pos: usize,
    index: usize,
}

impl RecordReader {
    /// Reads `path` whole, checks its header and size cap.
    /// Like every image file, it must be a regular file, not a symlink (a symlink to
    /// /dev/zero would otherwise be read until memory runs out).
    pub fn open(path: &Path, kind: Kind) -> Result<Self> {
        use std::io::Read;
        let file = crate::dir::open_nofollow(path)?;
        let len = file.metadata().map_err(|e| ImageError::io(path, e))?.len();
        let too_big = |len: u64| {
            ImageError::invalid(
                path,
                format!("{len} bytes is larger than any record image may be ({MAX_RECORD_FILE})"),
            )
        };
        if len > MAX_RECORD_FILE {
            return Err(too_big(len));
        }
        let mut data = Vec::with_capacity(len as usize);
        file.take(MAX_RECORD_FILE + 1)
            .read_to_end(&mut data)
            .map_err(|e| ImageError::io(path, e))?;
        if data.len() as u64 > MAX_RECORD_FILE {
            return Err(too_big(data.len() as u64));
        }
        Self::from_bytes(path, data, kind)
    }

    pub fn from_bytes(path: &Path, data: Vec<u8>, kind: Kind) -> Result<Self> {
        header::check(path, &data, kind)?;
        Ok(RecordReader {
            path: path.into(),
            data,
            pos: HEADER_LEN,
            index: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Offset of the next record: the seal covers the bytes before it.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// The next record decoded as `M`, or `None` at a clean end of file.
    pub fn next<M: Message + Default>(&mut self, what: &'static str) -> Result<Option<M>> {
        if self.at_end() {
            return Ok(None);
        }
        let rest = &self.data[self.pos..];
        let (len, used) = decode_varint(rest).ok_or_else(|| ImageError::Truncated {
            path: self.path.clone(),
            what: format!("length of record {}", self.index),
        })?;
        if len > MAX_RECORD {
            return Err(ImageError::RecordTooLarge {
                path: self.path.clone(),
                index: self.index,
                len,
                limit: MAX_RECORD,
            });
        }
        let len = len as usize;
        if rest.len() - used < len {
            return Err(ImageError::Truncated {
                path: self.path.clone(),
                what: format!(
                    "record {} ({} of {len} bytes present)",
                    self.index,
                    rest.len() - used
                ),
            });
        }
        let msg = M::decode(&rest[used..used + len]).map_err(|e| ImageError::Decode {
            path: self.path.clone(),
            index: self.index,
            message: what,
            reason: e.to_string(),
        })?;
        self.pos += used + len;
        self.index += 1;
        Ok(Some(msg))
    }

    /// Like `next`, but a missing record is an error.
    pub fn expect<M: Message + Default>(&mut self, what: &'static str) -> Result<M> {
        let index = self.index;
        self.next(what)?.ok_or_else(|| ImageError::Truncated {
            path: self.path.clone(),
            what: format!("file: record {index} ({what}) missing"),
        })
    }

    /// All remaining records as `M`.
    pub fn rest<M: Message + Default>(&mut self, what: &'static str) -> Result<Vec<M>> {
        let mut out = Vec::new();
        while let Some(m) = self.next(what)? {
            out.push(m);
        }
        Ok(out)
    }
}

/// A protobuf varint; `None` if the bytes end inside it or it runs past 10 bytes.
fn decode_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    fn sample() -> Vec<u8> {
        let mut w = RecordWriter::new(Vec::new(), "t.img", Kind::Core).unwrap();
        w.write(&pb::Rlimit {
            resource: 7,
            cur: 1024,
            max: 4096,
        })
        .unwrap();
        w.write(&pb::Rlimit {
            resource: 3,
            cur: 1,
            max: 2,
        })
        .unwrap();
        w.finish().unwrap().0
    }

    #[test]
    fn round_trip() {
        let mut r = RecordReader::from_bytes(Path::new("t.img"), sample(), Kind::Core).unwrap();
        let all: Vec<pb::Rlimit> = r.rest("Rlimit").unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].cur, 1024);
        assert_eq!(all[1].max, 2);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = sample();
        for cut in 0..full.len() {
            let res =
                RecordReader::from_bytes(Path::new("t.img"), full[..cut].to_vec(), Kind::Core)
                    .and_then(|mut r| r.rest::<pb::Rlimit>("Rlimit"));
            match res {
                Err(_) => {}
                // A cut exactly between records is a shorter valid file.
                Ok(v) => assert!(v.len() < 2, "cut at {cut} decoded everything"),
            }
        }
    }

    #[test]
    fn huge_length_prefix_is_refused_before_allocating() {
        let mut data = header::encode(Kind::Core).to_vec();
        data.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        let mut r = RecordReader::from_bytes(Path::new("t.img"), data, Kind::Core).unwrap();
        let err = r.next::<pb::Rlimit>("Rlimit").unwrap_err();
        assert!(matches!(err, ImageError::RecordTooLarge { .. }), "{err}");
    }

    #[test]
    fn wrong_version_and_kind_are_named() {
        let mut data = sample();
        data[6] = 9;
        let err = RecordReader::from_bytes(Path::new("t.img"), data, Kind::Core)
            .err()
            .unwrap();
        assert!(err.to_string().contains("version 9"), "{err}");
        let err = RecordReader::from_bytes(Path::new("t.img"), sample(), Kind::Mm)
            .err()
            .unwrap();
        assert!(matches!(err, ImageError::WrongKind { .. }), "{err}");
    }
}
