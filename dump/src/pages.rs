//! Memory: which pages to keep (pagemap), and the copy from the task into pages-1.img.
//!
//! Kept: private anonymous pages present or swapped; the written (anonymous, COW'd) pages
//! of private file mappings; every allocated page of shared anonymous memory. Unmodified
//! file pages and shared file mappings live in their files. Adjacent kept pages form runs;
//! the copy reads many runs per process_vm_readv into one reused buffer of a few MiB and
//! appends it to the pages file, so the image is never held in memory.

use crate::mm::VmaInfo;
use crate::DumpError;
use ckpt_images::record::RecordWriter;
use ckpt_images::{pb, PagesWriter, PAGE_SIZE};
use ckpt_sys::proc::{
    Pagemap, PAGE_IS_FILE, PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PM_FILE, PM_PFN_MASK,
    PM_PRESENT, PM_SWAP,
};
use ckpt_sys::{mem, Pid};
use nix::errno::Errno;
use nix::unistd::{lseek, Whence};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};

pub const PAGES_ID: u32 = 1;
const PAGE: u64 = PAGE_SIZE as u64;
/// Bytes read per batch of runs.
const BATCH: usize = 8 << 20;
/// Pagemap entries read per pread (512 KiB of entries, 256 MiB of address space).
const PAGEMAP_CHUNK: u64 = 64 << 10;

/// Pages [vaddr, vaddr + nr_pages * 4 KiB) to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub vaddr: u64,
    pub nr_pages: u64,
    /// process_vm_readv cannot read it (PROT_NONE); go through /proc/PID/mem.
    pub unreadable: bool,
}

/// Builds runs from pages given in increasing address order.
#[derive(Default)]
pub struct Coalescer {
    runs: Vec<Run>,
}

impl Coalescer {
    pub fn push(&mut self, vaddr: u64, nr_pages: u64, unreadable: bool) {
        if nr_pages == 0 {
            return;
        }
        if let Some(last) = self.runs.last_mut() {
            if last.vaddr + last.nr_pages * PAGE == vaddr && last.unreadable == unreadable {
                last.nr_pages += nr_pages;
                return;
            }
        }
        self.runs.push(Run {
            vaddr,
            nr_pages,
            unreadable,
        });
    }

    pub fn into_runs(self) -> Vec<Run> {
        self.runs
    }
}

/// Whether a page with this pagemap entry is kept, for a VMA of `kind`.
pub fn keep(kind: pb::VmaKind, entry: u64) -> bool {
    match kind {
        pb::VmaKind::VmaAnon | pb::VmaKind::VmaAnonShared => entry & (PM_PRESENT | PM_SWAP) != 0,
        pb::VmaKind::VmaFilePrivate => entry & (PM_PRESENT | PM_SWAP) != 0 && entry & PM_FILE == 0,
        // Its bytes are the segment's, stored once with the container's ipc namespace.
        pb::VmaKind::VmaFileShared | pb::VmaKind::VmaSysvShm => false,
    }
}

/// Leaves out of `runs` the pages of shared memory objects that an earlier process of the
/// tree stored already (`covered`, by shmem inode), and adds this process's to it: each
/// page of an object is stored once. Within one process nothing is dropped (a lazy
/// restore serves each mapping from its own runs).
pub fn drop_stored_shared(
    runs: Vec<Run>,
    vmas: &[VmaInfo],
    covered: &mut ckpt_images::intervals::Covered,
) -> Vec<Run> {
    if !vmas.iter().any(|v| v.kind() == pb::VmaKind::VmaAnonShared) {
        return runs;
    }
    let mut out = Vec::with_capacity(runs.len());
    let mut mine = Vec::new();
    let mut vi = 0;
    for r in runs {
        while vmas[vi].vma.end <= r.vaddr {
            vi += 1;
        }
        let v = &vmas[vi];
        if v.kind() != pb::VmaKind::VmaAnonShared || v.vma.shm_id == 0 {
            out.push(r);
            continue;
        }
        let lo = v.shm_offset + (r.vaddr - v.vma.start);
        let hi = lo + r.nr_pages * PAGE;
        for (a, b) in covered.missing(v.vma.shm_id, lo, hi) {
            out.push(Run {
                vaddr: r.vaddr + (a - lo),
                nr_pages: (b - a) / PAGE,
                unreadable: r.unreadable,
            });
        }
        mine.push((v.vma.shm_id, lo, hi));
    }
    for (id, lo, hi) in mine {
        covered.mark(id, lo, hi);
    }
    out
}

/// The runs of every VMA, in address order; runs never span two VMAs.
pub fn plan(pid: Pid, vmas: &[VmaInfo]) -> Result<Vec<Run>, DumpError> {
    let t0 = std::time::Instant::now();
    let pagemap = Pagemap::open(pid)?;
    // Pages only ever read map the shared zero page: present, but nothing to store.
    let zero_pfn = ckpt_sys::proc::zero_page_pfn();
    let mut all = Vec::new();
    let mut entries = Vec::new();
    let mut found = Vec::new();
    for v in vmas {
        let kind = v.kind();
        if kind == pb::VmaKind::VmaFileShared || kind == pb::VmaKind::VmaSysvShm {
            continue;
        }
        let unreadable = !v.readable;
        let mut c = Coalescer::default();
        if kind == pb::VmaKind::VmaAnonShared {
            if let Some(ranges) = shmem_data(pid, v) {
                for (s, e) in ranges {
                    c.push(s, (e - s) / PAGE, unreadable);
                }
                all.extend(c.into_runs());
                continue;
            }
        }
        let (start, end) = (v.vma.start, v.vma.end);
        // The kernel's own walk where it has one (PAGEMAP_SCAN): what to keep, as ranges
        // (a 4 GiB VMA with every 16th page written: 5 ms, against 16-30 ms reading and
        // looking at its 1M pagemap entries).
        let none = match kind {
            pb::VmaKind::VmaAnon => PAGE_IS_PFNZERO,
            pb::VmaKind::VmaFilePrivate => PAGE_IS_FILE,
            _ => 0,
        };
        found.clear();
        if pagemap.scan(
            start,
            end,
            PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            none,
            &mut found,
        )? {
            for &(s, e) in &found {
                c.push(s, (e - s) / PAGE, unreadable);
            }
            all.extend(c.into_runs());
            continue;
        }
        let mut at = start;
        while at < end {
            let to = end.min(at + PAGEMAP_CHUNK * PAGE);
            pagemap.read(at, to, &mut entries)?;
            for (i, &e) in entries.iter().enumerate() {
                let zero = kind == pb::VmaKind::VmaAnon
                    && e & PM_PRESENT != 0
                    && Some(e & PM_PFN_MASK) == zero_pfn;
                if keep(kind, e) && !zero {
                    c.push(at + i as u64 * PAGE, 1, unreadable);
                }
            }
            at = to;
        }
        all.extend(c.into_runs());
    }
    tracing::debug!(
        ms = ckpt_images::units::ms(t0),
        runs = all.len(),
        "pages planned"
    );
    Ok(all)
}

/// The allocated ranges (in task addresses) of a shared anonymous mapping, from its shmem
/// object with SEEK_DATA: that includes pages swapped out or only touched by another
/// process, which pagemap does not show. None if the object cannot be opened (then the
/// caller falls back on pagemap).
fn shmem_data(pid: Pid, v: &VmaInfo) -> Option<Vec<(u64, u64)>> {
    let (start, end) = (v.vma.start, v.vma.end);
    let path = format!("/proc/{pid}/map_files/{start:x}-{end:x}");
    let f = std::fs::File::open(&path)
        .map_err(|e| tracing::debug!("{path}: {e}: using pagemap"))
        .ok()?;
    let fd = f.as_raw_fd();
    let (lo, hi) = (v.shm_offset, v.shm_offset + (end - start));
    let mut out = Vec::new();
    let mut pos = lo;
    while pos < hi {
        let data = match lseek(fd, pos as i64, Whence::SeekData) {
            Ok(d) => d as u64,
            Err(Errno::ENXIO) => break,
            Err(e) => {
                tracing::debug!("{path}: SEEK_DATA: {e}: using pagemap");
                return None;
            }
        };
        if data >= hi {
            break;
        }
        let hole = match lseek(fd, data as i64, Whence::SeekHole) {
            Ok(h) => h as u64,
            Err(_) => hi,
        };
        let s = data & !(PAGE - 1);
        let e = (hole.min(hi) + PAGE - 1) & !(PAGE - 1);
        if e > s {
            out.push((s - lo + start, e.min(hi) - lo + start));
        }
        pos = e.max(pos + PAGE);
    }
    Some(out)
}

pub struct Copied {
    pub pages: u64,
    pub runs: u64,
    /// Time the reader spent copying out of the task (and hashing raw pages for the chunk
    /// checksums) and the writer spent writing (and, with --compress, compressing and
    /// hashing the frames): the larger one is the bottleneck of the pipeline.
    pub read_ms: f64,
    pub write_ms: f64,
}

/// Where a copy records the runs it stored: a pagemap file, or a list in memory.
pub trait RunsOut {
    fn put(&mut self, r: pb::PageRun) -> Result<(), DumpError>;
}

impl<W: Write> RunsOut for RecordWriter<W> {
    fn put(&mut self, r: pb::PageRun) -> Result<(), DumpError> {
        Ok(self.write(&r)?)
    }
}

impl RunsOut for Vec<pb::PageRun> {
    fn put(&mut self, r: pb::PageRun) -> Result<(), DumpError> {
        self.push(r);
        Ok(())
    }
}

/// Copies the runs into `pages` and writes the pagemap: a PagemapHead, then one PageRun
/// per run.
///
/// Reading and writing overlap: this thread copies batches out of the task with
/// process_vm_readv while a writer thread appends the previous ones to the pages file
/// (getting page cache pages is the slow half on this machine). A few batch buffers go
/// round between the two, so memory stays bounded whatever the image size.
#[allow(clippy::too_many_arguments)]
pub fn copy<W: Write>(
    pid: Pid,
    runs: &[Run],
    pagemap: &mut RecordWriter<W>,
    pages: &mut PagesWriter,
    compress: Option<i32>,
    bufs: &mut Buffers,
    progress: &dyn ckpt_images::progress::Progress,
    fuzzy: bool,
) -> Result<Copied, DumpError> {
    let nr_pages: u64 = runs.iter().map(|r| r.nr_pages).sum();
    pagemap.write(&pb::PagemapHead {
        pages_id: PAGES_ID,
        nr_pages,
        compression: if compress.is_some() {
            pb::Compression::Zstd as i32
        } else {
            pb::Compression::None as i32
        },
    })?;
    copy_runs(pid, runs, pagemap, pages, compress, bufs, progress, fuzzy)
}

/// [`copy`] without the PagemapHead: the runs stored go to `pagemap` as they are written.
#[allow(clippy::too_many_arguments)]
pub fn copy_runs(
    pid: Pid,
    runs: &[Run],
    pagemap: &mut dyn RunsOut,
    pages: &mut PagesWriter,
    compress: Option<i32>,
    bufs: &mut Buffers,
    progress: &dyn ckpt_images::progress::Progress,
    fuzzy: bool,
) -> Result<Copied, DumpError> {
    let nr_pages: u64 = runs.iter().map(|r| r.nr_pages).sum();
    let total_bytes = (nr_pages * PAGE) as usize;
    let start = pages.raw_offset();
    // Raw pages are hashed by the reader (see `PagesWriter::hash_elsewhere`); compressed
    // frames only exist on the writer's side, which hashes them as it writes.
    let hasher = if compress.is_none() {
        pages.hash_elsewhere()
    } else {
        None
    };
    let unread = pages.unread();
    let file = &mut *pages;
    // A copy that fits one batch (every process of a tree like the bench's ring) is read
    // and written on this thread: a writer thread would be spawned and joined for a single
    // buffer, and on a loaded machine each of those waits for the scheduler (a tree of 100
    // small processes: 95-850 ms of "memory written" in all, against a few ms inline).
    let inline = total_bytes <= BATCH;
    let (copied, hasher) = std::thread::scope(|s| {
        let (full_tx, full_rx) = sync_channel::<(Buffer, usize)>(BUFFERS);
        let (free_tx, free_rx) = channel::<Buffer>();
        let mut ends = Some((full_rx, free_tx, file));
        let writer = if inline {
            None
        } else {
            let (rx, tx, file) = ends.take().expect("taken once");
            Some(s.spawn(move || write_batches(rx, tx, file, compress)))
        };
        let mut out = Output {
            free: free_rx,
            full: full_tx,
            made: 0,
            buf_len: total_bytes.min(BATCH),
            offset: start,
            ready: std::mem::take(&mut bufs.0),
            busy: std::time::Duration::ZERO,
            hash: hasher,
            unread,
        };
        progress.begin("dumping memory", total_bytes as u64);
        let read = read_all(pid, runs, &mut out, pagemap, progress, fuzzy);
        progress.end();
        let read_ms = out.busy.as_secs_f64() * 1e3;
        let hasher = out.hash.take();
        let Output {
            free, full, ready, ..
        } = out;
        drop(full);
        let written = match (writer, ends) {
            (Some(w), _) => w.join().expect("the pages writer does not panic"),
            // The one batch (the channel holds BUFFERS) is queued already.
            (None, Some((rx, tx, file))) => write_batches(rx, tx, file, compress),
            (None, None) => unreachable!("the writer's ends are kept when it is not spawned"),
        };
        // The buffers go on to the next process of the tree.
        bufs.0 = ready;
        bufs.0.extend(free.try_iter());
        // A write error stops the reader too; report the cause, not the symptom.
        let write_ms = written?;
        read?;
        let copied = Copied {
            pages: nr_pages,
            runs: runs.len() as u64,
            read_ms,
            write_ms,
        };
        Ok::<_, DumpError>((copied, hasher))
    })?;
    if let Some(h) = hasher {
        pages.hashed_elsewhere(h);
    }
    Ok(copied)
}

/// The writer's end of the pipeline: appends each full buffer to the pages file (one
/// zstd frame per batch with `--compress`) and hands the buffer back. Returns the time
/// spent writing, in ms.
fn write_batches(
    full_rx: Receiver<(Buffer, usize)>,
    free_tx: std::sync::mpsc::Sender<Buffer>,
    file: &mut PagesWriter,
    compress: Option<i32>,
) -> Result<f64, DumpError> {
    let mut busy = std::time::Duration::ZERO;
    let mut zbuf = Vec::new();
    let mut zstd = match compress {
        Some(level) => {
            let mut z = zstd::bulk::Compressor::new(level)
                .map_err(|e| DumpError::Refused(format!("zstd level {level}: {e}")))?;
            // Both CPUs compress; the copy out of the task is cheap beside it.
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            if cpus > 1 {
                let _ = z.multithread(cpus as u32);
            }
            Some(z)
        }
        None => None,
    };
    for (buf, len) in full_rx {
        let t = std::time::Instant::now();
        match zstd.as_mut() {
            // One frame per batch: restore decompresses a batch at a time.
            Some(z) => {
                zbuf.clear();
                zbuf.reserve(zstd::zstd_safe::compress_bound(len));
                z.compress_to_buffer(&buf[..len], &mut zbuf)
                    .map_err(|e| DumpError::Refused(format!("zstd compression: {e}")))?;
                file.write_frame(len, &zbuf)?;
            }
            None => {
                file.write(&buf[..len])?;
            }
        }
        busy += t.elapsed();
        let _ = free_tx.send(buf);
    }
    Ok(busy.as_secs_f64() * 1e3)
}

/// Buffers in flight between the reader and the writer.
const BUFFERS: usize = 3;

/// One batch buffer (see `ckpt_sys::process::copy_buffer`).
type Buffer = ckpt_sys::process::MmapMut;

/// The batch buffers, made before the task is stopped: taking fresh memory can mean
/// compaction or reclaim on a busy host, which should not lengthen the frozen time.
pub struct Buffers(Vec<Buffer>);

impl Buffers {
    /// Buffers for a task holding about `rss` bytes: a small process gets small ones
    /// (a `sleep` needs no 24 MiB). If the task turns out to need bigger batches, the
    /// copy makes them then.
    pub fn prepare(rss: u64) -> Result<Buffers, DumpError> {
        const HUGE: u64 = 2 << 20;
        // Under a huge page one batch holds everything: one small buffer, in 4 KiB pages
        // (populating three 2 MiB huge pages cost a `sleep` dump 2-13 ms, zeroing them
        // and, on this VM, taking them back from the host).
        let (len, count) = if rss < HUGE {
            (rss.next_multiple_of(64 << 10).max(64 << 10), 1)
        } else {
            (rss.next_multiple_of(HUGE).min(BATCH as u64), BUFFERS)
        };
        let bufs = (0..count)
            .map(|_| ckpt_sys::process::copy_buffer(len as usize))
            .collect::<Result<_, _>>()?;
        Ok(Buffers(bufs))
    }
}

/// The reader's end of the pipeline to the writer thread.
struct Output {
    free: Receiver<Buffer>,
    full: SyncSender<(Buffer, usize)>,
    /// Buffers made before the seize, not used yet.
    ready: Vec<Buffer>,
    made: usize,
    buf_len: usize,
    /// Where the next batch lands in the pages file.
    offset: u64,
    /// Time spent copying out of the task (and hashing).
    busy: std::time::Duration,
    /// The pages file's chunk hashing, when the reader does it.
    hash: Option<ckpt_images::PagesHasher>,
    /// The pages are not read at all (`PagesWriter::leave_unread`: post-copy's source
    /// reads and hashes them as it sends them).
    unread: bool,
}

impl Output {
    fn take(&mut self) -> Result<Buffer, DumpError> {
        if self.made < BUFFERS {
            self.made += 1;
            return match self.ready.pop() {
                Some(b) if b.len() >= self.buf_len => Ok(b),
                _ => Ok(ckpt_sys::process::copy_buffer(self.buf_len)?),
            };
        }
        self.free.recv().map_err(|_| writer_gone())
    }

    fn send(&mut self, buf: Buffer, len: usize) -> Result<u64, DumpError> {
        let at = self.offset;
        self.full.send((buf, len)).map_err(|_| writer_gone())?;
        self.offset += len as u64;
        Ok(at)
    }
}

fn writer_gone() -> DumpError {
    DumpError::Lost("the pages writer stopped".into())
}

fn read_all(
    pid: Pid,
    runs: &[Run],
    out: &mut Output,
    pagemap: &mut dyn RunsOut,
    progress: &dyn ckpt_images::progress::Progress,
    fuzzy: bool,
) -> Result<(), DumpError> {
    // Pieces of runs (a run larger than a batch is split) for the current batch, each
    // with whether it continues the piece before it (the same run).
    let mut batch: Vec<(Run, bool)> = Vec::new();
    let mut batch_len = 0usize;
    let mut pending: Option<pb::PageRun> = None;
    for run in runs {
        let mut vaddr = run.vaddr;
        let mut left = run.nr_pages;
        while left > 0 {
            let room = (BATCH - batch_len) / PAGE_SIZE;
            let n = left.min(room as u64);
            let piece = Run {
                vaddr,
                nr_pages: n,
                unreadable: run.unreadable,
            };
            batch.push((piece, left != run.nr_pages));
            batch_len += n as usize * PAGE_SIZE;
            vaddr += n * PAGE;
            left -= n;
            if batch_len == BATCH {
                ckpt_sys::abort::check()?;
                flush(pid, &batch, batch_len, out, pagemap, &mut pending, fuzzy)?;
                progress.advance(batch_len as u64);
                ckpt_sys::testhold::hold("copying", &|| false);
                batch.clear();
                batch_len = 0;
            }
        }
    }
    if batch_len > 0 {
        flush(pid, &batch, batch_len, out, pagemap, &mut pending, fuzzy)?;
    }
    if let Some(p) = pending {
        pagemap.put(p)?;
    }
    Ok(())
}

/// Reads one batch into a buffer, hands it to the writer and records its runs (the
/// pieces of a run split across batches are joined again).
fn flush(
    pid: Pid,
    batch: &[(Run, bool)],
    batch_len: usize,
    out: &mut Output,
    pagemap: &mut dyn RunsOut,
    pending: &mut Option<pb::PageRun>,
    fuzzy: bool,
) -> Result<(), DumpError> {
    let mut owned = out.take()?;
    let t = std::time::Instant::now();
    let buf = &mut owned[..batch_len];
    // Readable pieces go through process_vm_readv together; the rest one by one through
    // /proc/PID/mem.
    let mut i = 0;
    let mut at = 0usize;
    let len = |r: &Run| r.nr_pages as usize * PAGE_SIZE;
    if out.unread {
        i = batch.len();
    }
    while i < batch.len() {
        let r = &batch[i].0;
        if r.unreadable {
            let l = len(r);
            let got = mem::peek(pid, r.vaddr, &mut buf[at..at + l]);
            if got.is_err() && fuzzy {
                read_fuzzy(pid, &[(r.vaddr, l)], &mut buf[at..at + l]);
            } else {
                got?;
            }
            at += l;
            i += 1;
            continue;
        }
        let mut ranges = Vec::new();
        let from = at;
        while i < batch.len() && !batch[i].0.unreadable {
            let r = &batch[i].0;
            ranges.push((r.vaddr, len(r)));
            at += len(r);
            i += 1;
        }
        let got = mem::read_ranges(pid, &ranges, &mut buf[from..at]);
        if got.is_err() && fuzzy {
            read_fuzzy(pid, &ranges, &mut buf[from..at]);
        } else {
            got?;
        }
    }
    if let Some(h) = out.hash.as_mut().filter(|_| !out.unread) {
        h.update(buf);
    }
    out.busy += t.elapsed();
    let mut offset = out.send(owned, batch_len)?;
    for (r, continues) in batch {
        match pending {
            Some(p) if *continues => {
                debug_assert_eq!(p.vaddr + p.nr_pages * PAGE, r.vaddr);
                debug_assert_eq!(p.offset + p.nr_pages * PAGE, offset);
                p.nr_pages += r.nr_pages;
            }
            _ => {
                if let Some(p) = pending.take() {
                    pagemap.put(p)?;
                }
                *pending = Some(pb::PageRun {
                    vaddr: r.vaddr,
                    nr_pages: r.nr_pages,
                    offset,
                    from_parent: false,
                });
            }
        }
        offset += r.nr_pages * PAGE;
    }
    Ok(())
}

/// A pre-dump's copy of a running process, after a read failed: the process unmapped or
/// moved some of the pages since they were planned. Each page is read on its own; one
/// that is gone reads zero. No later dump takes such a page from this image: its address
/// is no longer in a VMA the tracker had registered (`track.rs`).
fn read_fuzzy(pid: Pid, ranges: &[(u64, usize)], buf: &mut [u8]) {
    let mut at = 0usize;
    for &(addr, len) in ranges {
        for off in (0..len).step_by(PAGE_SIZE) {
            let page = &mut buf[at + off..at + off + PAGE_SIZE];
            if mem::read(pid, addr + off as u64, page).is_err()
                && mem::peek(pid, addr + off as u64, page).is_err()
            {
                page.fill(0);
            }
        }
        at += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_pages_coalesce_within_a_vma_only() {
        let mut c = Coalescer::default();
        for p in [0u64, 1, 2, 5, 6] {
            c.push(0x1000 + p * PAGE, 1, false);
        }
        // A readable page after an unreadable neighbour starts a new run.
        c.push(0x1000 + 7 * PAGE, 1, true);
        let runs = c.into_runs();
        assert_eq!(
            runs.iter()
                .map(|r| (r.vaddr, r.nr_pages))
                .collect::<Vec<_>>(),
            [(0x1000, 3), (0x6000, 2), (0x8000, 1)]
        );
    }

    #[test]
    fn which_pages_are_kept() {
        use pb::VmaKind::*;
        let present_anon = PM_PRESENT;
        let present_file = PM_PRESENT | PM_FILE;
        assert!(keep(VmaAnon, present_anon));
        assert!(keep(VmaAnon, PM_SWAP));
        assert!(!keep(VmaAnon, 0));
        assert!(keep(VmaFilePrivate, present_anon));
        assert!(!keep(VmaFilePrivate, present_file));
        assert!(keep(VmaAnonShared, present_file));
        assert!(!keep(VmaFileShared, present_anon));
    }
}
