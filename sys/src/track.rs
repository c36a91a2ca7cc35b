//! Dirty-page tracking without soft-dirty: a userfaultfd in write-protect *async* mode
//! (UFFD_FEATURE_WP_ASYNC, 6.7+) registered on a process's private anonymous memory, read
//! and re-armed with the PAGEMAP_SCAN ioctl (PM_SCAN_WP_MATCHING).
//!
//! In async mode the kernel resolves a write to a protected page itself: it clears the
//! page's uffd-wp bit and lets the write go on, so the tracked process never blocks and
//! never waits for ckpt. PAGEMAP_SCAN reports a page without the bit as PAGE_IS_WRITTEN;
//! PM_SCAN_WP_MATCHING sets the bit again on the pages it reports, in the same walk.
//!
//! Measured on 6.18 (throwaway prototype, ../shared/notes): protecting only present or
//! swapped pages (`category_anyof_mask`) leaves never-touched pages as they are; asking
//! for every written page also protects empty page-table entries by installing uffd-wp
//! *markers*, which PAGEMAP_SCAN then reports as PAGE_IS_SWAPPED — indistinguishable from
//! a swapped-out page. MADV_DONTNEED of a protected anonymous page leaves an empty entry
//! (not present, not swapped); mremap that moves a VMA drops its registration (no
//! UFFD_FEATURE_EVENT_REMAP); fork gives the child unregistered VMAs (no EVENT_FORK); a
//! write to a protected transparent huge page splits it; closing the last fd of the
//! context unregisters everything.

use crate::error::{Error, Result};
use crate::proc::{PageRegion, Pagemap, PmScanArg, PAGEMAP_SCAN, PAGE_IS_PRESENT, PAGE_IS_SWAPPED};
use crate::uffd::Uffd;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, OwnedFd};

/// UFFD_FEATURE_WP_ASYNC: write faults on protected pages are resolved by the kernel.
pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
/// PAGEMAP_SCAN category: the page has no uffd-wp bit (written since it was protected).
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
const UFFDIO_REGISTER_MODE_WP: u64 = 2;
/// Regions per call: a big vector, so a scan with many written islands takes few calls.
const VEC: usize = 16384;

impl Uffd {
    /// Takes the tracker context of another process (a pidfd_getfd copy). `first`: the
    /// context is new and needs its API handshake (WP_ASYNC); a context armed by an
    /// earlier ckpt run already had it (a second UFFDIO_API fails with EINVAL).
    pub fn tracker(fd: OwnedFd, first: bool) -> Result<Uffd> {
        if first {
            Uffd::with_features(fd, UFFD_FEATURE_WP_ASYNC)
        } else {
            Ok(Uffd::adopt(fd))
        }
    }

    /// UFFDIO_REGISTER in write-protect mode of [start, start+len) (the process's own
    /// address space, whatever process ckpt's copy of the fd is in).
    pub fn register_wp(&self, start: u64, len: u64) -> Result<()> {
        self.register_mode(start, len, UFFDIO_REGISTER_MODE_WP)
    }
}

/// Whether this kernel can track writes the async write-protect way: a userfaultfd
/// handshake asking for WP_ASYNC works, and PAGEMAP_SCAN exists.
pub fn wp_async_available() -> bool {
    crate::probe::userfaultfd_features().is_ok_and(|f| f & UFFD_FEATURE_WP_ASYNC != 0)
        && crate::probe::pagemap_scan_empty().is_ok()
}

impl Pagemap {
    /// The pages of [start, end) written since the last call (or since the range was
    /// registered) that are present or swapped, appended to `out` as sorted, merged
    /// ranges; every page reported is write-protected again in the same walk, so the next
    /// call reports what is written from now on. The range must be registered WP-async
    /// (EPERM otherwise: PM_SCAN_CHECK_WPASYNC).
    ///
    /// Regions are kept whole even past `walk_end`: a region reported there was protected
    /// too, and would not be reported again by the next call from `walk_end`. Reporting a
    /// page twice costs a copy; missing one would lose a write.
    pub fn take_written(&self, start: u64, end: u64, out: &mut Vec<(u64, u64)>) -> Result<()> {
        self.scan_written(start, end, PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC, out)
    }

    /// [`take_written`](Self::take_written) over any range of a process that runs: VMAs
    /// not registered WP-async in it (new ones, or the range changed since it was read)
    /// are skipped by the kernel, not refused (no PM_SCAN_CHECK_WPASYNC), so a layout
    /// that moves under the walk never fails it half-way with pages protected again and
    /// not reported.
    pub fn take_written_registered(
        &self,
        start: u64,
        end: u64,
        out: &mut Vec<(u64, u64)>,
    ) -> Result<()> {
        self.scan_written(start, end, PM_SCAN_WP_MATCHING, out)
    }

    fn scan_written(
        &self,
        start: u64,
        end: u64,
        flags: u64,
        out: &mut Vec<(u64, u64)>,
    ) -> Result<()> {
        let mut vec = vec![PageRegion::default(); VEC];
        let first = out.len();
        let mut at = start;
        while at < end {
            let mut arg = PmScanArg {
                size: std::mem::size_of::<PmScanArg>() as u64,
                flags,
                start: at,
                end,
                vec: vec.as_mut_ptr() as u64,
                vec_len: vec.len() as u64,
                category_mask: PAGE_IS_WRITTEN,
                category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                return_mask: PAGE_IS_WRITTEN,
                ..Default::default()
            };
            // SAFETY: PAGEMAP_SCAN reads `arg` (its size in `size`) and writes at most
            // `vec_len` page_region structs into `vec`, which holds that many, plus
            // `arg.walk_end`; the addresses are the target's, never dereferenced here.
            let r = unsafe { libc::ioctl(self.file.as_raw_fd(), PAGEMAP_SCAN, &mut arg) };
            let n = Errno::result(r).map_err(|e| {
                Error::sys(
                    format!(
                        "PAGEMAP_SCAN (write-protect matching) of {} at {at:#x}",
                        self.path
                    ),
                    e,
                )
            })? as usize;
            for reg in &vec[..n.min(vec.len())] {
                if reg.end > reg.start {
                    out.push((reg.start, reg.end));
                }
            }
            if arg.walk_end <= at {
                return Err(Error::Other(format!(
                    "{}: PAGEMAP_SCAN made no progress at {at:#x}",
                    self.path
                )));
            }
            at = arg.walk_end;
        }
        let tail = &mut out[first..];
        tail.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(tail.len());
        for &(s, e) in tail.iter() {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        out.truncate(first);
        out.extend(merged);
        Ok(())
    }
}

/// The inode of fd `fd` of `pid` and whether it is a userfaultfd. Every userfaultfd has an
/// inode of its own (anon_inode_create_getfile), so the number names one context.
pub fn fd_uffd_inode(pid: crate::Pid, fd: i32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    if link.as_os_str() != "anon_inode:[userfaultfd]" {
        return None;
    }
    std::fs::metadata(format!("/proc/{pid}/fd/{fd}"))
        .ok()
        .map(|m| m.ino())
}
