//! A pages file that is still arriving (`restore --lazy --page-feed SOCKET`, post-copy
//! migration): the file has its full size but only the chunks the feeder said are
//! written hold their bytes; the rest reads zeros.
//!
//! Before any chunk is read (its checksum first: `fill::verify_chunks` for what the
//! puppet copies, `lazy.rs` for what the pager serves), `arrived` asks the feeder for it
//! and waits. The feeder (`ckpt haul serve`) answers with the indexes of the chunks it
//! wrote, in any order. If it says it never will (u32::MAX) or the socket ends, every chunk
//! still missing counts as lost: the caller treats it as damaged, so the process is
//! killed before it reads a byte of it (it is blocked on that missing page meanwhile):
//! a broken link never lets it read zeros.
//!
//! No thread of its own (the pager is forked from a single-threaded ckpt): whoever waits
//! reads the socket, one reader at a time, and wakes the others after every message.
//! Messages are u32, little-endian, both ways.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Condvar, Mutex, OnceLock};

struct State {
    have: Vec<bool>,
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
}

static FEED: OnceLock<Feed> = OnceLock::new();

/// Connects to the feeder at `path` for a pages file of `chunks` chunks.
pub fn connect(path: &Path, chunks: usize) -> Result<(), String> {
    let sock =
        UnixStream::connect(path).map_err(|e| format!("--page-feed {}: {e}", path.display()))?;
    let feed = Feed {
        sock,
        state: Mutex::new(State {
            have: vec![false; chunks],
            asked: vec![false; chunks],
            lost: false,
            reading: false,
        }),
        cv: Condvar::new(),
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
        let mut b = [0u8; 4];
        let got = (&f.sock).read_exact(&mut b).map(|_| u32::from_le_bytes(b));
        st = f.state.lock().unwrap_or_else(|e| e.into_inner());
        st.reading = false;
        match got {
            Ok(c) if (c as usize) < st.have.len() => st.have[c as usize] = true,
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
