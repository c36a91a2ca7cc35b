//! A pages file that is still arriving (`restore --lazy --page-feed SOCKET`, post-copy
//! migration): the file has its full size but only the chunks the feeder said are
//! written hold their bytes; the rest reads zeros.
//!
//! Before any chunk is read (its checksum first: `fill::verify_chunks` for what the
//! puppet copies, `lazy.rs` for what the pager serves), `arrived` asks the feeder for it
//! and waits. The feeder (`ckpt haul serve`) answers with the index of each chunk it
//! wrote, in any order, and the chunk's xxh3 as the source computed it while sending:
//! a pages file whose inventory entry lists no chunk checksums (the source's frozen dump
//! did not read its memory: `PagesWriter::leave_unread`) is checked against those. If it says it never will (u32::MAX) or the socket ends, every chunk
//! still missing counts as lost: the caller treats it as damaged, so the process is
//! killed before it reads a byte of it (it is blocked on that missing page meanwhile):
//! a broken link never lets it read zeros.
//!
//! No thread of its own (the pager is forked from a single-threaded ckpt): whoever waits
//! reads the socket, one reader at a time, and wakes the others after every message.
//! Asks are a u32; answers a u32 and a u64 (its xxh3), little-endian.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Condvar, Mutex, OnceLock};

struct State {
    have: Vec<bool>,
    /// The feeder's checksum of each chunk it wrote.
    sums: Vec<u64>,
    asked: Vec<bool>,
    /// The feeder gave up, or its socket ended.
    lost: bool,
    /// Someone is reading the socket.
    reading: bool,
}

struct Feed {
    sock: UnixStream,
    state: Mutex<State>,
    cv: Condvar,
    /// The inventory lists no chunk checksums: the feeder's are the ones to check.
    fed: bool,
}

static FEED: OnceLock<Feed> = OnceLock::new();

/// Answer of the feeder: a chunk's index and its xxh3.
const ANSWER: usize = 12;

/// Connects to the feeder at `path` for a pages file of `chunks` chunks; `fed`: its
/// inventory entry has no chunk checksums (see `placeholders`).
pub fn connect(path: &Path, chunks: usize, fed: bool) -> Result<(), String> {
    let sock =
        UnixStream::connect(path).map_err(|e| format!("--page-feed {}: {e}", path.display()))?;
    let feed = Feed {
        sock,
        state: Mutex::new(State {
            have: vec![false; chunks],
            sums: vec![0; chunks],
            asked: vec![false; chunks],
            lost: false,
            reading: false,
        }),
        cv: Condvar::new(),
        fed,
    };
    FEED.set(feed)
        .map_err(|_| "--page-feed: a feed is connected already".to_string())
}

/// Whether chunk `i` of the pages file holds its bytes: at once without a feed, else
/// once the feeder says so (asking for it first); false if it never will.
pub fn arrived(i: usize) -> bool {
    let Some(f) = FEED.get() else {
        return true;
    };
    let mut st = f.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if st.have.get(i).copied().unwrap_or(false) {
            return true;
        }
        if st.lost || i >= st.have.len() {
            return false;
        }
        if !st.asked[i] {
            st.asked[i] = true;
            // A feeder that has sent every chunk may have closed its end already: the
            // answer can still be among the messages not read yet (below; their end is
            // the EOF that says the rest never comes).
            let _ = (&f.sock).write_all(&(i as u32).to_le_bytes());
        }
        if st.reading {
            st = f.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            continue;
        }
        st.reading = true;
        drop(st);
        let mut b = [0u8; ANSWER];
        let got = (&f.sock).read_exact(&mut b).map(|_| {
            let (c, sum) = b.split_at(4);
            (
                u32::from_le_bytes(c.try_into().expect("4 bytes")),
                u64::from_le_bytes(sum.try_into().expect("8 bytes")),
            )
        });
        st = f.state.lock().unwrap_or_else(|e| e.into_inner());
        st.reading = false;
        match got {
            Ok((c, sum)) if (c as usize) < st.have.len() => {
                st.have[c as usize] = true;
                st.sums[c as usize] = sum;
            }
            Ok(_) | Err(_) => {
                if !st.lost {
                    tracing::error!(
                        "the page feed ended before every chunk arrived: the pages not here \
                         never will"
                    );
                }
                st.lost = true;
            }
        }
        f.cv.notify_all();
    }
}

/// The checksum chunk `i` must match, once `arrived(i)`: the inventory's (`listed`), or
/// the feeder's when the inventory lists none.
pub fn expected(i: usize, listed: u64) -> u64 {
    match FEED.get() {
        Some(f) if f.fed => {
            let st = f.state.lock().unwrap_or_else(|e| e.into_inner());
            st.sums.get(i).copied().unwrap_or(!listed)
        }
        _ => listed,
    }
}

/// Fills in a fed pages file's entry (no chunk checksums: `PagesWriter::leave_unread`)
/// with one placeholder per chunk and the matching file checksum, so that its chunk
/// count is known everywhere; `expected` gives each chunk's real checksum. Only with a
/// feed: a restore without one refuses such an entry (`check_entry`).
pub fn placeholders(entry: &mut ckpt_images::pb::ImageFile) -> Result<(), String> {
    let cs = entry.chunk_size;
    if cs == 0 || cs % ckpt_images::PAGE_SIZE as u64 != 0 {
        return Err(format!(
            "{}: a chunk size of {cs} bytes in the inventory",
            entry.name
        ));
    }
    entry.chunk_xxh3 = vec![0; entry.size.div_ceil(cs) as usize];
    entry.xxh3 = ckpt_images::chunks::digest_of(&entry.chunk_xxh3);
    Ok(())
}
