//! What the frames carry. Source to destination: the opening (the first encrypted frame:
//! until it decrypts, a peer has only replayed a handshake message, and nothing is made
//! for it), the files of a round (begin with name
//! and size, data, end with the xxh3 of the bytes), the end of a round, then the commit
//! (the source tree is killed) or an abort. Destination to source: ready (a migration
//! slot is the peer's), a round received, the copy running (its pid), or a failure (one
//! line: also "busy").
//!
//! Post-copy (protocol 3): the final round names its pages file as deferred (size and
//! chunk size, no bytes); once the copy runs at the destination its bytes follow as
//! `PAGE` frames (offset, bytes), the chunks the copy waits for first (`WANT`), until the
//! destination answers `ALL_IN`.
//!
//! Growing files (protocol 4): the final round of a pre-copy migration sends its pages
//! file copied before the freeze (pages-2.img) while the dump still writes it: `GROW`
//! (round, name, bytes that follow) then data frames, again after each pass of that copy,
//! other messages in between; `GROWN` (the xxh3 of all its bytes) closes it before the
//! round ends. The file only ever grows at its end, so what came stays true.
//!
//! Every field is bounded on decoding: a name is at most `MAX_NAME` plain characters, a
//! round number below `MAX_ROUNDS`, a message whatever a frame holds.

use crate::error::{HaulError, R};

pub const BEGIN: u8 = 0x01;
pub const READY: u8 = 0x02;
pub const FILE_BEGIN: u8 = 0x10;
pub const DATA: u8 = 0x11;
pub const FILE_END: u8 = 0x12;
/// A data chunk compressed with zstd (`squeeze`).
pub const DATA_ZSTD: u8 = 0x13;
/// Post-copy: a pages file whose bytes come after the copy runs (`PAGE` frames).
pub const DEFERRED: u8 = 0x14;
/// Post-copy: bytes of the deferred pages file, a u64 offset first (handled raw).
pub const PAGE: u8 = 0x15;
/// Bytes appended to the round's growing file: data frames of that many follow.
pub const GROW: u8 = 0x16;
/// The growing file is complete (the xxh3 of all of it).
pub const GROWN: u8 = 0x17;
/// Post-copy (protocol 6): after a chunk's last `PAGE` frame, its index (u32) and the
/// xxh3 of its bytes (u64), both big-endian, as the source hashed them while sending.
pub const CHUNK_SUM: u8 = 0x18;
pub const ROUND_END: u8 = 0x20;
pub const COMMIT: u8 = 0x30;
pub const ABORT: u8 = 0x31;
pub const ACK: u8 = 0x80;
pub const RUNNING: u8 = 0x81;
pub const FAILED: u8 = 0x82;
/// Post-copy: the copy needs this chunk of the deferred pages file now.
pub const WANT: u8 = 0x83;
/// Post-copy: every byte of the deferred pages file is in.
pub const ALL_IN: u8 = 0x84;

pub const MAX_NAME: usize = 64;
/// Rounds of one migration (pre-copy rounds and the final one).
pub const MAX_ROUNDS: u16 = 16;
/// How long the destination's restore may take: the source waits for the verdict longer
/// than this (a source that gave up earlier would resume while the copy starts).
pub const RESTORE_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// A decoded message (data frames are handled without copying, see `serve`).
#[derive(Debug, PartialEq)]
pub enum Msg {
    Begin,
    Ready,
    FileBegin {
        round: u16,
        name: String,
        size: u64,
    },
    FileEnd {
        xxh3: u64,
    },
    Deferred {
        round: u16,
        name: String,
        size: u64,
        chunk_size: u64,
        /// The file's first page (its header: the restore reads it before any chunk).
        head: Vec<u8>,
    },
    Grow {
        round: u16,
        name: String,
        more: u64,
    },
    Grown {
        xxh3: u64,
    },
    RoundEnd {
        round: u16,
        last: bool,
    },
    Commit,
    Abort(String),
    Ack {
        round: u16,
    },
    Running {
        pid: i32,
        restore_ms: u32,
    },
    Failed(String),
    Want {
        chunk: u32,
    },
    AllIn,
}

fn garbage(what: &str) -> HaulError {
    HaulError::Protocol(format!("a malformed {what} message: garbage"))
}

struct Take<'a>(&'a [u8], &'static str);

impl<'a> Take<'a> {
    fn bytes(&mut self, n: usize) -> R<&'a [u8]> {
        if self.0.len() < n {
            return Err(garbage(self.1));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u16(&mut self) -> R<u16> {
        Ok(u16::from_be_bytes(self.bytes(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> R<u32> {
        Ok(u32::from_be_bytes(self.bytes(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> R<u64> {
        Ok(u64::from_be_bytes(self.bytes(8)?.try_into().expect("8")))
    }
    fn text(&mut self, max: usize) -> R<String> {
        let n = self.u16()? as usize;
        if n > max {
            return Err(garbage(self.1));
        }
        let b = self.bytes(n)?;
        // Shown in logs: printable ASCII only.
        Ok(b.iter()
            .map(|&c| {
                if (0x20..0x7f).contains(&c) {
                    c as char
                } else {
                    '?'
                }
            })
            .collect())
    }
    fn done<T>(self, v: T) -> R<T> {
        if self.0.is_empty() {
            Ok(v)
        } else {
            Err(garbage(self.1))
        }
    }
}

/// A plain image file name: what a round's file may be called (never a path).
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b'_')
}

impl Msg {
    pub fn encode(&self) -> (u8, Vec<u8>) {
        let mut b = Vec::new();
        let text = |b: &mut Vec<u8>, s: &str| {
            let s = &s.as_bytes()[..s.len().min(1024)];
            b.extend_from_slice(&(s.len() as u16).to_be_bytes());
            b.extend_from_slice(s);
        };
        let kind = match self {
            Msg::Begin => BEGIN,
            Msg::Ready => READY,
            Msg::FileBegin { round, name, size } => {
                b.extend_from_slice(&round.to_be_bytes());
                b.extend_from_slice(&size.to_be_bytes());
                text(&mut b, name);
                FILE_BEGIN
            }
            Msg::FileEnd { xxh3 } => {
                b.extend_from_slice(&xxh3.to_be_bytes());
                FILE_END
            }
            Msg::Grow { round, name, more } => {
                b.extend_from_slice(&round.to_be_bytes());
                b.extend_from_slice(&more.to_be_bytes());
                text(&mut b, name);
                GROW
            }
            Msg::Grown { xxh3 } => {
                b.extend_from_slice(&xxh3.to_be_bytes());
                GROWN
            }
            Msg::RoundEnd { round, last } => {
                b.extend_from_slice(&round.to_be_bytes());
                b.push(*last as u8);
                ROUND_END
            }
            Msg::Deferred {
                round,
                name,
                size,
                chunk_size,
                head,
            } => {
                b.extend_from_slice(&round.to_be_bytes());
                b.extend_from_slice(&size.to_be_bytes());
                b.extend_from_slice(&chunk_size.to_be_bytes());
                text(&mut b, name);
                b.extend_from_slice(&(head.len() as u16).to_be_bytes());
                b.extend_from_slice(head);
                DEFERRED
            }
            Msg::Want { chunk } => {
                b.extend_from_slice(&chunk.to_be_bytes());
                WANT
            }
            Msg::AllIn => ALL_IN,
            Msg::Commit => COMMIT,
            Msg::Abort(why) => {
                text(&mut b, why);
                ABORT
            }
            Msg::Ack { round } => {
                b.extend_from_slice(&round.to_be_bytes());
                ACK
            }
            Msg::Running { pid, restore_ms } => {
                b.extend_from_slice(&pid.to_be_bytes());
                b.extend_from_slice(&restore_ms.to_be_bytes());
                RUNNING
            }
            Msg::Failed(why) => {
                text(&mut b, why);
                FAILED
            }
        };
        (kind, b)
    }

    pub fn decode(kind: u8, body: &[u8]) -> R<Msg> {
        match kind {
            BEGIN => Take(body, "begin").done(Msg::Begin),
            READY => Take(body, "ready").done(Msg::Ready),
            FILE_BEGIN => {
                let mut t = Take(body, "file");
                let round = t.u16()?;
                let size = t.u64()?;
                let name = t.text(MAX_NAME)?;
                if round >= MAX_ROUNDS || !plain_name(&name) {
                    return Err(garbage("file"));
                }
                t.done(Msg::FileBegin { round, name, size })
            }
            FILE_END => {
                let mut t = Take(body, "file end");
                let xxh3 = t.u64()?;
                t.done(Msg::FileEnd { xxh3 })
            }
            GROW => {
                let mut t = Take(body, "growing file");
                let round = t.u16()?;
                let more = t.u64()?;
                let name = t.text(MAX_NAME)?;
                let pages = ckpt_images::Kind::for_name(&name) == Some(ckpt_images::Kind::Pages);
                if round >= MAX_ROUNDS || !plain_name(&name) || !pages || more == 0 {
                    return Err(garbage("growing file"));
                }
                t.done(Msg::Grow { round, name, more })
            }
            GROWN => {
                let mut t = Take(body, "grown file");
                let xxh3 = t.u64()?;
                t.done(Msg::Grown { xxh3 })
            }
            ROUND_END => {
                let mut t = Take(body, "round end");
                let round = t.u16()?;
                let last = match t.bytes(1)?[0] {
                    0 => false,
                    1 => true,
                    _ => return Err(garbage("round end")),
                };
                t.done(Msg::RoundEnd { round, last })
            }
            DEFERRED => {
                let mut t = Take(body, "deferred file");
                let round = t.u16()?;
                let size = t.u64()?;
                let chunk_size = t.u64()?;
                let name = t.text(MAX_NAME)?;
                let n = t.u16()? as usize;
                if round >= MAX_ROUNDS
                    || !plain_name(&name)
                    || n > ckpt_images::PAGE_SIZE
                    || n as u64 > size
                {
                    return Err(garbage("deferred file"));
                }
                let head = t.bytes(n)?.to_vec();
                t.done(Msg::Deferred {
                    round,
                    name,
                    size,
                    chunk_size,
                    head,
                })
            }
            WANT => {
                let mut t = Take(body, "want");
                let chunk = t.u32()?;
                t.done(Msg::Want { chunk })
            }
            ALL_IN => Take(body, "all in").done(Msg::AllIn),
            COMMIT => Take(body, "commit").done(Msg::Commit),
            ABORT => {
                let mut t = Take(body, "abort");
                let why = t.text(1024)?;
                t.done(Msg::Abort(why))
            }
            ACK => {
                let mut t = Take(body, "ack");
                let round = t.u16()?;
                t.done(Msg::Ack { round })
            }
            RUNNING => {
                let mut t = Take(body, "running");
                let pid = t.u32()? as i32;
                let restore_ms = t.u32()?;
                t.done(Msg::Running { pid, restore_ms })
            }
            FAILED => {
                let mut t = Take(body, "failure");
                let why = t.text(1024)?;
                t.done(Msg::Failed(why))
            }
            k => Err(HaulError::Protocol(format!(
                "a message of unknown kind {k:#x}: garbage"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        for m in [
            Msg::Begin,
            Msg::Ready,
            Msg::FileBegin {
                round: 2,
                name: "pages-1.img".into(),
                size: 1 << 30,
            },
            Msg::FileEnd { xxh3: 7 },
            Msg::Grow {
                round: 4,
                name: "pages-2.img".into(),
                more: 1 << 20,
            },
            Msg::Grown { xxh3: 9 },
            Msg::RoundEnd {
                round: 3,
                last: true,
            },
            Msg::Deferred {
                round: 0,
                name: "pages-1.img".into(),
                size: 1 << 28,
                chunk_size: 1 << 24,
                head: vec![1, 2, 3],
            },
            Msg::Want { chunk: 3 },
            Msg::AllIn,
            Msg::Commit,
            Msg::Abort("why".into()),
            Msg::Ack { round: 1 },
            Msg::Running {
                pid: 42,
                restore_ms: 9,
            },
            Msg::Failed("no".into()),
        ] {
            let (k, b) = m.encode();
            assert_eq!(Msg::decode(k, &b).unwrap(), m);
            // One byte more or less is garbage.
            let mut longer = b.clone();
            longer.push(0);
            assert!(Msg::decode(k, &longer).is_err());
            if !b.is_empty() {
                assert!(Msg::decode(k, &b[..b.len() - 1]).is_err());
            }
        }
        for bad in ["../x", "/etc/passwd", ".hidden", "a/b", "", "x\0y"] {
            let (k, b) = Msg::FileBegin {
                round: 0,
                name: bad.into(),
                size: 1,
            }
            .encode();
            assert!(Msg::decode(k, &b).is_err(), "{bad:?} accepted");
        }
        // Only a pages file grows, and by something.
        for (name, more) in [("core-1.img", 1), ("pages-2.img", 0), ("../pages-2.img", 1)] {
            let (k, b) = Msg::Grow {
                round: 1,
                name: name.into(),
                more,
            }
            .encode();
            assert!(Msg::decode(k, &b).is_err(), "{name:?} {more} accepted");
        }
        assert!(Msg::decode(0x7f, &[]).is_err());
    }
}
