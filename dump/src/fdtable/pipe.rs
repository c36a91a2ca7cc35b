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
    let mine = ckpt_sys::process::steal_fd(ctx.pid, ctx.fd)?;
    let size = ckpt_sys::pipe::capacity(&mine)?;
    let (mut data, mut packets) = (Vec::new(), Vec::new());
    // tee() reads only from a read end; a pipe no end of which is read in the tree has
    // nothing anyone restored could read.
    if !external && !write_end && table.first_to_store(ctx.inode) {
        (data, packets) = ckpt_sys::pipe::peek(&mine)?;
    }
    Ok(pb::PipeState {
        write_end,
        data,
        size,
        packets,
    })
}
