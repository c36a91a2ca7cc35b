//! Anonymous pipe ends: which end, the pipe's capacity and its unread bytes (read with
//! tee(2) through a copy of the fd: the pipe keeps them for its reader; in packets where
//! they were written in packet mode), stored once per
//! pipe on its first read end. A pipe also held outside the tree is external: named by
//! its link target, its bytes stay in the pipe the outside holder keeps.

use super::{FdCtx, FdTable};
use crate::DumpError;
use ckpt_images::pb;

const O_ACCMODE: u32 = 3;
const O_WRONLY: u32 = 1;

/// The state of the pipe end at `ctx`; `external`: the pipe is also held outside the tree.
pub fn dump(ctx: &FdCtx, external: bool, table: &mut FdTable) -> Result<pb::PipeState, DumpError> {
    let write_end = ctx.info.flags & O_ACCMODE == O_WRONLY;
    // tee() reads only from a read end; a pipe no end of which is read in the tree has
    // nothing anyone restored could read.
    let store = !external && !write_end && table.first_to_store(ctx.inode);
    let known = table.pipe_sizes.get(&ctx.inode).copied();
    // A copy of the fd only for what the pipe's other end did not give already (the
    // process is stopped: its capacity cannot change meanwhile).
    let (size, data, packets) = match known {
        Some(size) if !store => (size, Vec::new(), Vec::new()),
        _ => {
            let mine = ckpt_sys::process::steal_fd(ctx.pid, ctx.fd)?;
            let size = match known {
                Some(size) => size,
                None => ckpt_sys::pipe::capacity(&mine)?,
            };
            table.pipe_sizes.insert(ctx.inode, size);
            let (data, packets) = if store {
                ckpt_sys::pipe::peek(&mine)?
            } else {
                Default::default()
            };
            (size, data, packets)
        }
    };
    Ok(pb::PipeState {
        write_end,
        data,
        size,
        packets,
    })
}
