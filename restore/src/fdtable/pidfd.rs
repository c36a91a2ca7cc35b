//! pidfds, made by their process's own seed after its other fds (an epoll may watch one;
//! they are placed before the epolls): pidfd_open of the restored process with the
//! image's pid, once that process exists. Its seed may be forked after this one
//! (a descendant forked by a child's seed, a process of another branch), so the seed
//! waits for it: seeds fork their children before they place their fds and never wait
//! on each other's fds, so the target always comes (a failed restore kills every seed,
//! this one included; the wait also ends on its own). The dump accepts only pidfds of
//! the tree's processes, each held by one process (`dump/src/fdtable/pidfd.rs`).

use crate::seed::SeedPlan;
use ckpt_images::pb;
use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// How long a seed waits for the process its pidfd refers to.
const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// What an image's pidfd description may hold.
pub fn check(d: &pb::FileDesc) -> Result<(), String> {
    match &d.pidfd {
        Some(s) if s.pid > 0 => Ok(()),
        Some(s) => Err(format!("description {}: a pidfd of pid {}", d.id, s.pid)),
        None => Err(format!("description {}: a pidfd without its state", d.id)),
    }
}

/// The pidfd states of `plan`'s fds (from the table).
pub fn attach(plan: &mut SeedPlan, descs: &[pb::FileDesc]) -> Result<(), String> {
    for f in plan.fds.iter().filter(|f| is_pidfd(f) && !f.is_dup) {
        let state = descs
            .get((f.desc as usize).wrapping_sub(1))
            .and_then(|d| d.pidfd)
            .ok_or_else(|| format!("pid {} fd {}: a pidfd with no state", plan.pid, f.fd))?;
        plan.pidfds.push((f.fd, state));
    }
    Ok(())
}

/// Whether fd record `f` is a pidfd (or a dup of one), placed by [`place`].
pub fn is_pidfd(f: &pb::Fd) -> bool {
    f.kind == pb::FdKind::FdPidfd as i32
}

/// In the seed, after the other fds and before the epolls: the pidfds of `p`, then
/// their dups.
pub fn place(p: &SeedPlan) -> Result<(), String> {
    const PIDFD_THREAD: u32 = 0o200;
    for (fd, s) in &p.pidfds {
        let f = p
            .fds
            .iter()
            .find(|f| f.fd == *fd)
            .ok_or("a pidfd not in the plan")?;
        let target = nix::unistd::Pid::from_raw(s.pid);
        let t = std::time::Instant::now();
        while nix::sys::signal::kill(target, None).is_err() {
            if t.elapsed() > WAIT {
                return Err(format!(
                    "fd {fd}: a pidfd of pid {}, which did not appear within {} s",
                    s.pid,
                    WAIT.as_secs()
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let flags = if s.thread { PIDFD_THREAD } else { 0 };
        let pidfd =
            ckpt_sys::probe::pidfd_open_with(target, flags).map_err(|e| format!("fd {fd}: {e}"))?;
        crate::seed::place_owned(pidfd, *fd)?;
        let fl = OFlag::from_bits_retain(f.flags as i32) & OFlag::O_NONBLOCK;
        fcntl(*fd, FcntlArg::F_SETFL(fl)).map_err(|e| format!("fd {fd}: F_SETFL: {e}"))?;
        crate::seed::cloexec(*fd, f.cloexec)?;
    }
    crate::seed::place_dups(p, is_pidfd)
}
