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
//!
//! Here: what the puppet hands over, the shared state and `serve`; `bitmap` (served pages,
//! checked chunks), `copy` (the copier and whole-range copies), `server` (the fault loop
//! and events), `fork` (fork children: filled, or poisoned and killed), `handback` (the
//! process's copy of the fd closed).

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

mod bitmap;
mod copy;
mod fork;
mod handback;
mod server;

use handback::remove_remote_fd;
use server::fault_loop;

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
