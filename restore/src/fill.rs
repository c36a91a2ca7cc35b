//! The copy of the pages file into the process, on every CPU, reading the file through
//! its mapping one window at a time.
//!
//! The copy is cut into jobs of at most 4 MiB (one UFFDIO_COPY, or one process_vm_writev
//! of several runs) that never straddle a 32 MiB window of the file. Threads take the jobs
//! in file order from a shared counter. Before a job its bytes are populated in ckpt's
//! mapping (one MADV_POPULATE_READ instead of a fault per 64 KiB; and UFFDIO_COPY must not
//! fault on its source, which sends it down a slow path), and the thread that finishes a
//! window's last job drops that window from ckpt's page tables (the page cache keeps it).
//! So ckpt's RSS stays about two windows whatever the file's size, instead of the whole
//! file. Windows are 2 MiB aligned in the file, like the mapping (the kernel aligns a
//! large file mapping to its offset), so the huge folios a dump leaves in the page cache
//! stay PMD-mapped and dropping one window never unmaps a neighbour's PMD.
//!
//! A compressed pages file is cut by frame instead (frames are independent): each thread
//! decompresses a frame into a buffer of its own and places the runs it holds.

use crate::RestoreError;
use ckpt_images::pages::Frame;
use ckpt_images::progress::Progress;
use ckpt_images::{pb, PagesReader, PAGE_SIZE};
use ckpt_sys::process::Mmap;
use ckpt_sys::uffd::Uffd;
use ckpt_sys::{mem, Pid};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

type R<T> = Result<T, RestoreError>;

const PAGE: u64 = PAGE_SIZE as u64;
/// Bytes of the file mapped at a time (per window; about two are mapped at once).
pub const WINDOW: u64 = 32 << 20;
/// Largest job: 4 MiB per UFFDIO_COPY measured best here, and small enough that both
/// CPUs share a window.
const JOB: u64 = 4 << 20;

const MADV_HUGEPAGE: u32 = 14;
const MADV_NOHUGEPAGE: u32 = 15;

/// The host's transparent huge page mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thp {
    Always,
    Madvise,
    Never,
}

/// The bracketed word of /sys/kernel/mm/transparent_hugepage/enabled (`never` if the file
/// is missing: a kernel without THP).
pub fn thp_mode() -> Thp {
    let s =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if s.contains("[always]") {
        Thp::Always
    } else if s.contains("[madvise]") {
        Thp::Madvise
    } else {
        Thp::Never
    }
}

/// Whether VMA `v` is to be filled so that it gets transparent huge pages again: it had
/// some at the dump (in an image from before that was recorded: it has MADV_HUGEPAGE), and
/// the host gives them to it (`always` unless MADV_NOHUGEPAGE, `madvise` with
/// MADV_HUGEPAGE). Such a VMA is filled by process_vm_writev, whose faults allocate huge
/// pages where a whole aligned 2 MiB fits; UFFDIO_COPY, faster otherwise, only ever
/// places 4 KiB pages.
pub fn wants_thp(v: &pb::Vma, mode: Thp) -> bool {
    let hg = v.madvise.contains(&MADV_HUGEPAGE);
    let nh = v.madvise.contains(&MADV_NOHUGEPAGE);
    let had = v.anon_huge_bytes.map_or(hg, |b| b > 0);
    had && match mode {
        Thp::Always => !nh,
        Thp::Madvise => hg,
        Thp::Never => false,
    }
}

/// The pages file as mapped by ckpt.
pub struct Source<'a> {
    pub reader: &'a PagesReader<&'a Mmap>,
    pub map: &'a Mmap,
}

impl Source<'_> {
    fn populate(&self, off: u64, len: u64) {
        ckpt_sys::process::populate_read(self.map, off as usize, len as usize);
    }

    fn release(&self, off: u64, len: u64) {
        ckpt_sys::process::release_range(self.map, off as usize, len as usize);
    }
}

/// Where a job's bytes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// One UFFDIO_COPY to this address.
    Uffd(u64),
    /// process_vm_writev of the file's bytes back to back into these ranges.
    Write(Vec<(u64, usize)>),
}

/// `len` bytes at `off` in the pages file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub off: u64,
    pub len: u64,
    pub dest: Dest,
}

/// Cuts the runs into jobs. `uffd_vma[i]`: VMA i is filled by UFFDIO_COPY; with
/// `skip_uffd` (lazy restore) those runs are left out. Runs are sorted, inside VMAs.
pub fn plan(
    runs: &[pb::PageRun],
    vmas: &[pb::Vma],
    uffd_vma: &[bool],
    skip_uffd: bool,
) -> Vec<Job> {
    let mut jobs: Vec<Job> = Vec::new();
    let mut vi = 0;
    for r in runs {
        while vmas[vi].end <= r.vaddr {
            vi += 1;
        }
        let by_uffd = uffd_vma[vi];
        if by_uffd && skip_uffd {
            continue;
        }
        let end = r.offset + r.nr_pages * PAGE;
        let mut off = r.offset;
        while off < end {
            let window_end = (off / WINDOW + 1) * WINDOW;
            let len = (end - off).min(JOB).min(window_end - off);
            let vaddr = r.vaddr + (off - r.offset);
            if by_uffd {
                jobs.push(Job {
                    off,
                    len,
                    dest: Dest::Uffd(vaddr),
                });
                off += len;
                continue;
            }
            // Joins the previous write job if it is the file's next bytes, in the same
            // window, and the job stays small.
            let joined = match jobs.last_mut() {
                Some(Job {
                    off: o,
                    len: l,
                    dest: Dest::Write(ranges),
                }) if *o + *l == off
                    && *o / WINDOW == off / WINDOW
                    && ranges.len() < mem::IOV_MAX =>
                {
                    let room = JOB.saturating_sub(*l);
                    if room == 0 {
                        None
                    } else {
                        let take = len.min(room);
                        ranges.push((vaddr, take as usize));
                        *l += take;
                        Some(take)
                    }
                }
                _ => None,
            };
            let took = match joined {
                Some(t) => t,
                None => {
                    jobs.push(Job {
                        off,
                        len,
                        dest: Dest::Write(vec![(vaddr, len as usize)]),
                    });
                    len
                }
            };
            off += took;
        }
    }
    jobs
}

/// Runs the jobs on every CPU (see the module's doc).
pub fn copy(
    pid: Pid,
    src: &Source,
    jobs: &[Job],
    uffd: Option<&Uffd>,
    progress: &dyn Progress,
) -> R<()> {
    let windows = src.reader.len().div_ceil(WINDOW) as usize;
    let left: Vec<AtomicUsize> = (0..windows).map(|_| AtomicUsize::new(0)).collect();
    for j in jobs {
        left[(j.off / WINDOW) as usize].fetch_add(1, Ordering::Relaxed);
    }
    // A small process is filled on this thread: a helper thread would cost more than
    // it saves, and in a tree the puppets already keep every CPU busy.
    let total: u64 = jobs.iter().map(|j| j.len).sum();
    let threads = if total <= JOB { 1 } else { cpus() };
    on_cpus(
        threads,
        jobs.len(),
        || Ok(()),
        |_, i| {
            let j = &jobs[i];
            src.populate(j.off, j.len);
            let bytes = src.reader.slice(j.off, j.len)?;
            match &j.dest {
                Dest::Uffd(vaddr) => uffd
                    .ok_or_else(|| RestoreError::Refused("UFFDIO_COPY job without a uffd".into()))?
                    .copy(*vaddr, bytes)?,
                Dest::Write(ranges) => mem::write_ranges(pid, ranges, bytes)?,
            }
            progress.advance(j.len);
            let w = j.off / WINDOW;
            if left[w as usize].fetch_sub(1, Ordering::AcqRel) == 1 {
                src.release(w * WINDOW, WINDOW);
            }
            Ok(())
        },
    )
}

/// Verifies the chunks of the pages file marked in `want` on every CPU (a lazy restore's,
/// whose file was not verified before the seed); returns which chunks are now verified.
pub fn verify_chunks(
    src: &Source,
    path: &Path,
    entry: &pb::ImageFile,
    want: &[bool],
) -> R<Vec<bool>> {
    let cs = entry.chunk_size as usize;
    let todo: Vec<usize> = (0..want.len()).filter(|&i| want[i]).collect();
    on_every_cpu(
        todo.len(),
        || Ok(()),
        |_, n| {
            let i = todo[n];
            let want = entry.chunk_xxh3.get(i).copied().unwrap_or(!0);
            // A pages file still arriving (post-copy): the chunk's bytes first.
            // The image's own file only (a chain's earlier files are mapped after it).
            let bytes = src.reader.bytes();
            let own = &bytes[..(entry.size as usize).min(bytes.len())];
            let ok = crate::feed::arrived(i)
                && ckpt_images::chunks::chunk_ok(
                    own,
                    cs,
                    i,
                    crate::feed::expected(i, want),
                    &|off, len| ckpt_sys::process::populate_read(src.map, off, len),
                );
            if ok {
                Ok(())
            } else {
                Err(RestoreError::Image(ckpt_images::ImageError::Checksum {
                    path: path.into(),
                }))
            }
        },
    )?;
    Ok(want.to_vec())
}

/// Where the runs of a compressed pages file go: the process, its page runs and VMAs,
/// which VMAs are filled through `uffd` (`uffd_vma` as for `plan`), and the progress.
pub struct FrameDest<'a> {
    pub pid: Pid,
    pub runs: &'a [pb::PageRun],
    pub vmas: &'a [pb::Vma],
    pub uffd_vma: &'a [bool],
    pub uffd: Option<&'a Uffd>,
    pub progress: &'a dyn Progress,
}

/// The copy for a compressed pages file: one job per frame.
pub fn copy_frames(dest: &FrameDest, src: &Source, path: &Path, frames: &[Frame]) -> R<()> {
    let max = frames.iter().map(|f| f.raw_len).max().unwrap_or(0) as usize;
    let refused = |what: String| RestoreError::Refused(format!("{}: {what}", path.display()));
    let bytes = src.reader.bytes();
    on_every_cpu(
        frames.len(),
        || {
            let dz = zstd::bulk::Decompressor::new().map_err(|e| refused(format!("zstd: {e}")))?;
            Ok((dz, vec![0u8; max]))
        },
        |(dz, buf), n| {
            let f = &frames[n];
            let (from, to) = (
                f.file_offset as usize,
                (f.file_offset + f.file_len) as usize,
            );
            let packed = bytes
                .get(from..to)
                .ok_or_else(|| refused(format!("frame {n} lies outside the file")))?;
            src.populate(f.file_offset, f.file_len);
            let out = &mut buf[..f.raw_len as usize];
            let got = dz
                .decompress_to_buffer(packed, out)
                .map_err(|e| refused(format!("frame {n} does not decompress: {e}")))?;
            // Whole pages of this frame only: the other thread may be reading the next.
            let inner = f.file_offset.next_multiple_of(PAGE);
            let inner_end = ((f.file_offset + f.file_len) / PAGE) * PAGE;
            if inner_end > inner {
                src.release(inner, inner_end - inner);
            }
            if got as u64 != f.raw_len {
                return Err(refused(format!(
                    "frame {n} holds {got} bytes, its header says {}",
                    f.raw_len
                )));
            }
            place_frame(dest, f, out)
        },
    )
}

/// Copies the runs (or parts of runs) a decompressed frame holds into the process.
fn place_frame(dest: &FrameDest, f: &Frame, data: &[u8]) -> R<()> {
    let FrameDest {
        pid,
        runs,
        vmas,
        uffd_vma,
        uffd,
        progress,
    } = *dest;
    let frame_end = f.raw_offset + f.raw_len;
    let first = runs.partition_point(|r| r.offset + r.nr_pages * PAGE <= f.raw_offset);
    for r in runs[first..].iter().take_while(|r| r.offset < frame_end) {
        let from = r.offset.max(f.raw_offset);
        let to = (r.offset + r.nr_pages * PAGE).min(frame_end);
        let piece = &data[(from - f.raw_offset) as usize..(to - f.raw_offset) as usize];
        let vaddr = r.vaddr + (from - r.offset);
        let vi = vmas.partition_point(|v| v.end <= r.vaddr);
        match uffd {
            Some(u) if uffd_vma.get(vi) == Some(&true) => u.copy(vaddr, piece)?,
            _ => mem::write(pid, vaddr, piece)?,
        }
        progress.advance(piece.len() as u64);
    }
    Ok(())
}

/// This machine's CPUs (read once: the standard library reads cgroup files for it).
pub fn cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |c| c.get()))
}

/// Runs `work(state, i)` for every i in 0..n on every CPU, each thread with a `state` of
/// its own; threads take the next i from a shared counter, so the jobs start in order.
/// The first error stops the others and is returned.
fn on_every_cpu<S>(
    n: usize,
    init: impl Fn() -> R<S> + Sync,
    work: impl Fn(&mut S, usize) -> R<()> + Sync,
) -> R<()> {
    on_cpus(cpus(), n, init, work)
}

/// `on_every_cpu` on `cpus` threads (this one included).
fn on_cpus<S>(
    cpus: usize,
    n: usize,
    init: impl Fn() -> R<S> + Sync,
    work: impl Fn(&mut S, usize) -> R<()> + Sync,
) -> R<()> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let worker = || -> R<()> {
        let mut state = init()?;
        while !failed.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return Ok(());
            }
            if let Err(e) = work(&mut state, i) {
                failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok(())
    };
    let helpers = cpus.min(n).saturating_sub(1);
    std::thread::scope(|s| {
        let others: Vec<_> = (0..helpers).map(|_| s.spawn(worker)).collect();
        let mine = worker();
        others
            .into_iter()
            .map(|t| t.join().expect("a copy thread does not panic"))
            .fold(mine, |acc, r| acc.and(r))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_pages_where_the_dump_had_them_and_the_host_allows() {
        let v = |madvise: Vec<u32>, huge: Option<u64>| pb::Vma {
            madvise,
            anon_huge_bytes: huge,
            ..Default::default()
        };
        let hg = || vec![MADV_HUGEPAGE];
        let nh = || vec![MADV_NOHUGEPAGE];
        // `madvise`: only with MADV_HUGEPAGE, and only if it had huge pages.
        assert!(wants_thp(&v(hg(), Some(2 << 20)), Thp::Madvise));
        assert!(!wants_thp(&v(hg(), Some(0)), Thp::Madvise));
        assert!(!wants_thp(&v(vec![], Some(2 << 20)), Thp::Madvise));
        // `always`: any VMA that had them, but not against MADV_NOHUGEPAGE.
        assert!(wants_thp(&v(vec![], Some(2 << 20)), Thp::Always));
        assert!(!wants_thp(&v(nh(), Some(2 << 20)), Thp::Always));
        assert!(!wants_thp(&v(vec![], Some(0)), Thp::Always));
        assert!(!wants_thp(&v(hg(), Some(2 << 20)), Thp::Never));
        // Older images: MADV_HUGEPAGE VMAs, as before.
        assert!(wants_thp(&v(hg(), None), Thp::Madvise));
        assert!(!wants_thp(&v(vec![], None), Thp::Always));
    }

    fn vma(start: u64, end: u64) -> pb::Vma {
        pb::Vma {
            start,
            end,
            ..Default::default()
        }
    }

    fn run(vaddr: u64, nr_pages: u64, offset: u64) -> pb::PageRun {
        pb::PageRun {
            vaddr,
            nr_pages,
            offset,
            ..Default::default()
        }
    }

    #[test]
    fn jobs_stay_in_their_window_and_cover_every_byte() {
        let g = 1u64 << 30;
        let vmas = [vma(g, 2 * g), vma(3 * g, 4 * g)];
        // 40 MiB by uffd from offset 4 KiB, then 3 small runs by write, back to back.
        let big = 40 << 20;
        let runs = [
            run(g, big / PAGE, PAGE),
            run(3 * g, 1, PAGE + big),
            run(3 * g + 2 * PAGE, 2, 2 * PAGE + big),
            run(3 * g + 8 * PAGE, 1, 4 * PAGE + big),
        ];
        let jobs = plan(&runs, &vmas, &[true, false], false);
        let mut at = PAGE;
        for j in &jobs {
            assert_eq!(j.off, at, "{jobs:?}");
            assert!(j.len <= JOB);
            assert_eq!(j.off / WINDOW, (j.off + j.len - 1) / WINDOW, "{j:?}");
            at += j.len;
        }
        assert_eq!(at, 5 * PAGE + big);
        // The window boundary at 32 MiB cuts a uffd job short.
        assert!(jobs.iter().any(|j| j.off + j.len == WINDOW));
        // The three write runs are one job of three ranges.
        assert_eq!(
            jobs.last().unwrap().dest,
            Dest::Write(vec![
                (3 * g, 4096),
                (3 * g + 2 * PAGE, 8192),
                (3 * g + 8 * PAGE, 4096)
            ])
        );
        // Lazy: only the write job is left.
        assert_eq!(plan(&runs, &vmas, &[true, false], true).len(), 1);
    }
}
