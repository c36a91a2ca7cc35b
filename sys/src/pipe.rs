//! Pipe contents without draining them: tee(2) into a pipe of our own, then read that.

use crate::error::{Ctx, Result};
use nix::fcntl::{fcntl, tee, FcntlArg, OFlag, SpliceFFlags};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};

/// Capacity of a pipe (F_GETPIPE_SZ).
pub fn capacity(fd: impl AsFd) -> Result<u32> {
    let n =
        fcntl(fd.as_fd().as_raw_fd(), FcntlArg::F_GETPIPE_SZ).ctx(|| "F_GETPIPE_SZ".to_string())?;
    Ok(n as u32)
}

/// Sets the capacity of a pipe (F_SETPIPE_SZ).
pub fn set_capacity(fd: impl AsFd, size: u32) -> Result<()> {
    fcntl(fd.as_fd().as_raw_fd(), FcntlArg::F_SETPIPE_SZ(size as i32))
        .ctx(|| format!("F_SETPIPE_SZ({size})"))?;
    Ok(())
}

/// The bytes waiting in a pipe, left in place for its reader, and where a read of them
/// stops: a buffer written in packet mode (O_DIRECT) ends a read (the copy made by tee
/// keeps that mark), so the lengths of the reads, when there are several, are the
/// packets a reader would see.
pub fn peek(src: impl AsFd) -> Result<(Vec<u8>, Vec<u32>)> {
    let size = capacity(src.as_fd())?;
    let (r, w) =
        nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).ctx(|| "pipe2".to_string())?;
    if capacity(&w)? < size {
        set_capacity(&w, size)?;
    }
    let n = match tee(
        src.as_fd(),
        &w,
        size as usize,
        SpliceFFlags::SPLICE_F_NONBLOCK,
    ) {
        Ok(n) => n,
        Err(nix::errno::Errno::EAGAIN) => 0,
        Err(e) => return Err(crate::Error::sys("tee of a pipe", e)),
    };
    drop(w);
    let mut out = vec![0u8; n];
    let mut reads = Vec::new();
    let mut at = 0;
    let mut r = std::fs::File::from(r);
    while at < n {
        let got = r
            .read(&mut out[at..])
            .map_err(|e| crate::Error::io("pipe", e))?;
        if got == 0 {
            break;
        }
        reads.push(got as u32);
        at += got;
    }
    out.truncate(at);
    if reads.len() < 2 {
        reads.clear();
    }
    Ok((out, reads))
}
