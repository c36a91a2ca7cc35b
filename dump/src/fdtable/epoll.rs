//! epoll instances: every watch (fd number, event mask, data) from fdinfo. A watch is
//! only restorable through the fd number it was registered under, so that number must
//! still name the watched file (kcmp KCMP_EPOLL_TFD); an epoll whose watched fd was
//! closed or replaced since is refused, as is one held by several processes (whose fd
//! numbers would be another process's).

use super::FdCtx;
use ckpt_images::pb;

/// The watches of epoll fd `fd` of `pid`, or why they cannot be restored.
pub fn check(pid: ckpt_sys::Pid, fd: i32) -> Result<Vec<ckpt_sys::epoll::Watch>, String> {
    let watches = ckpt_sys::epoll::watches(pid, fd).map_err(|e| e.to_string())?;
    for w in &watches {
        if !ckpt_sys::epoll::watches_same_file(pid, fd, w.fd).map_err(|e| e.to_string())? {
            return Err(format!(
                "it watches a file registered as fd {}, which that fd no longer is (closed \
                 or reused since); such a watch cannot be registered again",
                w.fd
            ));
        }
    }
    Ok(watches)
}

/// The watches of the epoll at `ctx`, or why it cannot be dumped.
pub fn dump(ctx: &FdCtx) -> Result<pb::EpollState, String> {
    Ok(pb::EpollState {
        watches: check(ctx.pid, ctx.fd)?
            .iter()
            .map(|w| pb::EpollWatch {
                fd: w.fd,
                events: w.events,
                data: w.data,
            })
            .collect(),
    })
}
