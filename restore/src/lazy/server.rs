//! The fault thread's loop: missing-page faults (the 64 KiB cluster around the page, or
//! a zero page) and the REMOVE/UNMAP/REMAP/FORK events, until every page is in.

use super::*;

impl<'a> Pages<'a> {
    /// Serves one missing-page fault; false if it must be retried after the pending
    /// events are read.
    pub(super) fn fault(&self, addr: u64) -> bool {
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

    /// Handles one non-fault event; false if it must be retried later.
    pub(super) fn event(&self, ev: &Event, remaps: &mut Vec<(u64, u64)>) -> bool {
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

pub(super) fn fault_loop(
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

pub(super) fn handle(pages: &Pages, ev: &Event, remaps: &mut Vec<(u64, u64)>) -> bool {
    match ev {
        Event::PageFault(addr) => pages.fault(*addr),
        other => pages.event(other, remaps),
    }
}
