//! Lazy restore (`restore --lazy`): the process runs as soon as everything but its
//! anonymous memory is back; those pages arrive through userfaultfd, served by the pager.
//!
//! The puppet registers the uffd-eligible VMAs (MISSING) on a userfaultfd created inside
//! the process, with the FORK/REMAP/REMOVE/UNMAP events, copies nothing into them, and
//! leaves the process its own copy of the fd, dup'ed above every restored and helper fd
//! (`Handoff`). While that copy is open, a dead ckpt means the process blocks in
//! handle_userfault at its next missing page: it never reads zeros.
//!
//! The pager (`serve`) holds ckpt's copy and the mapped pages file:
//! - the fault thread reads the uffd messages. A missing page that the image holds and
//!   that was not served yet gets UFFDIO_COPY of its 64 KiB aligned cluster (only pages
//!   not served yet, within one page run); any other missing page (a hole, or a page the
//!   program dropped with MADV_DONTNEED since) gets UFFDIO_ZEROPAGE; EEXIST ends in
//!   UFFDIO_WAKE. Events: REMOVE and UNMAP mark their pages as not to be filled; REMAP
//!   copies every page of the moved range not yet served to its new place at once (the
//!   range stops being lazy); FORK copies every page not yet served into the child's
//!   context, then closes it (the child is no longer lazy: its holes then read zero);
//!   a child whose memory cannot be completed (a damaged chunk, a copy that keeps
//!   failing) is killed first, while its missing pages still block it.
//! - the copier fills everything else in 4 MiB UFFDIO_COPYs, skipping served pages by
//!   a bitmap. It holds `lock` across "check the bitmap, copy", and the event handlers
//!   hold it while they mark: a page dropped by MADV_DONTNEED is never refilled with
//!   stale data.
//! - every copy first checks the 16 MiB chunks of the pages file it reads from (each
//!   chunk hashed once, by whichever thread needs it first): a damaged chunk kills the
//!   process before any byte of it is placed, so a lazily restored process never runs on
//!   a page that does not match its checksum either.
//!
//! When every page is in: UFFDIO_UNREGISTER of every range, the process's own copy of
//! the fd is closed by a syscall injected through its [vdso] (seize, interrupt, close,
//! registers back, detach), then ckpt's copy is closed.

use crate::RestoreError;
use ckpt_images::{pb, PAGE_SIZE};
use ckpt_sys::inject::{Remote, Via};
use ckpt_sys::process::Mmap;
use ckpt_sys::ptrace::{self, Options, Stop};
use ckpt_sys::uffd::{Event, Fill, Uffd};
use ckpt_sys::Pid;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

const PAGE: u64 = PAGE_SIZE as u64;
/// Pages per background UFFDIO_COPY (4 MiB).
const CHUNK_PAGES: u64 = 1024;
/// Pages per fault cluster (64 KiB, aligned).
const CLUSTER_PAGES: u64 = 16;
const UNCHECKED: u8 = 0;
const GOOD: u8 = 1;
const BAD: u8 = 2;

/// What the puppet leaves for the pager.
pub struct Handoff {
    /// ckpt's copy of the process's userfaultfd (API done with the lazy features).
    pub uffd: Uffd,
    /// The fd number of the process's own copy.
    pub remote_fd: i32,
    /// The registered VMAs, [start, end).
    pub ranges: Vec<(u64, u64)>,
    /// The chunks of the pages file the puppet already verified (for the pages it copied
    /// itself): the pager does not hash them again.
    pub verified: Vec<bool>,
}

/// What the pager did, for the logs and the tests.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub faults: u64,
    pub zero_faults: u64,
    pub copied_pages: u64,
    pub events: u64,
    pub all_in_ms: f64,
    /// The process exited (or was killed) before every page was in.
    pub target_gone: bool,
}

/// Forks inside forks followed while a fork child is filled (a fork bomb is killed).
const MAX_FORK_DEPTH: usize = 8;

/// How a copy of whole ranges ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Copied {
    All,
    /// An event must be read first.
    Again,
    /// The target's memory is gone (it exited, exec'd, or its fork failed): nothing can
    /// read what was not placed.
    Gone,
    /// Not every page could be placed: a chunk is bad.
    Failed,
}

enum Step {
    /// Copied or skipped up to this page of the run.
    To(u64),
    Again(u64),
    NoVma(u64),
    Gone,
}

struct Pages<'a> {
    uffd: &'a Uffd,
    runs: Vec<pb::PageRun>,
    /// Index of each run's first page in `bits`.
    base: Vec<u64>,
    bits: Vec<AtomicU64>,
    file: &'a [u8],
    /// The mapping `file` is: chunks are populated in one call before they are hashed
    /// (which leaves them mapped for the copies), and dropped once the copier is past them.
    map: &'a Mmap,
    /// The pages file's chunk checksums and, per chunk, UNCHECKED, GOOD or BAD.
    entry: &'a pb::ImageFile,
    checked: Vec<AtomicU8>,
    pid: Pid,
    /// The registered VMAs: a fork child's registered memory lies inside them (or remaps).
    ranges: &'a [(u64, u64)],
    corrupt: AtomicBool,
    lock: Mutex<()>,
    /// Pages placed into the process since the fault thread last read an event, as
    /// (run, from, to): a fork whose event that read returns did not copy them into the
    /// child (the copy ran after the child's page tables were made), so the child gets
    /// them from the image like its other missing pages.
    recent: Mutex<Vec<(usize, u64, u64)>>,
    /// The fault thread is filling a fork child: a bad chunk then kills the child before
    /// the process (dead, the process would hand its children to another parent).
    in_fork: AtomicBool,
    stop: AtomicBool,
    copier_done: AtomicBool,
    /// Written once the copier is done or stops: wakes the fault loop at once.
    wake: OwnedFd,
    faults: AtomicU64,
    zero_faults: AtomicU64,
    copied: AtomicU64,
}

impl<'a> Pages<'a> {
    fn new(
        h: &'a Handoff,
        runs: &[pb::PageRun],
        map: &'a Mmap,
        entry: &'a pb::ImageFile,
        pid: Pid,
        wake: OwnedFd,
    ) -> Self {
        let (uffd, verified) = (&h.uffd, &h.verified);
        let runs: Vec<pb::PageRun> = runs
            .iter()
            .filter(|r| h.ranges.iter().any(|&(s, e)| r.vaddr >= s && r.vaddr < e))
            .cloned()
            .collect();
        let mut base = Vec::with_capacity(runs.len());
        let mut total = 0;
        for r in &runs {
            base.push(total);
            total += r.nr_pages;
        }
        Pages {
            uffd,
            runs,
            base,
            bits: (0..total.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            file: &map[..],
            map,
            entry,
            checked: (0..entry.chunk_xxh3.len())
                .map(|i| {
                    AtomicU8::new(if verified.get(i) == Some(&true) {
                        GOOD
                    } else {
                        UNCHECKED
                    })
                })
                .collect(),
            pid,
            ranges: &h.ranges,
            corrupt: AtomicBool::new(false),
            lock: Mutex::new(()),
            recent: Mutex::new(Vec::new()),
            in_fork: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            copier_done: AtomicBool::new(false),
            wake,
            faults: AtomicU64::new(0),
            zero_faults: AtomicU64::new(0),
            copied: AtomicU64::new(0),
        }
    }

    fn is_set(&self, g: u64) -> bool {
        self.bits[(g / 64) as usize].load(Relaxed) & (1 << (g % 64)) != 0
    }

    fn set(&self, ri: usize, from: u64, to: u64) {
        for p in from..to {
            let g = self.base[ri] + p;
            self.bits[(g / 64) as usize].fetch_or(1 << (g % 64), Relaxed);
        }
    }

    /// The run holding `addr`, and the page's index in it.
    fn find(&self, addr: u64) -> Option<(usize, u64)> {
        let i = self.runs.partition_point(|r| r.vaddr <= addr);
        let ri = i.checked_sub(1)?;
        let r = &self.runs[ri];
        let p = (addr - r.vaddr) / PAGE;
        (p < r.nr_pages).then_some((ri, p))
    }

    /// Whether every chunk of the pages file that [off, off+len) touches matches its
    /// checksum (hashing the ones not checked yet). A bad chunk kills the process, which
    /// has not seen a byte of it, and stops the pager.
    fn verified(&self, off: usize, len: usize) -> bool {
        let cs = self.entry.chunk_size as usize;
        for i in off / cs..(off + len).div_ceil(cs) {
            // Past the image's own file: an earlier image of its chain, mapped after it
            // and verified whole before the restore began (`chain::map_all`).
            let Some(state) = self.checked.get(i) else {
                continue;
            };
            if state.load(Relaxed) == UNCHECKED {
                // A pages file still arriving (post-copy, `feed.rs`): a chunk that never
                // will counts as damaged.
                let own = &self.file[..(self.entry.size as usize).min(self.file.len())];
                let ok = crate::feed::arrived(i)
                    && ckpt_images::chunks::chunk_ok(
                        own,
                        cs,
                        i,
                        self.entry.chunk_xxh3[i],
                        &|off, len| ckpt_sys::process::populate_read(self.map, off, len),
                    );
                state.store(if ok { GOOD } else { BAD }, Relaxed);
            }
            if state.load(Relaxed) == BAD {
                if !self.corrupt.swap(true, Relaxed) {
                    tracing::error!(
                        pid = %self.pid,
                        "{}: bytes {}..{} missing (never arrived) or not matching their checksum: killing the lazily restored process before it reads them",
                        self.entry.name,
                        i * cs,
                        ((i + 1) * cs).min(self.file.len())
                    );
                    if !self.in_fork.load(Relaxed) {
                        self.kill_process();
                    }
                }
                self.stop.store(true, Relaxed);
                return false;
            }
        }
        true
    }

    fn kill_process(&self) {
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
    }

    fn unset(&self, ri: usize, p: u64) -> bool {
        !self.is_set(self.base[ri] + p)
    }

    /// One UFFDIO_COPY into `target` (at the run's address + `delta`) of the pages not
    /// yet served from page `p` on, at most `max` of them and below `end`. With `mark`,
    /// what went in is marked served.
    fn step(
        &self,
        (target, delta): (&Uffd, u64),
        ri: usize,
        p: u64,
        end: u64,
        max: u64,
        mark: bool,
    ) -> Step {
        let mut p = p;
        while p < end && !self.unset(ri, p) {
            p += 1;
        }
        if p >= end {
            return Step::To(end);
        }
        let mut q = p + 1;
        while q < end && q - p < max && self.unset(ri, q) {
            q += 1;
        }
        let r = &self.runs[ri];
        let off = (r.offset + p * PAGE) as usize;
        let src = &self.file[off..off + ((q - p) * PAGE) as usize];
        if !self.verified(off, src.len()) {
            return Step::Gone;
        }
        let dst = (r.vaddr + p * PAGE).wrapping_add(delta);
        let res = match target.copy_once(dst, src) {
            Ok(f) => f,
            Err(e) => {
                warn!("{e}");
                Fill::NoVma(0)
            }
        };
        let did = |d: u64| {
            let n = d / PAGE;
            if mark {
                self.set(ri, p, p + n);
                if n > 0 {
                    let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
                    recent.push((ri, p, p + n));
                }
            }
            self.copied.fetch_add(n, Relaxed);
            p + n
        };
        match res {
            Fill::Done => Step::To(did((q - p) * PAGE)),
            Fill::Exists(d) => {
                let n = did(d);
                if mark {
                    self.set(ri, n, n + 1);
                }
                Step::To(n + 1)
            }
            Fill::Again(d) => Step::Again(did(d)),
            Fill::NoVma(d) => Step::NoVma(did(d)),
            Fill::Gone => Step::Gone,
        }
    }

    /// The background copy, run by run, 4 MiB at a time; then wakes the fault loop.
    fn copier(&self) {
        ckpt_sys::testhold::hold("lazy-copy", &|| self.stop.load(Relaxed));
        self.copy_all_runs();
        let _ = nix::unistd::write(&self.wake, &[1]);
    }

    /// Drops the chunks of the pages file below `off` from ckpt's page tables (the page
    /// cache keeps them: a later fault there maps them in again), from chunk `*next` on.
    fn release_below(&self, off: u64, next: &mut u64) {
        let cs = self.entry.chunk_size;
        let chunks = self.checked.len() as u64;
        while *next < chunks && (*next + 1).saturating_mul(cs) <= off {
            ckpt_sys::process::release_range(self.map, (*next * cs) as usize, cs as usize);
            *next += 1;
        }
    }

    /// Waits (outside `lock`, which the event handlers need) for the chunks that the
    /// next copy of `pages` pages at `off` reads, where the pages file is still arriving
    /// (`feed.rs`); `verified` decides what a missing one means.
    fn await_chunks(&self, off: u64, pages: u64) {
        let cs = self.entry.chunk_size.max(1);
        for c in off / cs..(off + pages * PAGE).div_ceil(cs) {
            if !crate::feed::arrived(c as usize) {
                return;
            }
        }
    }

    fn copy_all_runs(&self) {
        let mut released = 0;
        'runs: for ri in 0..self.runs.len() {
            let n = self.runs[ri].nr_pages;
            let mut p = 0;
            let mut tries = 0;
            while p < n {
                if self.stop.load(Relaxed) {
                    return;
                }
                self.release_below(self.runs[ri].offset + p * PAGE, &mut released);
                self.await_chunks(self.runs[ri].offset + p * PAGE, (n - p).min(CHUNK_PAGES));
                let s = {
                    let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                    self.step((self.uffd, 0), ri, p, n, CHUNK_PAGES, true)
                };
                match s {
                    Step::To(q) => {
                        p = q;
                        tries = 0;
                    }
                    // An event is pending: the fault thread reads it, then we go on.
                    Step::Again(q) => {
                        p = q;
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    // Unmapped or moved: the UNMAP/REMAP event marks these pages soon.
                    Step::NoVma(q) => {
                        p = q;
                        tries += 1;
                        if tries > 2000 {
                            warn!(
                                "page {:#x} has no registered VMA and no event came: skipped",
                                self.runs[ri].vaddr + p * PAGE
                            );
                            self.set(ri, p, p + 1);
                            p += 1;
                            tries = 0;
                        } else {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    Step::Gone => {
                        self.stop.store(true, Relaxed);
                        break 'runs;
                    }
                }
            }
        }
        self.release_below(u64::MAX, &mut released);
        self.copier_done.store(true, Relaxed);
    }

    /// Serves one missing-page fault; false if it must be retried after the pending
    /// events are read.
    fn fault(&self, addr: u64) -> bool {
        let page = addr & !(PAGE - 1);
        if let Some((ri, p)) = self.find(page) {
            if self.unset(ri, p) {
                let lo_c = p - p % CLUSTER_PAGES;
                let mut lo = p;
                while lo > lo_c && self.unset(ri, lo - 1) {
                    lo -= 1;
                }
                let hi = (lo_c + CLUSTER_PAGES).min(self.runs[ri].nr_pages);
                match self.step((self.uffd, 0), ri, lo, hi, CLUSTER_PAGES, true) {
                    Step::To(_) if !self.unset(ri, p) => return true,
                    Step::To(_) => {}
                    Step::Again(_) => return false,
                    Step::NoVma(_) => return true,
                    Step::Gone => {
                        self.stop.store(true, Relaxed);
                        return true;
                    }
                }
                // The cluster stopped short of the page: that page alone.
                match self.step((self.uffd, 0), ri, p, p + 1, 1, true) {
                    Step::Again(_) => return false,
                    Step::Gone => {
                        self.stop.store(true, Relaxed);
                        return true;
                    }
                    _ => {}
                }
                let _ = self.uffd.wake(page, PAGE);
                return true;
            }
        }
        self.zero_faults.fetch_add(1, Relaxed);
        match self.uffd.zeropage(page, PAGE) {
            Ok(Fill::Again(_)) => false,
            Ok(Fill::Exists(_)) => {
                let _ = self.uffd.wake(page, PAGE);
                true
            }
            Ok(Fill::Gone) => {
                self.stop.store(true, Relaxed);
                true
            }
            Ok(_) => true,
            Err(e) => {
                warn!("{e}");
                let _ = self.uffd.wake(page, PAGE);
                true
            }
        }
    }

    /// Marks the image's pages of [start, end) as not to be filled.
    fn mark_range(&self, start: u64, end: u64) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        for (ri, r) in self.runs.iter().enumerate() {
            let (rs, re) = (r.vaddr, r.vaddr + r.nr_pages * PAGE);
            if re <= start || rs >= end {
                continue;
            }
            let from = (start.max(rs) - rs) / PAGE;
            let to = (end.min(re) - rs).div_ceil(PAGE);
            self.set(ri, from, to);
        }
    }

    /// Copies every page not yet served of the runs within [start, end) into `target`
    /// at address + `delta`.
    fn copy_all(&self, target: &Uffd, start: u64, end: u64, delta: u64, mark: bool) -> Copied {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.copy_all_locked(target, start, end, delta, mark, &mut 0)
    }

    /// [`Self::copy_all`] for a caller that holds `lock`.
    fn copy_all_locked(
        &self,
        target: &Uffd,
        start: u64,
        end: u64,
        delta: u64,
        mark: bool,
        at: &mut u64,
    ) -> Copied {
        *at = start;
        for (ri, r) in self.runs.iter().enumerate() {
            let (rs, re) = (r.vaddr, r.vaddr + r.nr_pages * PAGE);
            if re <= start || rs >= end {
                continue;
            }
            let mut p = (start.max(rs) - rs) / PAGE;
            let to = (end.min(re) - rs).div_ceil(PAGE);
            let mut again = 0;
            while p < to {
                match self.step((target, delta), ri, p, to, CHUNK_PAGES, mark) {
                    Step::To(q) => p = q,
                    Step::Again(q) => {
                        p = q;
                        again += 1;
                        if again > 100 {
                            // Where to go on once the event is read.
                            *at = rs + p * PAGE;
                            return Copied::Again;
                        }
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    // Gone from there too: nothing can be placed.
                    Step::NoVma(q) => {
                        if mark {
                            self.set(ri, q, q + 1);
                        }
                        p = q + 1;
                    }
                    // A bad chunk (it marks the image corrupt), or the target gone.
                    Step::Gone if self.corrupt.load(Relaxed) => return Copied::Failed,
                    Step::Gone => return Copied::Gone,
                }
            }
            if mark {
                self.set(ri, (start.max(rs) - rs) / PAGE, to);
            }
        }
        *at = end;
        Copied::All
    }

    /// Pages [p, q) of run `ri` into a fork child, served or not (see `recent`); a page
    /// the child has already is left as it is.
    fn copy_into_child(&self, child: &Uffd, ri: usize, p: u64, q: u64) -> Copied {
        let r = &self.runs[ri];
        let (mut p, mut again) = (p, 0);
        while p < q {
            let off = (r.offset + p * PAGE) as usize;
            let src = &self.file[off..off + ((q - p) * PAGE) as usize];
            if !self.verified(off, src.len()) {
                return Copied::Failed;
            }
            let res = match child.copy_once(r.vaddr + p * PAGE, src) {
                Ok(f) => f,
                Err(e) => {
                    warn!("{e}");
                    Fill::NoVma(0)
                }
            };
            match res {
                Fill::Done => return Copied::All,
                Fill::Exists(d) | Fill::NoVma(d) => p += d / PAGE + 1,
                Fill::Again(d) => {
                    p += d / PAGE;
                    again += 1;
                    if again > 100 {
                        return Copied::Again;
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
                Fill::Gone => return Copied::Gone,
            }
        }
        Copied::All
    }

    /// Copies into a fork child every page of the image it lacks. The copier waits
    /// meanwhile (`lock`), so nothing is served to the process that the child misses.
    /// The contexts of the child's own fork children (see `child_events`) go to `held`:
    /// the caller closes them once the whole family is filled, or after killing it.
    fn fill_child(&self, child: &Uffd, held: &mut Vec<Uffd>) -> bool {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let recent = std::mem::take(&mut *self.recent.lock().unwrap_or_else(|e| e.into_inner()));
        self.fill_child_locked(child, &recent, Vec::new(), held, 0)
    }

    /// [`Self::fill_child`] under `lock`, for a child that already dropped `skip`. The
    /// fill goes on where it stalled after each read of the child's events (a restart
    /// from the bottom would walk every page placed so far again); it gives up only if it
    /// makes no progress for about five seconds.
    fn fill_child_locked(
        &self,
        child: &Uffd,
        recent: &[(usize, u64, u64)],
        mut skip: Vec<(u64, u64)>,
        held: &mut Vec<Uffd>,
        depth: usize,
    ) -> bool {
        let mut at = ChildCursor::default();
        let mut stalls = 0;
        loop {
            let before = at;
            match self.child_pass(child, recent, &skip, &mut at) {
                Copied::All => return true,
                // Nothing can read what was not placed.
                Copied::Gone => return true,
                Copied::Failed => return false,
                // The child's address space is changing: its event blocks our copies
                // until it is read.
                Copied::Again => {
                    let mut read = 0;
                    if !self.child_events(child, recent, &mut skip, held, depth, &mut read) {
                        return false;
                    }
                    stalls = if read > 0 || at != before {
                        0
                    } else {
                        stalls + 1
                    };
                    // Each stall waited ~10 ms for the copy to go through.
                    if stalls > 500 {
                        warn!("a fork child's memory stayed locked against the fill");
                        return false;
                    }
                }
            }
        }
    }

    /// One pass over what a fork child may lack (the `recent` pieces and every page not
    /// yet served), from `at` on, leaving out what it dropped or unmapped since (`skip`).
    fn child_pass(
        &self,
        child: &Uffd,
        recent: &[(usize, u64, u64)],
        skip: &[(u64, u64)],
        at: &mut ChildCursor,
    ) -> Copied {
        let keep = gaps(skip);
        while at.recent < recent.len() {
            let (ri, p, q) = recent[at.recent];
            let r = &self.runs[ri];
            let (a, b) = (r.vaddr + p * PAGE, r.vaddr + q * PAGE);
            for &(s, e) in &keep {
                let (s, e) = (s.max(a), e.min(b));
                if s < e {
                    let c =
                        self.copy_into_child(child, ri, (s - r.vaddr) / PAGE, (e - r.vaddr) / PAGE);
                    if c != Copied::All {
                        return c;
                    }
                }
            }
            at.recent += 1;
        }
        for (s, e) in keep {
            if e <= at.addr {
                continue;
            }
            let mut stop = 0;
            let c = self.copy_all_locked(child, s.max(at.addr), e, 0, false, &mut stop);
            at.addr = stop;
            if c != Copied::All {
                return c;
            }
        }
        Copied::All
    }

    /// Reads the events a fork child queued while it was filled. A MADV_DONTNEED or
    /// munmap proceeds once its event is read, so that range is never filled again (it
    /// must read zero, or be gone). A fork of its own made a grandchild from the
    /// half-filled memory: it is filled the same way now, while it runs (left unread, its
    /// context would be dropped with the child's, and it would read zeros). An mremap is
    /// not followed: false, and the family is killed.
    fn child_events(
        &self,
        child: &Uffd,
        recent: &[(usize, u64, u64)],
        skip: &mut Vec<(u64, u64)>,
        held: &mut Vec<Uffd>,
        depth: usize,
        read: &mut usize,
    ) -> bool {
        loop {
            let ev = match child.read_event() {
                Ok(Some(ev)) => {
                    *read += 1;
                    ev
                }
                Ok(None) => return true,
                Err(e) => {
                    warn!("reading a fork child's userfaultfd: {e}");
                    return false;
                }
            };
            match ev {
                Event::Remove { start, end } | Event::Unmap { start, end } => {
                    skip.push((start, end));
                }
                Event::Fork(n) => {
                    let grandchild = Uffd::from_fork(n);
                    debug!(
                        depth,
                        "a fork child forked while it was filled: filling that child too"
                    );
                    let ok = depth < MAX_FORK_DEPTH
                        && self.fill_child_locked(
                            &grandchild,
                            recent,
                            skip.clone(),
                            held,
                            depth + 1,
                        );
                    held.push(grandchild);
                    if !ok {
                        return false;
                    }
                }
                Event::Remap { from, to, len } => {
                    warn!(
                        from,
                        to,
                        len,
                        "a fork child moved memory (mremap) while it was filled: not followed"
                    );
                    poison_range(child, to, to + len);
                    return false;
                }
                Event::PageFault(_) | Event::Other(_) => {}
            }
        }
    }

    /// Poisons (see `poison_range`) every page of the image that `target` still lacks.
    fn poison_missing(&self, target: &Uffd) {
        for r in &self.runs {
            if !poison_range(target, r.vaddr, r.vaddr + r.nr_pages * PAGE) {
                return;
            }
        }
    }

    /// Kills the child of a fork whose memory could not be completed, while its
    /// userfaultfd is still open: until that closes, the child blocks at its first
    /// missing page; after, it would read zeros there.
    ///
    /// The kernel sends the FORK event from inside fork (dup_mmap), before the child has
    /// a pid, and the forking thread waits until the event is read; so the child appears
    /// among the children of the process's threads only after we got the event, and runs
    /// only after that. It is the one with its own address space (a CLONE_VM child shares
    /// the process's) that still has registered memory: a completed child's context is
    /// closed, which unregisters it, and an exec'd child has a new address space. If the
    /// fork fails instead, or the child exits or execs, its address space is gone, which
    /// an UFFDIO_COPY outside every registered range tells (ESRCH rather than ENOENT).
    fn kill_forked_child(&self, child: &Uffd, remaps: &[(u64, u64)]) {
        let registered: Vec<(u64, u64)> = self.ranges.iter().chain(remaps).copied().collect();
        let probe = probe_address(&registered);
        let zero = [0u8; PAGE_SIZE];
        let t0 = Instant::now();
        let mut killed = false;
        loop {
            // Until none is left: a grandchild can show up after its parent was found.
            let found = forked_children_with_uffd(self.pid);
            if found.is_empty() && killed {
                return;
            }
            for c in &found {
                warn!(pid = %self.pid, child = %c, "killing the process's fork child: its memory could not be completed");
                let _ = nix::sys::signal::kill(*c, nix::sys::signal::Signal::SIGKILL);
                killed = true;
            }
            if !killed && matches!(child.copy_once(probe, &zero), Ok(Fill::Gone)) {
                debug!(pid = %self.pid, "the fork child's memory is gone: nothing to kill");
                return;
            }
            if t0.elapsed() > Duration::from_secs(5) {
                tracing::error!(pid = %self.pid, "the child of a fork during the lazy restore could not be found to be killed");
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Handles one non-fault event; false if it must be retried later.
    fn event(&self, ev: &Event, remaps: &mut Vec<(u64, u64)>) -> bool {
        match *ev {
            Event::Remove { start, end } | Event::Unmap { start, end } => {
                self.mark_range(start, end);
                true
            }
            Event::Remap { from, to, len } => {
                debug!(from, to, len, "mremap of a lazy range: copying it all now");
                remaps.push((to, to + len));
                self.copy_all(self.uffd, from, from + len, to.wrapping_sub(from), true)
                    != Copied::Again
            }
            Event::Fork(n) => {
                let child = Uffd::from_fork(n);
                debug!("fork during the lazy phase: filling the child's memory now");
                self.in_fork.store(true, Relaxed);
                let mut held = Vec::new();
                if !self.fill_child(&child, &mut held) {
                    self.kill_forked_child(&child, remaps);
                    // A member of the family the kill could not find (a grandchild whose
                    // parent exited is no longer in the process's tree) must not read
                    // zeros either: what is still missing raises SIGBUS instead.
                    for c in std::iter::once(&child).chain(&held) {
                        self.poison_missing(c);
                    }
                }
                drop(held);
                self.in_fork.store(false, Relaxed);
                if self.corrupt.load(Relaxed) {
                    self.kill_process();
                }
                // Closing the child's context unregisters its ranges: its holes and
                // dropped pages then read zero, as they should.
                drop(child);
                true
            }
            Event::PageFault(_) | Event::Other(_) => true,
        }
    }
}

/// A page outside every registered range (of the process, so of any fork child of it),
/// above the lowest address UFFDIO_COPY accepts.
fn probe_address(ranges: &[(u64, u64)]) -> u64 {
    let mut a: u64 = 1 << 30;
    while let Some(&(_, e)) = ranges.iter().find(|&&(s, e)| a >= s && a < e) {
        a = e;
    }
    a
}

/// The descendants of the process (children of its threads, their children, ...) that
/// have their own address space with userfaultfd-registered memory in it.
fn forked_children_with_uffd(pid: Pid) -> Vec<Pid> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for tid in ckpt_sys::proc::tasks(p).unwrap_or_default() {
            for c in ckpt_sys::proc::children(p, tid).unwrap_or_default() {
                todo.push(c);
                if ckpt_sys::process::same_mm(pid, c).unwrap_or(true) {
                    continue;
                }
                let registered = ckpt_sys::proc::smaps(c).is_ok_and(|maps| {
                    maps.iter()
                        .any(|m| m.has_flag("um") || m.has_flag("uw") || m.has_flag("ui"))
                });
                if registered {
                    out.push(c);
                }
            }
        }
    }
    out
}

/// Marks the missing pages of [start, end) in `target` poisoned (UFFDIO_POISON): touched,
/// they raise SIGBUS, also once the context is closed, where they would otherwise read
/// zeros. Pages already there are left alone. False if this context cannot poison (a
/// kernel without the feature) or is gone.
fn poison_range(target: &Uffd, start: u64, end: u64) -> bool {
    let (mut p, mut again) = (start, 0);
    while p < end {
        match target.poison_once(p, end - p) {
            Ok(Fill::Done) => return true,
            Ok(Fill::Exists(d)) | Ok(Fill::NoVma(d)) => p += d + PAGE,
            Ok(Fill::Again(d)) => {
                p += d;
                again += 1;
                if again > 1000 {
                    warn!("poisoning the missing pages at {p:#x}: the address space stays busy");
                    return false;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            Ok(Fill::Gone) => return false,
            Err(e) => {
                warn!("{e}: a survivor of this failed fill would read zeros there");
                return false;
            }
        }
    }
    true
}

/// Where the fill of a fork child goes on: the next `recent` piece, then the address
/// the pass over every run has reached.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct ChildCursor {
    recent: usize,
    addr: u64,
}

/// [0, 2^64) without the ranges in `skip`, in order.
fn gaps(skip: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut s: Vec<(u64, u64)> = skip.iter().copied().filter(|(a, b)| a < b).collect();
    s.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0u64;
    for (a, b) in s {
        if a > at {
            out.push((at, a));
        }
        at = at.max(b);
    }
    if at < u64::MAX {
        out.push((at, u64::MAX));
    }
    out
}

/// Serves the process's missing pages until all are in (or it is gone), then takes the
/// userfaultfd out of it. Runs in the pager (a forked ckpt) or in ckpt itself; the
/// calling thread is the one that ptraces at the end.
pub fn serve(
    pid: Pid,
    h: Handoff,
    runs: &[pb::PageRun],
    map: &Mmap,
    pages_entry: &pb::ImageFile,
) -> Result<Summary, RestoreError> {
    let t0 = Instant::now();
    let pidfd = ckpt_sys::uffd::pidfd_open(pid)?;
    ckpt_images::chunks::check_entry(std::path::Path::new(&pages_entry.name), pages_entry)?;
    // A chain's earlier pages files are mapped after the image's own.
    if (map.len() as u64) < pages_entry.size {
        return Err(RestoreError::Refused(format!(
            "{}: {} bytes mapped, inventory says {}",
            pages_entry.name,
            map.len(),
            pages_entry.size
        )));
    }
    let (wake_r, wake_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|e| ckpt_sys::Error::sys("pipe2", e))?;
    let pages = Pages::new(&h, runs, map, pages_entry, pid, wake_w);
    let mut sum = Summary::default();
    let mut remaps: Vec<(u64, u64)> = Vec::new();
    let res: Result<(), RestoreError> = std::thread::scope(|s| {
        let copier = s.spawn(|| pages.copier());
        let r = fault_loop(&pages, &h, [&pidfd, &wake_r], &mut remaps, &mut sum);
        pages.stop.store(true, Relaxed);
        let _ = copier.join();
        if pages.corrupt.load(Relaxed) {
            return Err(RestoreError::Image(ckpt_images::ImageError::Checksum {
                path: pages_entry.name.clone().into(),
            }));
        }
        r
    });
    sum.faults = pages.faults.load(Relaxed);
    sum.zero_faults = pages.zero_faults.load(Relaxed);
    sum.copied_pages = pages.copied.load(Relaxed);
    if sum.all_in_ms == 0.0 {
        sum.all_in_ms = ckpt_images::units::ms(t0);
    }
    res?;
    if !sum.target_gone {
        match remove_remote_fd(pid, h.remote_fd, h.uffd.raw_fd()) {
            Ok(()) => {}
            Err(e) => warn!(%pid, "could not close the userfaultfd in the process: {e}"),
        }
    }
    drop(h);
    info!(
        %pid,
        all_in_ms = sum.all_in_ms,
        faults = sum.faults,
        zero_faults = sum.zero_faults,
        copied_pages = sum.copied_pages,
        events = sum.events,
        gone = sum.target_gone,
        "lazy restore: all pages in"
    );
    Ok(sum)
}

fn fault_loop(
    pages: &Pages,
    h: &Handoff,
    fds: [&OwnedFd; 2],
    remaps: &mut Vec<(u64, u64)>,
    sum: &mut Summary,
) -> Result<(), RestoreError> {
    let t0 = Instant::now();
    let uffd = &h.uffd;
    let mut deferred: VecDeque<Event> = VecDeque::new();
    let mut unregistered = false;
    loop {
        // 20 ms at most between looks at `stop`; 0 once unregistered (a last drain of
        // what is queued: unregistering woke every fault still waiting).
        let timeout = match (unregistered, deferred.is_empty()) {
            (true, true) => 0,
            (false, true) => 20,
            (_, false) => 1,
        };
        let (_, [dead, woken]) = uffd.poll_with(fds, timeout)?;
        if woken {
            let _ = nix::unistd::read(fds[1].as_raw_fd(), &mut [0u8; 8]);
        }
        if dead || pages.stop.load(Relaxed) && !pages.copier_done.load(Relaxed) {
            sum.target_gone = true;
            return Ok(());
        }
        // Retry first what could not be done while the address space was changing.
        let mut later = VecDeque::new();
        while let Some(ev) = deferred.pop_front() {
            if !handle(pages, &ev, remaps) {
                later.push_back(ev);
            }
        }
        loop {
            // What was placed before this read is in any child whose FORK it returns.
            pages
                .recent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            let Some(ev) = uffd.read_event()? else {
                break;
            };
            if !matches!(ev, Event::PageFault(_)) {
                sum.events += 1;
            } else {
                pages.faults.fetch_add(1, Relaxed);
            }
            if !handle(pages, &ev, remaps) {
                later.push_back(ev);
            }
        }
        deferred = later;
        if unregistered {
            if deferred.is_empty() {
                return Ok(());
            }
            continue;
        }
        if pages.copier_done.load(Relaxed) && deferred.is_empty() {
            sum.all_in_ms = ckpt_images::units::ms(t0);
            // Every page is in: from now on a missing page is the kernel's business
            // (zero), not ours. Then one more pass drains what came meanwhile.
            for &(s, e) in h.ranges.iter().chain(remaps.iter()) {
                if let Err(err) = uffd.unregister(s, e - s) {
                    debug!("{err}");
                }
            }
            unregistered = true;
        }
    }
}

fn handle(pages: &Pages, ev: &Event, remaps: &mut Vec<(u64, u64)>) -> bool {
    match ev {
        Event::PageFault(addr) => pages.fault(*addr),
        other => pages.event(other, remaps),
    }
}

/// Offset of the first `syscall` instruction in `code`.
fn find_syscall_insn(code: &[u8]) -> Option<usize> {
    code.windows(2).position(|w| w == [0x0f, 0x05])
}

/// Seizes the running process, closes its copy of the userfaultfd (if that fd number
/// still is our userfaultfd) with a close injected through its [vdso], puts its
/// registers back and lets it go.
fn remove_remote_fd(pid: Pid, fd: i32, ours: i32) -> Result<(), RestoreError> {
    let me = nix::unistd::getpid();
    if !ckpt_sys::process::same_file_description(pid, fd, me, ours).unwrap_or(false) {
        debug!(%pid, fd, "the process no longer has our userfaultfd at that number");
        return Ok(());
    }
    let maps = ckpt_sys::proc::smaps(pid)?;
    let vdso = maps
        .iter()
        .find(|m| m.name == "[vdso]")
        .ok_or_else(|| RestoreError::Refused(format!("pid {pid} has no [vdso]")))?;
    let mut code = vec![0u8; vdso.len() as usize];
    ckpt_sys::mem::read(pid, vdso.start, &mut code)?;
    let insn = vdso.start
        + find_syscall_insn(&code)
            .ok_or_else(|| RestoreError::Refused(format!("no syscall in the [vdso] of {pid}")))?
            as u64;
    // EXITKILL: a pager that dies while the close is injected (registers and mask
    // swapped) must not leave the process to run on with them.
    ptrace::seize(
        pid,
        Options::PTRACE_O_TRACESYSGOOD | Options::PTRACE_O_EXITKILL,
    )?;
    let r = close_seized(pid, fd, insn);
    let d = ptrace::detach(pid);
    r?;
    d?;
    let _ = ours.as_raw_fd();
    Ok(())
}

fn close_seized(pid: Pid, fd: i32, insn: u64) -> Result<(), RestoreError> {
    ptrace::interrupt(pid)?;
    loop {
        match ptrace::wait(pid)? {
            Stop::EventStop(_) => break,
            Stop::Signal(sig) => {
                let sig = nix::sys::signal::Signal::try_from(sig).ok();
                ptrace::cont(pid, sig)?;
            }
            Stop::Exited(_) | Stop::Killed(_) => return Ok(()),
            _ => ptrace::cont(pid, None)?,
        }
    }
    let mask = ptrace::get_sigmask(pid)?;
    ptrace::set_sigmask(pid, !0)?;
    let mut remote = Remote::new(pid, Via::SyscallInsn(insn))?;
    let r = remote.syscall(
        || format!("close of the userfaultfd (fd {fd})"),
        libc::SYS_close,
        &[fd as u64],
    );
    remote.restore_regs()?;
    ptrace::set_sigmask(pid, mask)?;
    r?;
    Ok(())
}
