//! memfds and files deleted while open, made again with their stored contents: a memfd
//! with its name, size and seals; a deleted file as a new unlinked file (O_TMPFILE) in
//! the directory it was in, made as its first holder (its credentials), so it shows as
//! `DIR/#INODE (deleted)`. A second description of the same file is opened again through
//! /proc/self/fd, as the first would have been.

use ckpt_images::pb;
use nix::fcntl::{fcntl, open, FcntlArg, OFlag, SealFlag};
use nix::sys::stat::Mode;
use nix::unistd::{close, dup2, ftruncate, lseek, Whence};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;

/// Most bytes an image may store for one file (the dump stores at most 8 MiB).
const MAX_CONTENTS: u64 = 16 << 20;
/// Most a file may be long (sparse beyond its stored bytes).
const MAX_SIZE: u64 = 1 << 40;

pub fn check(d: &pb::FileDesc) -> Result<(), String> {
    let bad = |what: &str| Err(format!("description {}: {what}", d.id));
    let (data, size) = match (&d.memfd, &d.deleted) {
        (Some(m), None) if d.kind == pb::FdKind::FdMemfd as i32 => {
            if m.name.contains('\0') || m.name.len() > 249 {
                return bad("memfd name is not one memfd_create takes");
            }
            (&m.data, m.size)
        }
        (None, Some(x)) if d.kind == pb::FdKind::FdDeleted as i32 => {
            if !d.path.starts_with('/') || d.path.contains('\0') {
                return bad("deleted file's path is not absolute");
            }
            (&x.data, x.size)
        }
        _ => return bad("a memfd or deleted file without its state"),
    };
    if data.len() as u64 > MAX_CONTENTS || size > MAX_SIZE || data.len() as u64 > size {
        return bad("contents out of range");
    }
    Ok(())
}

/// Creates the file of `descs` (one memfd, or one deleted file, and its descriptions).
pub fn create(descs: &[(pb::FileDesc, RawFd)]) -> Result<(), String> {
    let (first, _) = &descs[0];
    let stored = descs
        .iter()
        .find(|(d, _)| {
            d.memfd.as_ref().is_some_and(|m| m.stored)
                || d.deleted.as_ref().is_some_and(|x| x.stored)
        })
        .map(|(d, _)| d)
        .unwrap_or(first);
    let (file, data, size, seals) = match (&stored.memfd, &stored.deleted) {
        (Some(m), _) => {
            let name = std::ffi::CString::new(m.name.as_bytes()).map_err(|e| e.to_string())?;
            let fd = nix::sys::memfd::memfd_create(
                &name,
                nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC
                    | nix::sys::memfd::MemFdCreateFlag::MFD_ALLOW_SEALING,
            )
            .map_err(|e| format!("memfd_create({:?}): {e}", m.name))?;
            (fd, &m.data, m.size, m.seals)
        }
        (None, Some(x)) => {
            let dir = std::path::Path::new(&stored.path)
                .parent()
                .ok_or_else(|| format!("{} has no directory", stored.path))?;
            let fd = open(
                dir,
                OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(x.mode),
            )
            .map_err(|e| {
                format!(
                    "an unlinked file in {} for {} (deleted): {e}",
                    dir.display(),
                    stored.path
                )
            })?;
            (
                ckpt_sys::process::file_from_raw(fd).into(),
                &x.data,
                x.size,
                0,
            )
        }
        _ => return Err("no state".into()),
    };
    let f = std::fs::File::from(file);
    f.write_all_at(data, 0)
        .map_err(|e| format!("writing {} bytes back: {e}", data.len()))?;
    ftruncate(&f, size as i64).map_err(|e| format!("ftruncate to {size}: {e}"))?;
    if let Some(x) = &stored.deleted {
        // O_TMPFILE applied the seed's umask.
        nix::sys::stat::fchmod(f.as_raw_fd(), Mode::from_bits_truncate(x.mode))
            .map_err(|e| format!("fchmod {:o}: {e}", x.mode))?;
    }
    let file = OwnedFd::from(f);
    // An O_TMPFILE open keeps O_TMPFILE in its flags: every description of a deleted
    // file is a reopen.
    let mut shared = stored.deleted.is_some();
    for (d, slot) in descs {
        place(&file, d, *slot, shared)?;
        shared |= d.flags & 3 == OFlag::O_RDWR.bits() as u32;
    }
    if seals != 0 {
        fcntl(
            file.as_raw_fd(),
            FcntlArg::F_ADD_SEALS(SealFlag::from_bits_retain(seals as i32)),
        )
        .map_err(|e| format!("F_ADD_SEALS {seals:#x}: {e}"))?;
    }
    Ok(())
}

/// Description `d` of `file` at `slot`: its access mode (a reopen when not read-write, or
/// when `file`'s own description went to another already), offset and status flags.
fn place(file: &OwnedFd, d: &pb::FileDesc, slot: RawFd, taken: bool) -> Result<(), String> {
    let status = OFlag::from_bits_retain(d.flags as i32);
    let mode = status & OFlag::O_ACCMODE;
    if mode == OFlag::O_RDWR && !taken {
        dup2(file.as_raw_fd(), slot).map_err(|e| format!("dup2 to slot {slot}: {e}"))?;
    } else {
        let link = format!("/proc/self/fd/{}", file.as_raw_fd());
        let fd = open(link.as_str(), mode | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| format!("reopening it {mode:?}: {e}"))?;
        let r = dup2(fd, slot);
        let _ = close(fd);
        r.map_err(|e| format!("dup2 to slot {slot}: {e}"))?;
    }
    lseek(slot, d.pos as i64, Whence::SeekSet).map_err(|e| format!("seek to {}: {e}", d.pos))?;
    let settable = status & (OFlag::O_NONBLOCK | OFlag::O_APPEND | OFlag::O_NOATIME);
    fcntl(slot, FcntlArg::F_SETFL(settable)).map_err(|e| format!("F_SETFL: {e}"))?;
    Ok(())
}
