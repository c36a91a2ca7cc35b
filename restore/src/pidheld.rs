//! Who holds the pid a restore needs, in words: most often the dumped process itself, a
//! zombie its parent has not reaped yet (the dump killed it; the pid is free only once
//! the parent waits for it).

use ckpt_sys::{proc, Pid};

/// The refusal for `pid`, taken when the seed was to get it; `comm` is the dumped
/// process's name.
pub fn message(pid: i32, comm: &str) -> String {
    let p = Pid::from_raw(pid);
    let name = |p: i32| {
        proc::stat(Pid::from_raw(p))
            .map(|s| s.comm)
            .unwrap_or_else(|_| "?".into())
    };
    let (Ok(stat), Ok(status)) = (proc::stat(p), proc::status(p)) else {
        return format!("pid {pid} is already in use by another process");
    };
    if status.tgid != pid {
        return format!(
            "pid {pid} is already in use by a thread of process {} ({})",
            status.tgid,
            name(status.tgid)
        );
    }
    if matches!(stat.state, 'Z' | 'X') {
        let whose = if stat.comm == comm {
            "the dumped process itself (killed by the dump), a zombie"
        } else {
            "a zombie"
        };
        return format!(
            "pid {pid} is still held by {whose} ({}) that its parent, pid {} ({}), has not \
             reaped: the pid is free once the parent waits for it (or exits)",
            stat.comm,
            stat.ppid,
            name(stat.ppid)
        );
    }
    format!(
        "pid {pid} is already in use by another process ({}, state {})",
        stat.comm, stat.state
    )
}
