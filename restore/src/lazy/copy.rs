//! The copies: UFFDIO_COPY of the pages not yet served, in 4 MiB steps by the background
//! copier (run after run, dropping the pages file's chunks it is past), or of whole ranges
//! for the event handlers.

use super::*;

impl<'a> Pages<'a> {
    /// One UFFDIO_COPY into `target` (at the run's address + `delta`) of the pages not
    /// yet served from page `p` on, at most `max` of them and below `end`. With `mark`,
    /// what went in is marked served.
    pub(super) fn step(
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
    pub(super) fn copier(&self) {
        ckpt_sys::testhold::hold("lazy-copy", &|| self.stop.load(Relaxed));
        self.copy_all_runs();
        let _ = nix::unistd::write(&self.wake, &[1]);
    }

    /// Drops the chunks of the pages file below `off` from ckpt's page tables (the page
    /// cache keeps them: a later fault there maps them in again), from chunk `*next` on.
    pub(super) fn release_below(&self, off: u64, next: &mut u64) {
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

    pub(super) fn copy_all_runs(&self) {
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

    /// Copies every page not yet served of the runs within [start, end) into `target`
    /// at address + `delta`.
    pub(super) fn copy_all(
        &self,
        target: &Uffd,
        start: u64,
        end: u64,
        delta: u64,
        mark: bool,
    ) -> Copied {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.copy_all_locked(target, start, end, delta, mark, &mut 0)
    }

    /// [`Self::copy_all`] for a caller that holds `lock`.
    pub(super) fn copy_all_locked(
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
}
