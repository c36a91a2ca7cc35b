//! Address ranges a restore keeps free for memory that a tree's processes share
//! copy-on-write (restore/src/sharing.rs). ckpt maps PROT_NONE placeholders over them
//! before it forks the first seed, so nothing of ckpt's (a thread stack, a buffer) lands
//! there meanwhile; every seed inherits them, and a seed that its children share memory
//! with maps that memory there, at the address the restored process uses it, fills it,
//! and forks: the children get its pages copy-on-write, as after the original fork.
//!
//! Every range a seed maps, zaps or fills must lie inside the reservation: only
//! placeholders, or memory an ancestor seed put there the same way, can be replaced, so
//! no object of the program can be.

use crate::error::{Error, Result};
use crate::uffd::Uffd;
use nix::errno::Errno;
use std::os::fd::{FromRawFd, OwnedFd};

/// The placeholders, as sorted disjoint `[start, end)` page-aligned ranges.
pub struct Reservation {
    ranges: Vec<(u64, u64)>,
}

fn mmap_anon(start: u64, len: u64, prot: i32, flags: i32) -> nix::Result<()> {
    // SAFETY: callers pass either MAP_FIXED_NOREPLACE (never replaces a mapping) or
    // MAP_FIXED over a range checked to lie inside the reservation, where no memory of
    // the program's objects lives (see the module doc).
    let p = unsafe {
        libc::mmap(
            start as *mut libc::c_void,
            len as usize,
            prot,
            flags | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    if p as u64 != start {
        // An old kernel that ignores MAP_FIXED_NOREPLACE: give the memory back.
        // SAFETY: the kernel just mapped [p, p + len) for this call; nothing uses it.
        unsafe { libc::munmap(p, len as usize) };
        return Err(Errno::EEXIST);
    }
    Ok(())
}

impl Reservation {
    /// Maps the placeholders (no memory, no commit charge); if one of `ranges` is taken,
    /// maps none and fails.
    pub fn new(ranges: &[(u64, u64)]) -> Result<Reservation> {
        let mut done = Reservation {
            ranges: Vec::with_capacity(ranges.len()),
        };
        for &(s, e) in ranges {
            mmap_anon(
                s,
                e - s,
                libc::PROT_NONE,
                libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE,
            )
            .map_err(|e2| Error::sys(format!("reserving [{s:#x}, {e:#x})"), e2))?;
            done.ranges.push((s, e));
        }
        Ok(done)
    }

    fn check(&self, start: u64, end: u64) -> Result<()> {
        if start < end && self.ranges.iter().any(|&(s, e)| s <= start && end <= e) {
            Ok(())
        } else {
            Err(Error::Other(format!(
                "[{start:#x}, {end:#x}) lies outside the reserved ranges"
            )))
        }
    }

    /// Fresh private anonymous read-write memory over `[start, end)`, replacing what was
    /// there (a placeholder, or an ancestor's memory).
    pub fn map_fresh(&self, start: u64, end: u64) -> Result<()> {
        self.check(start, end)?;
        mmap_anon(
            start,
            end - start,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_FIXED,
        )
        .map_err(|e| Error::sys(format!("mmap of [{start:#x}, {end:#x})"), e))
    }

    /// Drops the pages of `[start, end)` (MADV_DONTNEED): they read zero, or take what a
    /// fill puts there.
    pub fn zap(&self, start: u64, end: u64) -> Result<()> {
        self.check(start, end)?;
        // SAFETY: the range lies inside the reservation (checked): no object of the
        // program lives there, only memory mapped through this type.
        let r = unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                (end - start) as usize,
                libc::MADV_DONTNEED,
            )
        };
        Errno::result(r)
            .map(drop)
            .map_err(|e| Error::sys(format!("MADV_DONTNEED of [{start:#x}, {end:#x})"), e))
    }

    /// Copies each `(address, bytes)` of `copies` into this process's memory with
    /// UFFDIO_COPY (allocation and copy in one step: no fault, no zeroing) through a
    /// userfaultfd of its own registered over `regions` for the time of the copy. Every
    /// destination page must be missing (fresh, or zapped).
    pub fn fill<'b>(
        &self,
        regions: &[(u64, u64)],
        copies: impl Iterator<Item = (u64, &'b [u8])>,
    ) -> Result<()> {
        for &(s, e) in regions {
            self.check(s, e)?;
        }
        // SAFETY: userfaultfd takes flags only and returns a new fd; no memory is passed.
        let r = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) };
        let fd = Errno::result(r).map_err(|e| Error::sys("userfaultfd", e))?;
        // SAFETY: the kernel just returned this fd; nothing else owns it.
        let uffd = Uffd::new(unsafe { OwnedFd::from_raw_fd(fd as i32) })?;
        for &(s, e) in regions {
            uffd.register_missing(s, e - s)?;
        }
        let mut result = Ok(());
        for (at, bytes) in copies {
            if let Err(e) = self
                .check(at, at + bytes.len() as u64)
                .and_then(|()| uffd.copy(at, bytes))
            {
                result = Err(e);
                break;
            }
        }
        for &(s, e) in regions {
            uffd.unregister(s, e - s)?;
        }
        result
    }
}

/// ckpt unmaps its placeholders once the root's seed is forked. A seed's inherited copy
/// is never dropped: a seed ends in pause() or _exit.
impl Drop for Reservation {
    fn drop(&mut self) {
        for &(s, e) in &self.ranges {
            // SAFETY: ckpt's own placeholders, mapped by `new`; ckpt never maps anything
            // else there (a seed, which does, is a copy of ckpt that never drops this).
            unsafe { libc::munmap(s as *mut libc::c_void, (e - s) as usize) };
        }
    }
}
