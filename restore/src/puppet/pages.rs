//! The copy of the dumped pages into the puppet (`fill.rs` does the work on every CPU):
//! anonymous memory by UFFDIO_COPY through a userfaultfd injected into the puppet, the
//! rest by process_vm_writev; in a lazy restore, the handoff of that userfaultfd to the
//! pager.

use super::{Puppet, R};
use crate::fill;
use crate::RestoreError;
use ckpt_images::{pb, PAGE_SIZE};

impl Puppet<'_> {
    /// Copies every dumped page into place from the mapped pages file (verified before
    /// the seed was forked, `lib.rs`; the lazy pager verifies as it serves), on every CPU
    /// and a window of the file at a time (`fill.rs`).
    ///
    /// Anonymous memory is filled with UFFDIO_COPY (allocate + copy, no fault, no zeroing);
    /// the rest (written pages of private file mappings, huge-page memory, which
    /// UFFDIO_COPY would split into 4 KiB pages) with batched process_vm_writev.
    pub(super) fn fill(&mut self, pages: &fill::Source, with_pages: &[bool]) -> R<()> {
        if self.lazy {
            return self.copy_pages(pages, with_pages);
        }
        let total: u64 = self
            .fill_runs
            .as_deref()
            .unwrap_or(&self.img.runs)
            .iter()
            .map(|r| r.nr_pages * PAGE_SIZE as u64)
            .sum();
        self.progress.begin("restoring memory", total);
        let copied = self.copy_pages(pages, with_pages);
        self.progress.end();
        copied
    }

    pub(super) fn copy_pages(&mut self, pages: &fill::Source, with_pages: &[bool]) -> R<()> {
        let img = self.img;
        let thp = fill::thp_mode();
        let by_uffd: Vec<bool> = img
            .vmas
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let anon = v.kind == pb::VmaKind::VmaAnon as i32
                    || v.kind == pb::VmaKind::VmaAnonShared as i32;
                // userfaultfd does not register droppable memory.
                let droppable = v.map_flags & crate::image::MAP_DROPPABLE != 0;
                with_pages[i] && anon && !droppable && !fill::wants_thp(v, thp)
            })
            .collect();
        let by_uffd = if self.lazy || self.uffd_pays(&by_uffd) {
            by_uffd
        } else {
            vec![false; by_uffd.len()]
        };
        let made = if by_uffd.iter().any(|&b| b) {
            match self.call(
                "userfaultfd",
                libc::SYS_userfaultfd,
                &[(libc::O_CLOEXEC | libc::O_NONBLOCK) as u64],
            ) {
                Ok(fd) => Some(fd),
                // In a container's user namespace the process lacks CAP_SYS_PTRACE of
                // the initial one, which userfaultfd(2) needs for kernel faults here:
                // its memory is written by process_vm_writev instead.
                Err(e) if !self.lazy => {
                    tracing::debug!(
                        pid = self.pid.as_raw(),
                        "no userfaultfd ({e}): filled by writes"
                    );
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let uffd = if let Some(fd) = made {
            let mine = ckpt_sys::process::steal_fd(self.pid, fd as i32)?;
            let uffd = if self.lazy {
                ckpt_sys::uffd::Uffd::with_features(mine, ckpt_sys::uffd::lazy_features())?
            } else {
                ckpt_sys::uffd::Uffd::new(mine)?
            };
            for (v, _) in img.vmas.iter().zip(&by_uffd).filter(|(_, &u)| u) {
                uffd.register_missing(v.start, v.end - v.start)?;
            }
            Some((uffd, fd))
        } else {
            None
        };
        let by_uffd_now: Vec<bool> = by_uffd.iter().map(|&b| b && uffd.is_some()).collect();
        let mut verified = Vec::new();
        if let Some(frames) = img.frames.as_deref() {
            let runs = crate::image::by_offset(&img.runs);
            let dest = fill::FrameDest {
                pid: self.pid,
                runs: &runs,
                vmas: &img.vmas,
                uffd_vma: &by_uffd_now,
                uffd: uffd.as_ref().map(|(u, _)| u),
                progress: self.progress,
            };
            fill::copy_frames(&dest, pages, &self.pages_path, frames)?;
        } else {
            // Without the pages kept from the seed (`sharing.rs`).
            let runs = self.fill_runs.as_deref().unwrap_or(&img.runs);
            let jobs = fill::plan(runs, &img.vmas, &by_uffd_now, self.lazy);
            if self.lazy {
                // Not verified up front in a lazy restore: the chunks of what is copied
                // now (and of the rseq area's pages, copied below) are checked here, once
                // each; the pager is told which.
                let mut want = vec![false; img.pages_entry.chunk_xxh3.len()];
                let cs = img.pages_entry.chunk_size.max(1);
                let mut mark = |off: u64, len: u64| {
                    for i in off / cs..(off + len).div_ceil(cs) {
                        if let Some(w) = want.get_mut(i as usize) {
                            *w = true;
                        }
                    }
                };
                for j in &jobs {
                    mark(j.off, j.len);
                }
                for (off, _) in self.rseq_pages() {
                    mark(off, PAGE_SIZE as u64);
                }
                verified = fill::verify_chunks(pages, &self.pages_path, &img.pages_entry, &want)?;
            }
            fill::copy(
                self.pid,
                pages,
                &jobs,
                uffd.as_ref().map(|(u, _)| u),
                self.progress,
            )?;
        }
        let page = PAGE_SIZE as u64;
        if let (true, Some(fd)) = (self.lazy, uffd.as_ref().map(|u| u.1)) {
            // The process keeps its own copy, above every restored and helper fd: while
            // it is open, a dead ckpt blocks the process instead of leaving it zeros.
            let high = self.call(
                "fcntl(F_DUPFD_CLOEXEC) of the userfaultfd",
                libc::SYS_fcntl,
                &[
                    fd,
                    libc::F_DUPFD_CLOEXEC as u64,
                    self.plan.helper_end() as u64 + 1,
                ],
            )?;
            self.call("close of the userfaultfd", libc::SYS_close, &[fd])?;
            let ranges = img
                .vmas
                .iter()
                .zip(&by_uffd)
                .filter(|(_, &u)| u)
                .map(|(v, _)| (v.start, v.end))
                .collect();
            let (uffd, _) = uffd.expect("matched above");
            // Pages the kernel touches in the injected calls still to come (rseq
            // registration writes its area) must be there now: nobody serves faults
            // until the puppet phase is over. Their chunks were verified above.
            for (off, at) in self.rseq_pages() {
                let src = pages.reader.slice(off, page)?;
                match uffd.copy_once(at, src)? {
                    ckpt_sys::uffd::Fill::Done | ckpt_sys::uffd::Fill::Exists(_) => {}
                    other => {
                        return Err(RestoreError::Refused(format!(
                            "pid {}: prefill of the rseq page {at:#x}: {other:?}",
                            self.pid
                        )))
                    }
                }
            }
            self.handoff = Some(crate::lazy::Handoff {
                uffd,
                remote_fd: high as i32,
                ranges,
                verified,
            });
            return Ok(());
        }
        if let Some((uffd, fd)) = uffd {
            for (v, _) in img.vmas.iter().zip(&by_uffd).filter(|(_, &u)| u) {
                uffd.unregister(v.start, v.end - v.start)?;
            }
            drop(uffd);
            self.call("close of the userfaultfd", libc::SYS_close, &[fd])?;
        }
        Ok(())
    }

    /// Whether the pages of the VMAs marked in `by_uffd` are worth a userfaultfd: its
    /// injection and close cost two stops of the puppet (on a loaded machine each a wait
    /// for the scheduler), which a few dozen pages written by process_vm_writev (a fault
    /// and a zeroed page each, ~1 us) do not repay. A tree's small processes are filled
    /// by writes.
    fn uffd_pays(&self, by_uffd: &[bool]) -> bool {
        const SMALL: u64 = 256 << 10;
        let runs = self.fill_runs.as_deref().unwrap_or(&self.img.runs);
        let mut vi = 0;
        let mut bytes = 0;
        for r in runs {
            while self.img.vmas[vi].end <= r.vaddr {
                vi += 1;
            }
            if by_uffd[vi] {
                bytes += r.nr_pages * PAGE_SIZE as u64;
            }
        }
        bytes > SMALL
    }

    /// The dumped pages (file offset, address) holding the first and last byte of every
    /// thread's rseq area: the kernel writes them at the rseq registration, while nobody
    /// serves faults.
    pub(super) fn rseq_pages(&self) -> Vec<(u64, u64)> {
        let page = PAGE_SIZE as u64;
        let mut out = Vec::new();
        for r in self
            .img
            .threads
            .iter()
            .filter_map(|t| t.rseq.as_ref())
            .filter(|r| r.ptr != 0)
        {
            let first = r.ptr & !(page - 1);
            let last = (r.ptr + r.len.max(32) as u64 - 1) & !(page - 1);
            for run in &self.img.runs {
                let end = run.vaddr + run.nr_pages * page;
                for at in [first, last] {
                    if at >= run.vaddr && at < end && !out.iter().any(|&(_, a)| a == at) {
                        out.push((run.offset + (at - run.vaddr), at));
                    }
                }
            }
        }
        out
    }
}
