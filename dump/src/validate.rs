//! What this version refuses to dump, checked before the task is touched (and the parts
//! that can change, again once it is stopped).

use crate::{files, mm, refuse, DumpError};
use ckpt_sys::{proc, Pid};
use std::path::Path;

/// Kernel threads have this in /proc/PID/stat's flags (include/linux/sched.h).
const PF_KTHREAD: u32 = 0x0020_0000;

pub fn before_seize(pid: Pid) -> Result<(), DumpError> {
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(refuse(format!("pid {pid} does not exist")));
    }
    let gone = |e: ckpt_sys::Error| DumpError::Lost(format!("pid {pid} vanished: {e}"));
    let stat = proc::stat(pid).map_err(gone)?;
    if stat.flags & PF_KTHREAD != 0 {
        return Err(refuse(format!(
            "pid {pid} ({}) is a kernel thread",
            stat.comm
        )));
    }
    let status = proc::status(pid).map_err(gone)?;
    if status.tgid != pid.as_raw() {
        return Err(refuse(format!(
            "pid {pid} is a thread of process {}; give the process id",
            status.tgid
        )));
    }
    // Restore cannot reinstall filters yet: dropping them silently would unsandbox it.
    if status.seccomp.unwrap_or(0) != 0 {
        return Err(refuse(format!(
            "pid {pid} runs under seccomp mode {}; seccomp is not supported yet",
            status.seccomp.unwrap_or(0)
        )));
    }
    check_not_self_or_ancestor(pid)?;
    match stat.state {
        'Z' | 'X' => return Err(refuse(format!("pid {pid} is a zombie (it has exited)"))),
        _ => {}
    }
    if status.tracerpid != 0 {
        return Err(refuse(format!(
            "pid {pid} is already traced by pid {}",
            status.tracerpid
        )));
    }
    if stat.state == 'T' || stat.state == 't' {
        return Err(refuse(format!(
            "pid {pid} is stopped (state {}); stopped processes are not supported yet",
            stat.state
        )));
    }
    let maps = proc::read_bytes(&format!("/proc/{pid}/maps")).map_err(gone)?;
    if maps.is_empty() || proc::read_link(&format!("/proc/{pid}/exe")).is_err() {
        return Err(refuse(format!(
            "pid {pid} ({}) has no memory or no executable (a kernel thread?)",
            stat.comm
        )));
    }
    for (link, what) in [("cwd", "working directory"), ("root", "root directory")] {
        let target = proc::read_link(&format!("/proc/{pid}/{link}")).map_err(gone)?;
        let target = target.to_string_lossy();
        if target.ends_with(" (deleted)") {
            return Err(refuse(format!(
                "pid {pid}: its {what} {target} was removed; not supported yet"
            )));
        }
    }
    check_threads_and_children(pid)?;
    files::check_all(pid)?;
    let text = String::from_utf8_lossy(&maps);
    let parsed =
        proc::parse_smaps(&text).map_err(|e| DumpError::Lost(format!("/proc/{pid}/maps: {e}")))?;
    for m in &parsed {
        mm::classify(pid, m)?;
    }
    Ok(())
}

/// Once stopped: the task may have made a thread or a child between the checks and the
/// seize.
pub fn after_seize(pid: Pid) -> Result<(), DumpError> {
    check_threads_and_children(pid)
}

fn check_threads_and_children(pid: Pid) -> Result<(), DumpError> {
    let tasks = proc::tasks(pid)?;
    if tasks.len() > 1 {
        return Err(refuse(format!(
            "pid {pid} has {} threads: multi-threaded processes are not supported yet",
            tasks.len()
        )));
    }
    let children = proc::children(pid, pid)?;
    if !children.is_empty() {
        let list: Vec<String> = children.iter().map(|c| c.to_string()).collect();
        return Err(refuse(format!(
            "pid {pid} has children ({}): process trees are not supported yet",
            list.join(" ")
        )));
    }
    Ok(())
}

/// ckpt cannot stop itself, and stopping an ancestor (its shell, pid 1) would deadlock it
/// or make no sense.
fn check_not_self_or_ancestor(pid: Pid) -> Result<(), DumpError> {
    let me = nix::unistd::getpid();
    if pid == me {
        return Err(refuse(format!("pid {pid} is ckpt itself")));
    }
    let mut p = nix::unistd::getppid();
    for _ in 0..4096 {
        if p == pid {
            return Err(refuse(format!(
                "pid {pid} is an ancestor of ckpt (pid {me}); it cannot be dumped from inside"
            )));
        }
        if p.as_raw() <= 1 {
            break;
        }
        match proc::stat(p) {
            Ok(s) => p = Pid::from_raw(s.ppid),
            Err(_) => break,
        }
    }
    Ok(())
}
