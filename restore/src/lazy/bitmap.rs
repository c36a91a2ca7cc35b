//! Which pages of the image are served (one bit each, set once a page is in or must not
//! be filled) and which 16 MiB chunks of the pages file were checked against their
//! checksums (each hashed once, by whichever thread needs it first).

use super::*;

impl<'a> Pages<'a> {
    pub(super) fn new(
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

    pub(super) fn is_set(&self, g: u64) -> bool {
        self.bits[(g / 64) as usize].load(Relaxed) & (1 << (g % 64)) != 0
    }

    pub(super) fn set(&self, ri: usize, from: u64, to: u64) {
        for p in from..to {
            let g = self.base[ri] + p;
            self.bits[(g / 64) as usize].fetch_or(1 << (g % 64), Relaxed);
        }
    }

    /// The run holding `addr`, and the page's index in it.
    pub(super) fn find(&self, addr: u64) -> Option<(usize, u64)> {
        let i = self.runs.partition_point(|r| r.vaddr <= addr);
        let ri = i.checked_sub(1)?;
        let r = &self.runs[ri];
        let p = (addr - r.vaddr) / PAGE;
        (p < r.nr_pages).then_some((ri, p))
    }

    pub(super) fn unset(&self, ri: usize, p: u64) -> bool {
        !self.is_set(self.base[ri] + p)
    }

    /// Marks the image's pages of [start, end) as not to be filled.
    pub(super) fn mark_range(&self, start: u64, end: u64) {
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

    /// Whether every chunk of the pages file that [off, off+len) touches matches its
    /// checksum (hashing the ones not checked yet). A bad chunk kills the process, which
    /// has not seen a byte of it, and stops the pager.
    pub(super) fn verified(&self, off: usize, len: usize) -> bool {
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
                        crate::feed::expected(i, self.entry.chunk_xxh3[i]),
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

    pub(super) fn kill_process(&self) {
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
    }
}
