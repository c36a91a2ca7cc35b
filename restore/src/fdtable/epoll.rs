//! epoll instances, made by their process's own seed once every other fd of it is in
//! place (a watch is registered through the fd number of the watched file): first every
//! epoll of the process, empty, at its number (so that one epoll can watch another),
//! then its dups, then every watch, with its event mask and data.

use crate::seed::SeedPlan;
use ckpt_images::pb;
use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// What an image's epoll description may hold.
pub fn check(d: &pb::FileDesc) -> Result<(), String> {
    let Some(e) = &d.epoll else {
        return Err(format!("description {}: an epoll without its state", d.id));
    };
    if let Some(w) = e.watches.iter().find(|w| w.fd < 0 || w.fd > 1 << 20) {
        return Err(format!("description {}: a watch of fd {}", d.id, w.fd));
    }
    Ok(())
}

/// The epoll states of `plan`'s fds (from the table), each watch checked to name an fd
/// the process holds.
pub fn attach(plan: &mut SeedPlan, descs: &[pb::FileDesc]) -> Result<(), String> {
    let epoll = pb::FdKind::FdEpoll as i32;
    for f in plan.fds.iter().filter(|f| f.kind == epoll && !f.is_dup) {
        let state = descs
            .get((f.desc as usize).wrapping_sub(1))
            .and_then(|d| d.epoll.clone())
            .ok_or_else(|| format!("pid {} fd {}: an epoll with no state", plan.pid, f.fd))?;
        if let Some(w) = state
            .watches
            .iter()
            .find(|w| !plan.fds.iter().any(|o| o.fd == w.fd))
        {
            return Err(format!(
                "pid {} fd {}: the epoll watches fd {}, which the image does not hold",
                plan.pid, f.fd, w.fd
            ));
        }
        plan.epolls.push((f.fd, state));
    }
    Ok(())
}

/// Whether fd record `f` is an epoll (or a dup of one), placed by [`place`].
pub fn is_epoll(f: &pb::Fd) -> bool {
    f.kind == pb::FdKind::FdEpoll as i32
}

/// In the seed, after every other fd: the epolls of `p`, their dups, their watches.
pub fn place(p: &SeedPlan) -> Result<(), String> {
    for f in p.fds.iter().filter(|f| is_epoll(f) && !f.is_dup) {
        let ep = ckpt_sys::epoll::create().map_err(|e| format!("fd {}: {e}", f.fd))?;
        crate::seed::place_owned(ep, f.fd)?;
        let flags = OFlag::from_bits_retain(f.flags as i32) - OFlag::O_ACCMODE;
        fcntl(f.fd, FcntlArg::F_SETFL(flags)).map_err(|e| format!("fd {}: F_SETFL: {e}", f.fd))?;
        crate::seed::cloexec(f.fd, f.cloexec)?;
    }
    crate::seed::place_dups(p, is_epoll)?;
    for (fd, state) in &p.epolls {
        for w in &state.watches {
            let watch = ckpt_sys::epoll::Watch {
                fd: w.fd,
                events: w.events,
                data: w.data,
            };
            ckpt_sys::epoll::add(*fd, w.fd, &watch)
                .map_err(|e| format!("epoll fd {fd}: watch of fd {}: {e}", w.fd))?;
        }
    }
    Ok(())
}
