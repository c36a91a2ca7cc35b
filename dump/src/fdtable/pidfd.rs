//! pidfds (pidfd_open(2), clone's CLONE_PIDFD): the process one refers to is fdinfo's
//! `Pid:` line (in ckpt's pid namespace; -1 once it is reaped). A restore opens a pidfd
//! of the restored process with that pid again, so it must be a process of the tree (a
//! zombie included): one outside the tree is refused by name, even if a process of that
//! pid still runs at restore, since nothing says it is the same process (pids are
//! reused) and a pidfd of the wrong process would signal or wait for a stranger. Refused
//! too: a pidfd of a reaped process (no process to open it for again), of a thread
//! other than a leader (threads are made after the fds are placed), one held by several
//! processes or in flight (its seed waits for the target to exist; the seed making a
//! shared object runs before its children exist).

use super::FdCtx;
use ckpt_images::pb;

/// O_EXCL: PIDFD_THREAD, a pidfd of one thread.
const PIDFD_THREAD: u32 = 0o200;

/// The pid (in ckpt's namespace) fdinfo names for fd `fd` of `pid`.
fn target(pid: i32, fd: i32) -> Result<i32, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .map_err(|e| format!("reading its fdinfo: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "no Pid: line in its fdinfo".to_string())
}

/// Why fd `fd` of `pid`, a pidfd, cannot be dumped (`in_tree`: a pid of the tree).
pub fn check(pid: i32, fd: i32, in_tree: &dyn Fn(i32) -> bool) -> Result<(), String> {
    let p = target(pid, fd)?;
    if p <= 0 {
        return Err("a pidfd of a process that has exited and been reaped; not supported".into());
    }
    let tgid = std::fs::read_to_string(format!("/proc/{p}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse::<i32>().ok())
        });
    if tgid.is_some_and(|t| t != p) {
        return Err(format!(
            "a pidfd of thread {p} (of process {}); pidfds of threads other than a \
             process's main thread are not supported",
            tgid.unwrap_or(0)
        ));
    }
    if !in_tree(p) {
        return Err(format!(
            "a pidfd of pid {p}, outside the dumped tree; not supported (a process with \
             that pid at restore need not be the same one)"
        ));
    }
    Ok(())
}

/// The record of the pidfd at `ctx` (once per description): its target as ckpt sees
/// it (`finish` turns it into the image's pid) and PIDFD_THREAD.
pub fn dump(ctx: &FdCtx) -> Result<pb::PidfdState, String> {
    Ok(pb::PidfdState {
        pid: target(ctx.pid.as_raw(), ctx.fd)?,
        thread: ctx.info.flags & PIDFD_THREAD != 0,
    })
}

/// Once every process is read: each pidfd's target as the images hold it.
pub fn finish(table: &mut super::FdTable, image_pid: &dyn Fn(i32) -> i32) {
    for i in table.picked(|d| d.pidfd.is_some()) {
        if let Some(s) = table.descs[i].pidfd.as_mut() {
            s.pid = image_pid(s.pid);
        }
    }
}
