//! Post-copy at the source: the final round's pages file, sent after the round's other
//! files (`postcopy` is the destination's side).
//!
//! Until the destination answers `Running`, only the chunks its restore asks for go out
//! (the downtime is the restore's, not the memory's); then every chunk not sent yet, in
//! order, in the background, while a chunk the copy asks for (a fault in it) goes first,
//! between two frames. The tree stays frozen here the whole time: every byte comes from
//! the pages file of a tree that cannot change, and the tree is still whole should the
//! link break before `ALL_IN`.

use crate::error::{HaulError, R};
use crate::msg::{self, Msg};
use crate::wire::{Link, MAX_PLAIN};
use ckpt_images::units::ms;
use std::collections::VecDeque;
use std::hash::Hasher;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The pages file deferred by the final round.
pub(crate) struct Pages<'a> {
    pub path: &'a Path,
    pub size: u64,
    pub chunk_size: u64,
    /// Its pages are in the stopped tree, not in the file (a hole past its header:
    /// `PagesWriter::leave_unwritten`).
    pub tree: Option<TreePages>,
}

/// Where the pages of a file left unwritten are: the stopped process's memory, read with
/// process_vm_readv (/proc/PID/mem where that refuses, as the dump would have). The dump
/// neither read nor hashed them (`PagesWriter::leave_unread`): `push` hashes each chunk
/// as it sends it (`CHUNK_SUM`), and the tree cannot change before it is killed; the
/// destination's restore checks each chunk against that hash before a page of it is
/// placed.
pub(crate) struct TreePages {
    pid: nix::unistd::Pid,
    /// (offset in the file, address, bytes), by offset.
    runs: Vec<(u64, u64, u64)>,
}

impl TreePages {
    /// The stored runs of the pagemap in the image `dir` of one process, `pid` here (the
    /// image may name it by its pid inside a pid namespace).
    pub(crate) fn read(dir: &Path, pid: i32) -> R<TreePages> {
        let d = ckpt_images::ImageDir::open_unverified(dir)?;
        let &[named] = d.inventory().pids.as_slice() else {
            return Err(HaulError::Protocol(format!(
                "{}: not the image of one process",
                dir.display()
            )));
        };
        let mut r = d.records(
            &ckpt_images::names::pagemap(named),
            ckpt_images::Kind::Pagemap,
        )?;
        let _: ckpt_images::pb::PagemapHead = r.expect("PagemapHead")?;
        let page = ckpt_images::PAGE_SIZE as u64;
        let mut runs: Vec<(u64, u64, u64)> = r
            .rest::<ckpt_images::pb::PageRun>("PageRun")?
            .into_iter()
            .filter(|r| !r.from_parent && r.nr_pages > 0)
            .map(|r| (r.offset, r.vaddr, r.nr_pages * page))
            .collect();
        runs.sort_unstable();
        Ok(TreePages {
            pid: nix::unistd::Pid::from_raw(pid),
            runs,
        })
    }

    /// Fills `buf` with the file's bytes from `start`: the runs' from the tree, the rest
    /// (the header page) from `file`.
    fn read_at(&self, file: &std::fs::File, path: &Path, buf: &mut [u8], start: u64) -> R<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = start + done as u64;
            let i = self.runs.partition_point(|&(o, _, n)| o + n <= pos);
            let left = (buf.len() - done) as u64;
            let piece = &mut buf[done..];
            let n = match self.runs.get(i) {
                Some(&(o, a, n)) if o <= pos => {
                    let n = (o + n - pos).min(left) as usize;
                    let addr = a + (pos - o);
                    let dst = &mut piece[..n];
                    if ckpt_sys::mem::read_ranges(self.pid, &[(addr, n)], dst).is_err() {
                        ckpt_sys::mem::peek(self.pid, addr, dst).map_err(|e| {
                            HaulError::Protocol(format!(
                                "reading pid {} at {addr:#x}: {e}",
                                self.pid
                            ))
                        })?;
                    }
                    n
                }
                next => {
                    let upto = next.map_or(u64::MAX, |&(o, _, _)| o);
                    let n = (upto - pos).min(left) as usize;
                    file.read_exact_at(&mut piece[..n], pos)
                        .map_err(|e| HaulError::io(format!("{}", path.display()), e))?;
                    n
                }
            };
            done += n;
        }
        Ok(())
    }
}

/// What post-copy did.
pub(crate) struct Pushed {
    pub pid: i32,
    pub restore_ms: u32,
    /// When `Running` came.
    pub running_at: Instant,
    /// From `Running` to `ALL_IN`.
    pub ms: f64,
    /// Chunks the destination asked for (its restore's, then its faults').
    pub asked: u32,
    pub asked_before_running: u32,
}

/// A chunk being sent, how far, and the hash of what went so far.
type Cursor = Option<(usize, u64, Box<twox_hash::XxHash3_64>)>;

/// Sends `p` as the destination asks and then the rest; returns once it is all in.
pub(crate) async fn push(link: &mut Link, p: &Pages<'_>, verdict_wait: Duration) -> R<Pushed> {
    let file = std::fs::File::open(p.path)
        .map_err(|e| HaulError::io(format!("{}", p.path.display()), e))?;
    let n = p.size.div_ceil(p.chunk_size) as usize;
    let chunk_len = |i: usize| p.chunk_size.min(p.size - i as u64 * p.chunk_size);
    let mut sent = vec![false; n];
    let mut left = n;
    let mut queue: VecDeque<usize> = VecDeque::new();
    let (mut urgent, mut bg): (Cursor, Cursor) = (None, None);
    let mut next_bg = 0usize;
    let mut running: Option<(i32, u32, Instant)> = None;
    let (mut asked, mut asked_before) = (0u32, 0u32);
    let mut buf = vec![0u8; MAX_PLAIN - 1];
    loop {
        // Whatever the destination said meanwhile (without waiting), or, with nothing to
        // send, the next thing it says.
        let idle = left == 0 || (running.is_none() && urgent.is_none() && queue.is_empty());
        let heard = if idle {
            let (k, b) = link.recv_within(verdict_wait).await?;
            Some(Msg::decode(k, b)?)
        } else {
            match poll_once(link.peer_spoke()).await {
                Some(Ok(true)) => {
                    let (k, b) = link.recv().await?;
                    Some(Msg::decode(k, b)?)
                }
                Some(Ok(false)) => {
                    return Err(HaulError::Protocol(
                        "the destination closed the link".into(),
                    ))
                }
                Some(Err(e)) => return Err(e),
                None => None,
            }
        };
        match heard {
            None => {}
            Some(Msg::Want { chunk }) => {
                let c = chunk as usize;
                if c >= n {
                    return Err(HaulError::Protocol(format!(
                        "the destination asked for chunk {c} of {n}"
                    )));
                }
                asked += 1;
                if running.is_none() {
                    asked_before += 1;
                }
                let busy = |cur: &Cursor| cur.as_ref().is_some_and(|(b, _, _)| *b == c);
                if !sent[c] && !busy(&urgent) && !busy(&bg) {
                    queue.push_back(c);
                }
            }
            Some(Msg::Running { pid, restore_ms }) if running.is_none() => {
                running = Some((pid, restore_ms, Instant::now()));
                tracing::info!(
                    pid,
                    restore_ms,
                    "post-copy: the copy runs at the destination; its memory follows"
                );
                crate::migrate::hold("haul-post-copy");
            }
            Some(Msg::AllIn) if left == 0 && running.is_some() => {
                let (pid, restore_ms, at) = running.expect("checked");
                return Ok(Pushed {
                    pid,
                    restore_ms,
                    running_at: at,
                    ms: ms(at),
                    asked,
                    asked_before_running: asked_before,
                });
            }
            Some(Msg::Failed(why)) => return Err(HaulError::Destination(why)),
            Some(other) => {
                return Err(HaulError::Protocol(format!(
                    "the destination answered {other:?} during post-copy"
                )))
            }
        }
        if left == 0 {
            continue;
        }
        if urgent.is_none() {
            while let Some(c) = queue.pop_front() {
                if !sent[c] {
                    urgent = Some((c, 0, Box::default()));
                    break;
                }
            }
        }
        if urgent.is_none() && bg.is_none() && running.is_some() {
            while next_bg < n && sent[next_bg] {
                next_bg += 1;
            }
            if next_bg < n {
                bg = Some((next_bg, 0, Box::default()));
                next_bg += 1;
            }
        }
        let cur = if urgent.is_some() {
            &mut urgent
        } else if bg.is_some() {
            &mut bg
        } else {
            continue;
        };
        let (c, off, mut hash) = cur.take().expect("picked");
        let start = c as u64 * p.chunk_size + off;
        let len = (chunk_len(c) - off).min((buf.len() - 8) as u64) as usize;
        buf[..8].copy_from_slice(&start.to_be_bytes());
        match &p.tree {
            Some(t) => t.read_at(&file, p.path, &mut buf[8..8 + len], start)?,
            None => file
                .read_exact_at(&mut buf[8..8 + len], start)
                .map_err(|e| HaulError::io(format!("{}", p.path.display()), e))?,
        }
        hash.write(&buf[8..8 + len]);
        link.send(msg::PAGE, &buf[..8 + len]).await?;
        if off + len as u64 == chunk_len(c) {
            // The chunk's checksum, of the bytes just sent: the frozen dump did not
            // read them (`PagesWriter::leave_unread`), the destination's restore checks
            // the chunk against this before a page of it is placed.
            let mut sum = [0u8; 12];
            sum[..4].copy_from_slice(&(c as u32).to_be_bytes());
            sum[4..].copy_from_slice(&(hash.finish() ^ damage(c)).to_be_bytes());
            link.send(msg::CHUNK_SUM, &sum).await?;
            sent[c] = true;
            left -= 1;
        } else {
            *cur = Some((c, off + len as u64, hash));
        }
    }
}

/// `f`'s output if it is ready at its first poll (a timeout of zero would wait for the
/// timer's next millisecond tick: a millisecond per frame).
async fn poll_once<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match f.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

/// TEST ONLY: `CKPT_TEST_BAD_CHUNK_SUM=N` sends a wrong checksum for chunk N (what the
/// destination must catch before the source's tree goes); 0 for every chunk otherwise.
fn damage(chunk: usize) -> u64 {
    static BAD: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let bad = BAD.get_or_init(|| {
        std::env::var("CKPT_TEST_BAD_CHUNK_SUM")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    u64::from(*bad == Some(chunk))
}
