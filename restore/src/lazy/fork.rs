//! The fallbacks for a process that forks while it is lazy: the child's missing pages
//! are filled from the image (forks inside forks followed, to a depth), and a child whose
//! memory cannot be completed is poisoned and killed before it can read a hole.

use super::*;

impl<'a> Pages<'a> {
    /// Pages [p, q) of run `ri` into a fork child, served or not (see `recent`); a page
    /// the child has already is left as it is.
    pub(super) fn copy_into_child(&self, child: &Uffd, ri: usize, p: u64, q: u64) -> Copied {
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
    pub(super) fn fill_child(&self, child: &Uffd, held: &mut Vec<Uffd>) -> bool {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let recent = std::mem::take(&mut *self.recent.lock().unwrap_or_else(|e| e.into_inner()));
        self.fill_child_locked(child, &recent, Vec::new(), held, 0)
    }

    /// [`Self::fill_child`] under `lock`, for a child that already dropped `skip`. The
    /// fill goes on where it stalled after each read of the child's events (a restart
    /// from the bottom would walk every page placed so far again); it gives up only if it
    /// makes no progress for about five seconds.
    pub(super) fn fill_child_locked(
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
    pub(super) fn child_pass(
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
    pub(super) fn child_events(
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
    pub(super) fn poison_missing(&self, target: &Uffd) {
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
    pub(super) fn kill_forked_child(&self, child: &Uffd, remaps: &[(u64, u64)]) {
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
}

/// A page outside every registered range (of the process, so of any fork child of it),
/// above the lowest address UFFDIO_COPY accepts.
pub(super) fn probe_address(ranges: &[(u64, u64)]) -> u64 {
    let mut a: u64 = 1 << 30;
    while let Some(&(_, e)) = ranges.iter().find(|&&(s, e)| a >= s && a < e) {
        a = e;
    }
    a
}

/// The descendants of the process (children of its threads, their children, ...) that
/// have their own address space with userfaultfd-registered memory in it.
pub(super) fn forked_children_with_uffd(pid: Pid) -> Vec<Pid> {
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
pub(super) fn poison_range(target: &Uffd, start: u64, end: u64) -> bool {
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
pub(super) struct ChildCursor {
    recent: usize,
    addr: u64,
}

/// [0, 2^64) without the ranges in `skip`, in order.
pub(super) fn gaps(skip: &[(u64, u64)]) -> Vec<(u64, u64)> {
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
