//! The copy an incremental dump (`--prev-images-dir`, not a pre-dump) makes before it
//! freezes the tree: what was written since the previous image is copied while the tree
//! still runs, in passes (each only what the one before missed), into the image's own
//! pages-2.img, so that frozen, only what was written during the last pass is left to
//! copy. Without it the frozen copy holds everything written since the previous image,
//! which for a process rewriting 50 MiB/s is the whole time since the pre-dump began.
//!
//! A pass reads the written pages of each tracked process and protects them again in the
//! same walk (PAGEMAP_SCAN with PM_SCAN_WP_MATCHING over the whole address space: VMAs not
//! registered are skipped, so a layout changing under the walk cannot fail it half-way),
//! then copies them. A page written again after the walk is reported again by the next
//! pass or by the frozen scan (`track::arm`), which copies it then; a page not reported
//! since was not written since its last copy, which then holds its content. Every page
//! protected again is reported to ckpt and copied: a pass that fails for a process (any
//! error of its walk) drops what the passes learnt of it, and its memory is copied whole,
//! frozen.
//!
//! After each pass a `LiveSink` (live migration) may take the bytes the file holds so far
//! before the next pass begins: what the tree wrote meanwhile is the next pass's, and the
//! file is only ever appended to (its header page is written first and never again), so
//! a prefix once taken stays true.
//!
//! The first pass draws a new round token for each tracker (`track.rs`): from then on the
//! previous image is no base for another dump (the pages protected again here are not in
//! it), whether or not this dump completes; the frozen part accepts only that token.

use crate::pages::{self, Buffers, Run};
use crate::track::{self, Parent};
use crate::DumpError;
use ckpt_images::{pb, PagesWriter, PAGE_SIZE};
use ckpt_sys::proc::Pagemap;
use ckpt_sys::Pid;
use std::collections::HashMap;
use std::time::Instant;

const PAGE: u64 = PAGE_SIZE as u64;
/// Passes at most.
const MAX_PASSES: usize = 5;
/// A pass copying at most this much is the last: what it leaves is a few ms of copy.
const SMALL: u64 = 4 << 20;
/// A pass copying more than this share of the one before it is the last: the tree
/// writes about as fast as it is copied, another pass would not shrink the frozen copy.
const SHRINK_NUM: u64 = 3;
const SHRINK_DEN: u64 = 4;

/// Told how far pages-2.img is written, after each pass and before the next one begins.
pub trait LiveSink {
    /// The first `len` bytes of the pages file at `path` are written and stay as they
    /// are. May block (the next pass waits); an error ends the dump, the tree untouched.
    fn written(&self, path: &std::path::Path, len: u64) -> Result<(), DumpError>;

    /// Whether the frozen copy's pages file (`pages-1.img`) is left unwritten and unread:
    /// its pages placed in the pagemap but neither read nor hashed, the file a hole and
    /// its inventory entry without chunk checksums (`PagesWriter::leave_unread`), because
    /// the caller sends those bytes from the stopped tree itself and hashes each chunk
    /// as it sends it (post-copy migration: the tree stays stopped until every byte is at
    /// the destination, so what it sends is what the dump would have read).
    fn pages_unwritten(&self) -> bool {
        false
    }
}

/// What the passes learnt of one process.
pub struct Live {
    pub tracker: (i32, u64),
    pub start_time: u64,
    /// The token this dump registered for the tracker.
    pub round: u64,
    /// Every page the chain holds for it (from the previous image, links counted from
    /// this image).
    pub parent_pages: Vec<pb::ParentRun>,
    /// The latest copy of every page copied here, in this image's pages-2.img (link 0),
    /// sorted by address, disjoint.
    pub copied: Vec<pb::ParentRun>,
}

/// What the passes copied, by pid.
#[derive(Default)]
pub struct LiveCopies {
    pub by_pid: HashMap<i32, Live>,
}

impl LiveCopies {
    pub fn get(&self, pid: Pid) -> Option<&Live> {
        self.by_pid.get(&pid.as_raw())
    }
}

/// One tracked process during the passes.
struct Tracked {
    pid: Pid,
    pagemap: Pagemap,
    live: Live,
}

/// Copies, while the tree runs, what each process of `pids` tracked since `parent` wrote
/// since, into `pages` (pages-2.img), pass after pass until a pass is small or stops
/// shrinking. A process not tracked since the previous image is left to the frozen part.
pub fn run(
    pids: &[Pid],
    parent: &Parent,
    pages: &mut PagesWriter,
    buffers: &mut Buffers,
    progress: &dyn ckpt_images::progress::Progress,
    sink: Option<&dyn LiveSink>,
) -> Result<LiveCopies, DumpError> {
    let t0 = Instant::now();
    let mut procs: Vec<Tracked> = pids
        .iter()
        .filter_map(|&pid| match start(pid, parent) {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(%pid, "not copied before the freeze: {e}");
                None
            }
        })
        .collect();
    let mut prev = u64::MAX;
    let mut passes = 0;
    while !procs.is_empty() && passes < MAX_PASSES {
        ckpt_sys::abort::check()?;
        let t = Instant::now();
        let mut bytes = 0u64;
        let mut i = 0;
        while i < procs.len() {
            match pass(&mut procs[i], pages, buffers, progress) {
                Ok(b) => {
                    bytes += b;
                    i += 1;
                }
                Err(e @ DumpError::Image(_)) => return Err(e),
                Err(e) => {
                    let p = procs.swap_remove(i);
                    tracing::info!(pid = %p.pid, "copy before the freeze dropped ({e}): its memory is copied whole, frozen");
                }
            }
        }
        passes += 1;
        tracing::debug!(
            pass = passes,
            mib = ckpt_images::units::mib(bytes),
            ms = ckpt_images::units::ms(t),
            "copied before the freeze"
        );
        if let Some(s) = sink.filter(|_| bytes > 0) {
            let t = Instant::now();
            s.written(pages.path(), pages.offset())?;
            tracing::debug!(
                ms = ckpt_images::units::ms(t),
                "handed over before the freeze"
            );
        }
        if bytes <= SMALL || bytes * SHRINK_DEN > prev * SHRINK_NUM {
            break;
        }
        if passes == 1 {
            // The bulk is written now, and the next passes copy what the tree wrote
            // meanwhile: on disk before the freeze rather than waited for during it.
            let t = Instant::now();
            pages.sync_data()?;
            tracing::debug!(ms = ckpt_images::units::ms(t), "synced before the freeze");
        }
        prev = bytes;
    }
    let out = LiveCopies {
        by_pid: procs
            .into_iter()
            .map(|p| (p.pid.as_raw(), p.live))
            .collect(),
    };
    tracing::info!(
        processes = out.by_pid.len(),
        passes,
        mib = ckpt_images::units::mib(pages.raw_offset().saturating_sub(PAGE)),
        ms = ckpt_images::units::ms(t0),
        "copied before the freeze"
    );
    Ok(out)
}

/// Takes `pid`'s tracker if the previous image armed it and nothing re-armed it since,
/// and draws this dump's round for it.
fn start(pid: Pid, parent: &Parent) -> Result<Option<Tracked>, DumpError> {
    let Some(c) = track::continuing(pid, parent)? else {
        return Ok(None);
    };
    let pagemap = Pagemap::open(pid)?;
    let round = track::rearm(c.tracker.1, pid, c.start_time)?;
    Ok(Some(Tracked {
        pid,
        pagemap,
        live: Live {
            tracker: c.tracker,
            start_time: c.start_time,
            round,
            parent_pages: c.parent_pages,
            copied: Vec::new(),
        },
    }))
}

/// One pass over one process: the pages written since its last scan, protected again and
/// copied. Returns the bytes copied.
fn pass(
    p: &mut Tracked,
    pages: &mut PagesWriter,
    buffers: &mut Buffers,
    progress: &dyn ckpt_images::progress::Progress,
) -> Result<u64, DumpError> {
    let maps = ckpt_sys::proc::maps(p.pid)?;
    // The user address space ([vsyscall] is above it and never tracked).
    let user = maps.iter().filter(|m| m.end <= 1 << 63);
    let (Some(lo), Some(hi)) = (
        user.clone().map(|m| m.start).min(),
        user.map(|m| m.end).max(),
    ) else {
        return Ok(0);
    };
    let mut written = Vec::new();
    p.pagemap.take_written_registered(lo, hi, &mut written)?;
    if written.is_empty() {
        return Ok(0);
    }
    let runs: Vec<Run> = written
        .iter()
        .map(|&(s, e)| Run {
            vaddr: s,
            nr_pages: (e - s) / PAGE,
            unreadable: false,
        })
        .collect();
    let mut stored: Vec<pb::PageRun> = Vec::new();
    // A page unmapped since the walk reads zero: it is in no tracked VMA any more, or
    // written again (and so copied again) before the freeze.
    let c = pages::copy_runs(
        p.pid,
        &runs,
        &mut stored,
        pages,
        None,
        buffers,
        progress,
        true,
    )?;
    let new: Vec<pb::ParentRun> = stored
        .into_iter()
        .map(|r| pb::ParentRun {
            vaddr: r.vaddr,
            nr_pages: r.nr_pages,
            link: 0,
            offset: r.offset,
            pages_id: ckpt_images::chain::LIVE_PAGES_ID,
        })
        .collect();
    p.live.copied = overlay(&p.live.copied, &new);
    Ok(c.pages * PAGE)
}

/// `old` with the pages `new` holds taken from `new` instead: both sorted and disjoint,
/// and so is the result.
fn overlay(old: &[pb::ParentRun], new: &[pb::ParentRun]) -> Vec<pb::ParentRun> {
    let end = |r: &pb::ParentRun| r.vaddr + r.nr_pages * PAGE;
    let mut out = Vec::with_capacity(old.len() + new.len());
    let mut ni = 0;
    for o in old {
        // The parts of `o` no run of `new` covers.
        let mut at = o.vaddr;
        while ni < new.len() && end(&new[ni]) <= at {
            ni += 1;
        }
        let mut k = ni;
        while at < end(o) {
            let (cut_s, cut_e) = match new.get(k) {
                Some(n) if n.vaddr < end(o) => (n.vaddr.max(at), end(n)),
                _ => (end(o), end(o)),
            };
            if cut_s > at {
                out.push(pb::ParentRun {
                    vaddr: at,
                    nr_pages: (cut_s - at) / PAGE,
                    offset: o.offset + (at - o.vaddr),
                    ..*o
                });
            }
            at = cut_e.max(cut_s);
            k += 1;
        }
    }
    out.extend_from_slice(new);
    out.sort_unstable_by_key(|r| r.vaddr);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(page: u64, n: u64, offset_page: u64) -> pb::ParentRun {
        pb::ParentRun {
            vaddr: page * PAGE,
            nr_pages: n,
            link: 0,
            offset: offset_page * PAGE,
            pages_id: 2,
        }
    }

    fn flat(v: &[pb::ParentRun]) -> Vec<(u64, u64, u64)> {
        v.iter()
            .map(|r| (r.vaddr / PAGE, r.nr_pages, r.offset / PAGE))
            .collect()
    }

    #[test]
    fn later_copies_replace_earlier_ones_page_by_page() {
        // Old: pages 0-9 at 1.., 20-21 at 11..; new: 2-3, 5, 9-11, 30.
        let old = [r(0, 10, 1), r(20, 2, 11)];
        let new = [r(2, 2, 100), r(5, 1, 102), r(9, 3, 103), r(30, 1, 106)];
        assert_eq!(
            flat(&overlay(&old, &new)),
            [
                (0, 2, 1),
                (2, 2, 100),
                (4, 1, 5),
                (5, 1, 102),
                (6, 3, 7),
                (9, 3, 103),
                (20, 2, 11),
                (30, 1, 106)
            ]
        );
        assert_eq!(flat(&overlay(&[], &new)), flat(&new));
        assert_eq!(flat(&overlay(&old, &[])), flat(&old));
    }
}
