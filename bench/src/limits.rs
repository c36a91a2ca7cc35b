//! The machine's own limits, measured on the same workload in the same run as ckpt.
//!
//! - `readv`: `process_vm_readv` of the workload's whole region from the workload process
//!   into one reused, pre-faulted buffer (the cost of copying another process's memory);
//! - `readv_write`: the same, each chunk then `write()`n to a new file on the filesystem of
//!   the images (page cache, no fsync): what a plain dump has to do at least;
//! - `pread_fresh`: `mmap` of fresh anonymous memory of the same size, then `pread` of a
//!   cached file of that size into it: the floor of a plain restore (page faults + copy).
//!
//! On a VM whose free memory is handed back to the host (free page reporting: this one
//! reports free blocks of 8 MiB and more, a couple of seconds after they were freed),
//! taking that memory again costs a host fault per page: writing 1 GiB to the page cache
//! takes ~1.5 s then instead of ~0.2 s. Which step of a round met such memory was luck,
//! and it moved single figures by 2-7x. So right before every timed step that needs new
//! memory (the limit's file, the dump's image, the floor's mapping, a restored process),
//! the bench takes that much memory and a margin once and frees it again (`prefault`):
//! every step, limit or ckpt, then starts with memory the host has just given back.

use anyhow::{bail, Context, Result};
use memmap2::MmapMut;
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;
use std::fs::{File, OpenOptions};
use std::io::{IoSliceMut, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Chunk of `process_vm_readv` and `write` (the reused buffer's size).
pub const COPY_CHUNK: usize = 8 << 20;
/// Chunk of `pread` into fresh memory.
pub const PREAD_CHUNK: usize = 64 << 20;

/// A region of another process's memory.
#[derive(Debug, Clone, Copy)]
pub struct Region {
    pub pid: i32,
    pub addr: usize,
    pub len: usize,
}

/// Maps `bytes` plus a margin of anonymous memory in huge pages, touches all of it
/// (MADV_POPULATE_WRITE) and unmaps it again, untimed: the host backs it again now, and the
/// next step that needs memory gets these pages (see the module's doc).
pub fn prefault(bytes: u64) -> Result<()> {
    let len = (bytes + (256 << 20)) as usize;
    let m = MmapMut::map_anon(len).context("mmap for the prefault")?;
    let _ = m.advise(memmap2::Advice::HugePage);
    m.advise(memmap2::Advice::PopulateWrite)
        .context("MADV_POPULATE_WRITE for the prefault")?;
    drop(m);
    Ok(())
}

/// A buffer that is faulted in once and reused by every copy.
pub fn reused_buffer() -> Vec<u8> {
    vec![0x5a; COPY_CHUNK]
}

fn read_chunk(r: &Region, off: usize, buf: &mut [u8]) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let remote = [RemoteIoVec {
            base: r.addr + off + done,
            len: buf.len() - done,
        }];
        let n = process_vm_readv(
            Pid::from_raw(r.pid),
            &mut [IoSliceMut::new(&mut buf[done..])],
            &remote,
        )
        .with_context(|| format!("process_vm_readv of pid {} at {:#x}", r.pid, r.addr + off))?;
        if n == 0 {
            bail!("process_vm_readv of pid {}: short read", r.pid);
        }
        done += n;
    }
    Ok(())
}

/// `process_vm_readv` of the whole region into `buf`, chunk after chunk.
pub fn readv(r: &Region, buf: &mut [u8]) -> Result<Duration> {
    let t0 = Instant::now();
    let mut off = 0;
    while off < r.len {
        let n = buf.len().min(r.len - off);
        read_chunk(r, off, &mut buf[..n])?;
        off += n;
    }
    let d = t0.elapsed();
    std::hint::black_box(&buf);
    Ok(d)
}

/// The same as `readv`, each chunk then written to a new file at `path` (left in place).
pub fn readv_write(r: &Region, buf: &mut [u8], path: &Path) -> Result<Duration> {
    let _ = std::fs::remove_file(path);
    let t0 = Instant::now();
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    let mut off = 0;
    while off < r.len {
        let n = buf.len().min(r.len - off);
        read_chunk(r, off, &mut buf[..n])?;
        f.write_all(&buf[..n])
            .with_context(|| format!("write {}", path.display()))?;
        off += n;
    }
    drop(f);
    Ok(t0.elapsed())
}

/// Write a file of `len` bytes (copies of `buf`) at `path`, for a floor without an image.
pub fn write_file(path: &Path, buf: &[u8], len: usize) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut off = 0;
    while off < len {
        let n = buf.len().min(len - off);
        f.write_all(&buf[..n])?;
        off += n;
    }
    Ok(())
}

/// Make sure every page of `path` is in the page cache (read it once, untimed).
pub fn warm(path: &Path, buf: &mut [u8]) -> Result<()> {
    let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut off = 0u64;
    loop {
        let n = f.read_at(buf, off)?;
        if n == 0 {
            return Ok(());
        }
        off += n as u64;
    }
}

/// `mmap` fresh anonymous memory of `len` bytes and `pread` `len` bytes of the cached file
/// at `path`, from `start` on, into it. The mapping is dropped after the clock stops
/// (unmapping is not part of a restore).
pub fn pread_fresh(path: &Path, start: u64, len: usize) -> Result<Duration> {
    let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let t0 = Instant::now();
    let mut m = MmapMut::map_anon(len).context("mmap fresh memory")?;
    let mut off = 0;
    while off < len {
        let end = (off + PREAD_CHUNK).min(len);
        let n = f
            .read_at(&mut m[off..end], start + off as u64)
            .with_context(|| format!("pread {}", path.display()))?;
        if n == 0 {
            bail!("{}: shorter than {len} bytes", path.display());
        }
        off += n;
    }
    let d = t0.elapsed();
    std::hint::black_box(&m[len - 1]);
    drop(m);
    Ok(d)
}
