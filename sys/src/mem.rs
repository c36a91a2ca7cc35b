//! Another process's memory: process_vm_readv(2)/process_vm_writev(2) for bulk copies,
//! /proc/PID/mem for pages the target cannot write itself (read-only or code pages).

use crate::error::{Error, Result};
use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::unistd::Pid;
use std::io::{IoSlice, IoSliceMut};
use std::ops::Range;
use std::os::unix::fs::FileExt;

/// The kernel's limit on iovecs per call.
pub const IOV_MAX: usize = 1024;

/// Reads the remote ranges `(addr, len)` back to back into `buf` (whose length must be the
/// sum of the lengths). Fails unless every byte arrived.
pub fn read_ranges(pid: Pid, ranges: &[(u64, usize)], buf: &mut [u8]) -> Result<()> {
    copy_ranges(pid, ranges, "process_vm_readv", |local, remote| {
        process_vm_readv(pid, &mut [IoSliceMut::new(&mut buf[local])], remote)
    })
}

/// Writes `buf` into the remote ranges `(addr, len)` back to back.
pub fn write_ranges(pid: Pid, ranges: &[(u64, usize)], buf: &[u8]) -> Result<()> {
    copy_ranges(pid, ranges, "process_vm_writev", |local, remote| {
        process_vm_writev(pid, &[IoSlice::new(&buf[local])], remote)
    })
}

/// The loop of `read_ranges` and `write_ranges`: `io(local, remote)` makes one `syscall`
/// between the bytes `local` of the caller's buffer and the remote iovecs `remote`, and
/// may move fewer bytes than asked; it is called again for the rest.
fn copy_ranges(
    pid: Pid,
    ranges: &[(u64, usize)],
    syscall: &str,
    mut io: impl FnMut(Range<usize>, &[RemoteIoVec]) -> nix::Result<usize>,
) -> Result<()> {
    let mut done = 0usize;
    for chunk in ranges.chunks(IOV_MAX) {
        let total: usize = chunk.iter().map(|r| r.1).sum();
        let remote: Vec<RemoteIoVec> = chunk
            .iter()
            .map(|&(base, len)| RemoteIoVec {
                base: base as usize,
                len,
            })
            .collect();
        let mut moved = 0usize;
        while moved < total {
            // Re-slice past what has moved: a partial transfer ends on a range boundary
            // or inside the range that faulted.
            let (rem, skip) = remaining(&remote, moved);
            let at = rem[0].base + skip;
            let n = io(done + moved..done + total, &rem_fix(&rem, skip))
                .map_err(|e| Error::sys(format!("{syscall} of pid {pid} at {at:#x}"), e))?;
            if n == 0 {
                return Err(Error::Other(format!(
                    "{syscall} of pid {pid}: no progress at {at:#x}"
                )));
            }
            moved += n;
        }
        done += total;
    }
    Ok(())
}

/// The iovecs still to do after `done` bytes, and how far into the first one to start.
fn remaining(remote: &[RemoteIoVec], mut done: usize) -> (Vec<RemoteIoVec>, usize) {
    let mut i = 0;
    while i < remote.len() && done >= remote[i].len {
        done -= remote[i].len;
        i += 1;
    }
    (remote[i..].to_vec(), done)
}

fn rem_fix(rem: &[RemoteIoVec], skip: usize) -> Vec<RemoteIoVec> {
    let mut v = rem.to_vec();
    v[0].base += skip;
    v[0].len -= skip;
    v
}

pub fn read(pid: Pid, addr: u64, buf: &mut [u8]) -> Result<()> {
    read_ranges(pid, &[(addr, buf.len())], buf)
}

pub fn write(pid: Pid, addr: u64, buf: &[u8]) -> Result<()> {
    write_ranges(pid, &[(addr, buf.len())], buf)
}

/// Writes through /proc/PID/mem, which (like a debugger) may write read-only and code pages.
pub fn poke(pid: Pid, addr: u64, buf: &[u8]) -> Result<()> {
    let path = format!("/proc/{pid}/mem");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    f.write_all_at(buf, addr).map_err(|e| Error::io(&path, e))
}

/// Reads through /proc/PID/mem (works on pages process_vm_readv refuses, e.g. [vvar]).
pub fn peek(pid: Pid, addr: u64, buf: &mut [u8]) -> Result<()> {
    let path = format!("/proc/{pid}/mem");
    let f = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
    f.read_exact_at(buf, addr).map_err(|e| Error::io(&path, e))
}
