//! Namespaces: a child forked into a fresh pid namespace, the pids a task has in each
//! pid namespace it is in, and which namespaces a task shares with another.

use crate::error::{Error, Result};
use crate::process::Forked;
use nix::unistd::Pid;

/// Forks (clone3(2) with CLONE_NEWPID and CLONE_NEWNS, no CLONE_VM) a child that is pid 1
/// of a fresh pid namespace, in a mount namespace that is a copy of the caller's; the
/// parent gets its pid in the caller's namespace, whatever the kernel gives. The pid
/// namespace lives as long as that child: when it exits, the kernel kills every other
/// task of the namespace.
///
/// The caller must be single-threaded (the child runs on a copy of its memory).
pub fn fork_into_new_pidns() -> Result<Forked> {
    crate::process::fork3(
        (libc::CLONE_NEWPID | libc::CLONE_NEWNS) as u64,
        libc::SIGCHLD as u64,
        &[],
    )
    .map_err(|e| Error::sys("clone3(CLONE_NEWPID | CLONE_NEWNS)", e))
}

/// The pids of `pid` (as /proc names it) in every pid namespace it is in, outermost
/// first: /proc/PID/status's NSpid line.
pub fn ns_pids(pid: Pid) -> Result<Vec<i32>> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .ok_or_else(|| Error::Other(format!("{path}: no NSpid line")))?;
    line.split_whitespace()
        .map(|t| {
            t.parse()
                .map_err(|_| Error::Other(format!("{path}: bad NSpid {line:?}")))
        })
        .collect()
}

/// The namespace `/proc/PID/ns/NAME` names, as the link reads (`uts:[4026531838]`).
pub fn ns_id(pid: Pid, name: &str) -> Result<String> {
    let path = format!("/proc/{pid}/ns/{name}");
    std::fs::read_link(&path)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|e| Error::io(&path, e))
}

/// In a fresh mount namespace: makes every mount private (nothing mounted here reaches
/// the namespace it was copied from, nor the other way), then mounts a proc of the
/// caller's pid namespace at /proc, over the one it inherited (what `unshare
/// --mount-proc` does).
pub fn mount_own_proc() -> Result<()> {
    use nix::mount::{mount, MsFlags};
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| Error::sys("mount --make-rprivate /", e))?;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| Error::sys("mount proc on /proc", e))
}
