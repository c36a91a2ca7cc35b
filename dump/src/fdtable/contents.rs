//! memfds and files deleted while open: their contents go into the image (read with
//! pread through a copy of the fd: the process's offset does not move), once per file,
//! up to `MAX_CONTENTS`; a bigger one is refused by name.

use super::{FdCtx, FdTable};
use crate::DumpError;
use ckpt_images::pb;
use std::os::unix::fs::FileExt;

/// Most bytes stored for one memfd or deleted file (image records are capped at 16 MiB).
pub const MAX_CONTENTS: u64 = 8 << 20;

/// The file's bytes, or a refusal naming it when there are too many.
fn contents(ctx: &FdCtx, what: &str, size: u64) -> Result<Vec<u8>, DumpError> {
    if size > MAX_CONTENTS {
        return Err(crate::refuse(format!(
            "pid {}: fd {} ({what}): {} bytes, more than the {} MiB ckpt stores for a {}",
            ctx.pid,
            ctx.fd,
            size,
            MAX_CONTENTS >> 20,
            if what.starts_with("memfd") {
                "memfd"
            } else {
                "file deleted while open"
            }
        )));
    }
    let mine = std::fs::File::from(ckpt_sys::process::steal_fd(ctx.pid, ctx.fd)?);
    let mut data = vec![0u8; size as usize];
    let mut got = 0;
    while got < data.len() {
        match mine.read_at(&mut data[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ckpt_sys::Error::io(what, e).into()),
        }
    }
    data.truncate(got);
    Ok(data)
}

/// A memfd named `name`, `size` bytes long. (One also mapped by a process of the tree
/// is refused before: `Describer::memfd_mapped_by`.)
pub fn memfd(
    ctx: &FdCtx,
    name: &str,
    size: u64,
    table: &mut FdTable,
) -> Result<pb::MemfdState, DumpError> {
    let what = format!("memfd:{name}");
    let mine = ckpt_sys::process::steal_fd(ctx.pid, ctx.fd)?;
    let seals = nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&mine),
        nix::fcntl::FcntlArg::F_GET_SEALS,
    )
    .map_err(|e| ckpt_sys::Error::sys(format!("F_GET_SEALS of {what}"), e))? as u32;
    let stored = table.first_to_store(ctx.inode);
    let data = if stored {
        contents(ctx, &what, size)?
    } else {
        Vec::new()
    };
    Ok(pb::MemfdState {
        name: name.to_string(),
        data,
        size,
        seals,
        stored,
    })
}

/// A regular file unlinked while open, `size` bytes, mode `mode`.
pub fn deleted(
    ctx: &FdCtx,
    path: &str,
    size: u64,
    mode: u32,
    table: &mut FdTable,
) -> Result<pb::DeletedState, DumpError> {
    let stored = table.first_to_store(ctx.inode);
    let data = if stored {
        contents(ctx, &format!("{path} (deleted)"), size)?
    } else {
        Vec::new()
    };
    Ok(pb::DeletedState {
        data,
        size,
        mode,
        stored,
    })
}
