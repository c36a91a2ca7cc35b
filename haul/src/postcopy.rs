//! Post-copy at the destination: the final round's pages file arrives after the copy
//! runs.
//!
//! The file is made at its full size (a hole until written), and the restore runs with
//! `--lazy --page-feed DIR/feed.sock`: its puppet and then its pager ask this side for a
//! chunk before they read it (`restore/src/feed.rs`). One loop here waits for the restore
//! to end, forwards the chunks asked for to the source (`WANT`), writes the `PAGE` frames
//! where they belong and tells the feed each chunk that is complete, with the checksum
//! the source sent after it (`CHUNK_SUM`, protocol 6: the source's frozen dump no
//! longer reads the memory, so the inventory may list no chunk checksums). Once the restore ran,
//! the source hears `Running`; once every chunk is in, `ALL_IN`, and the source kills its
//! tree and commits.
//!
//! A link that breaks before every chunk is in: the feed hears that nothing more comes,
//! the copy (which cannot go on: its missing pages block it) is killed with its
//! namespace, and the source, which held its tree frozen and whole, resumes it. The
//! copy never reads zeros for a page that did not arrive.

use crate::error::{HaulError, R};
use crate::msg::{self, Msg, RESTORE_LIMIT};
use crate::wire::Link;
use std::collections::HashMap;
use std::hash::Hasher;
use std::os::unix::fs::FileExt;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use twox_hash::XxHash3_64;

/// The most chunks a deferred file may have (16 MiB chunks: 16 TiB).
const MAX_CHUNKS: u64 = 1 << 20;

/// The deferred pages file of the final round.
pub(crate) struct Deferred {
    file: std::fs::File,
    size: u64,
    chunk_size: u64,
}

impl Deferred {
    /// Makes `path` (new) with `size` bytes, a hole but for `head` at its start (the
    /// header the restore checks first; chunk 0 comes whole later all the same).
    pub(crate) fn create(path: &Path, size: u64, chunk_size: u64, head: &[u8]) -> R<Deferred> {
        if chunk_size == 0
            || chunk_size % ckpt_images::PAGE_SIZE as u64 != 0
            || size.div_ceil(chunk_size) > MAX_CHUNKS
        {
            return Err(HaulError::Protocol(format!(
                "a deferred file of {size} bytes in {chunk_size}-byte chunks: garbage"
            )));
        }
        let file = crate::serve::open_new(path)?;
        file.set_len(size)
            .and_then(|()| file.write_all_at(head, 0))
            .map_err(|e| HaulError::io(format!("{}", path.display()), e))?;
        Ok(Deferred {
            file,
            size,
            chunk_size,
        })
    }

    fn chunks(&self) -> usize {
        self.size.div_ceil(self.chunk_size) as usize
    }

    fn chunk_len(&self, i: usize) -> u64 {
        self.chunk_size
            .min(self.size - (i as u64 * self.chunk_size).min(self.size))
    }
}

/// What ended the loop badly: the restore, or the link (the copy must go).
enum Lost {
    Restore(HaulError),
    Link(String),
}

/// Restores the last round lazily, feeding its pages from the link (see the module doc).
pub(crate) async fn finish(
    link: &mut Link,
    ckpt: &Path,
    dir: &Path,
    name: &str,
    last: u16,
    d: Deferred,
    timeout: std::time::Duration,
) -> R<()> {
    let sock = dir.join("feed.sock");
    let listener = tokio::net::UnixListener::bind(&sock)
        .map_err(|e| HaulError::io(format!("{}", sock.display()), e))?;
    let mut sp = crate::restore::spawn(
        ckpt,
        dir,
        last,
        &["--lazy".as_ref(), "--page-feed".as_ref(), sock.as_os_str()],
    )?;
    let n = d.chunks();
    let mut got = vec![0u64; n];
    let mut summed = vec![false; n];
    // The hash of each chunk being received, checked against the source's `CHUNK_SUM`.
    let mut hashing: HashMap<usize, XxHash3_64> = HashMap::new();
    let mut done = 0usize;
    let mut asked = vec![false; n];
    // Chunks complete before the restore connected: told once it does.
    let mut notes: Vec<u8> = Vec::new();
    let mut feed: Option<tokio::net::unix::OwnedWriteHalf> = None;
    let (want_tx, mut want_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let mut running: Option<i32> = None;
    let mut all_in_sent = false;
    let limit = tokio::time::sleep(RESTORE_LIMIT);
    tokio::pin!(limit);
    // Once the copy runs, the source sends without pause until every chunk is in:
    // silence for `timeout` is a cut link.
    let mut heard = tokio::time::Instant::now();
    let lost = loop {
        let quiet = tokio::time::sleep_until(heard + timeout);
        tokio::select! {
            _ = quiet, if running.is_some() && !all_in_sent => {
                break Lost::Link(format!("no page from the source for {} s (the link is cut, or the source died)", timeout.as_secs()));
            }
            s = sp.child.wait(), if running.is_none() => {
                let copy = match s {
                    Ok(status) => sp.outcome(status),
                    Err(e) => Err(HaulError::io("waiting for the restore", e)),
                };
                let copy = match copy {
                    Ok(c) => c,
                    Err(e) => break Lost::Restore(e),
                };
                running = Some(copy.pid);
                heard = tokio::time::Instant::now();
                tracing::warn!(migration = name, pid = copy.pid, restore_ms = copy.restore_ms, "restored, running (post-copy: its memory follows)");
                crate::serve::announce(name, copy.pid);
                let (k, b) = Msg::Running { pid: copy.pid, restore_ms: copy.restore_ms }.encode();
                if let Err(e) = link.send(k, &b).await {
                    break Lost::Link(format!("telling the source that the copy runs: {e}"));
                }
                if done == n {
                    let (k, b) = Msg::AllIn.encode();
                    if let Err(e) = link.send(k, &b).await {
                        break Lost::Link(e.to_string());
                    }
                    all_in_sent = true;
                }
            }
            _ = &mut limit, if running.is_none() => {
                break Lost::Restore(HaulError::Protocol(format!(
                    "the restore took over {} s", RESTORE_LIMIT.as_secs()
                )));
            }
            conn = listener.accept(), if feed.is_none() => {
                let Ok((conn, _)) = conn else { continue };
                let (mut r, mut w) = conn.into_split();
                let tx = want_tx.clone();
                tokio::spawn(async move {
                    let mut b = [0u8; 4];
                    while r.read_exact(&mut b).await.is_ok() {
                        if tx.send(u32::from_le_bytes(b)).is_err() {
                            break;
                        }
                    }
                });
                let _ = w.write_all(&notes).await;
                notes.clear();
                feed = Some(w);
            }
            Some(c) = want_rx.recv() => {
                let i = c as usize;
                if i < n && got[i] < d.chunk_len(i) && !asked[i] {
                    asked[i] = true;
                    let (k, b) = Msg::Want { chunk: c }.encode();
                    if let Err(e) = link.send(k, &b).await {
                        break Lost::Link(e.to_string());
                    }
                }
            }
            spoke = link.peer_spoke() => {
                match spoke {
                    Ok(true) => {}
                    Ok(false) => break Lost::Link("the source closed the link".into()),
                    Err(e) => break Lost::Link(e.to_string()),
                }
                let (kind, body) = match link.recv().await {
                    Ok(m) => m,
                    Err(e) => break Lost::Link(e.to_string()),
                };
                heard = tokio::time::Instant::now();
                if kind == msg::PAGE {
                    if let Err(e) = place(&d, &mut got, &mut hashing, body) {
                        break Lost::Link(e.to_string());
                    }
                    continue;
                }
                if kind == msg::CHUNK_SUM {
                    match summed_chunk(&d, &got, &mut summed, &mut hashing, body) {
                        Ok(note) => {
                            done += 1;
                            match feed.as_mut() {
                                Some(w) => {
                                    let _ = w.write_all(&note).await;
                                }
                                None => notes.extend_from_slice(&note),
                            }
                            if done == n && running.is_some() {
                                let (k, b) = Msg::AllIn.encode();
                                if let Err(e) = link.send(k, &b).await {
                                    break Lost::Link(e.to_string());
                                }
                                all_in_sent = true;
                            }
                        }
                        Err(e) => break Lost::Link(e.to_string()),
                    }
                    continue;
                }
                match Msg::decode(kind, body) {
                    Ok(Msg::Commit) if all_in_sent => {
                        tracing::info!(migration = name, pid = ?running, "committed: the source tree is gone");
                        return Ok(());
                    }
                    Ok(Msg::Abort(why)) => break Lost::Link(format!("the source gave up: {why}")),
                    Ok(other) => break Lost::Link(format!("unexpected {other:?} during post-copy")),
                    Err(e) => break Lost::Link(e.to_string()),
                }
            }
        }
    };
    // Nothing more comes: the feed says so (a pager waiting for a chunk kills the copy).
    if let Some(w) = feed.as_mut() {
        let _ = w.write_all(&feed_note(u32::MAX, 0)).await;
    }
    match lost {
        Lost::Restore(e) => {
            crate::restore::undo(&mut sp.child, &sp.pidfile).await;
            Err(e)
        }
        Lost::Link(why) if all_in_sent => {
            // Every page is here: the copy needs nothing more of the source.
            match why.strip_prefix("the source gave up: ") {
                Some(w) => {
                    if let Some(pid) = running {
                        crate::restore::kill_copy(pid);
                    }
                    Err(HaulError::Protocol(format!(
                        "the source resumed its tree ({w}): the copy is killed"
                    )))
                }
                None => {
                    tracing::warn!(migration = name, "no commit from the source: {why}");
                    Ok(())
                }
            }
        }
        Lost::Link(why) => {
            match running {
                Some(pid) => {
                    crate::restore::kill_copy(pid);
                    tracing::error!(
                        migration = name,
                        pid,
                        "post-copy: {why}, {done} of {n} chunks of memory in: the copy (pid {pid}) cannot go on and is killed; the source resumes its tree, frozen and intact until now"
                    );
                }
                None => crate::restore::undo(&mut sp.child, &sp.pidfile).await,
            }
            Err(HaulError::Protocol(format!(
                "post-copy: {why}; no copy runs here"
            )))
        }
    }
}

/// What the feed is told of a chunk: its index and checksum (`restore/src/feed.rs`).
fn feed_note(chunk: u32, xxh3: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&chunk.to_le_bytes());
    b[4..].copy_from_slice(&xxh3.to_le_bytes());
    b
}

/// Takes one `CHUNK_SUM` (a u32 chunk, its u64 xxh3), which must follow all of that
/// chunk's bytes, come once, and match what arrived (checked here, before `ALL_IN` lets
/// the source kill its tree: a mismatch ends the migration with the source's tree whole;
/// the restore checks the file's bytes again before it places a page): the note for the
/// feed, which then counts the chunk in.
fn summed_chunk(
    d: &Deferred,
    got: &[u64],
    summed: &mut [bool],
    hashing: &mut HashMap<usize, XxHash3_64>,
    body: &[u8],
) -> R<[u8; 12]> {
    let garbage = || HaulError::Protocol("a chunk checksum out of place: garbage".into());
    let (c, sum) = match body {
        [c @ .., _, _, _, _, _, _, _, _] if c.len() == 4 => (
            u32::from_be_bytes(c.try_into().expect("4")),
            u64::from_be_bytes(body[4..].try_into().expect("8")),
        ),
        _ => return Err(garbage()),
    };
    let i = c as usize;
    if i >= got.len() || got[i] != d.chunk_len(i) || summed[i] {
        return Err(garbage());
    }
    let here = hashing.remove(&i).ok_or_else(garbage)?.finish();
    if here != sum {
        return Err(HaulError::Protocol(format!(
            "chunk {i} of the pages file does not match the checksum the source sent \
             ({here:#018x} against {sum:#018x})"
        )));
    }
    summed[i] = true;
    Ok(feed_note(c, sum))
}

/// Chunks that may be arriving at once (the source sends one it was asked for between
/// two frames of another).
const IN_FLIGHT: usize = 4;

/// Writes one `PAGE` frame (a u64 offset, then bytes within one chunk, each chunk front
/// to back) into the file, hashing them.
fn place(
    d: &Deferred,
    got: &mut [u64],
    hashing: &mut HashMap<usize, XxHash3_64>,
    body: &[u8],
) -> R<()> {
    let garbage = || HaulError::Protocol("a page frame out of place: garbage".into());
    if body.len() <= 8 {
        return Err(garbage());
    }
    let off = u64::from_be_bytes(body[..8].try_into().expect("8"));
    let data = &body[8..];
    let c = (off / d.chunk_size) as usize;
    let end = off.checked_add(data.len() as u64).ok_or_else(garbage)?;
    if c >= got.len()
        || end > (c as u64 * d.chunk_size + d.chunk_len(c))
        || off != c as u64 * d.chunk_size + got[c]
    {
        return Err(garbage());
    }
    if got[c] == 0 {
        if hashing.len() >= IN_FLIGHT {
            return Err(garbage());
        }
        hashing.insert(c, XxHash3_64::new());
    }
    hashing.get_mut(&c).ok_or_else(garbage)?.write(data);
    d.file
        .write_all_at(data, off)
        .map_err(|e| HaulError::io("writing the pages file", e))?;
    got[c] += data.len() as u64;
    if got[c] > d.chunk_len(c) {
        return Err(garbage());
    }
    Ok(())
}
