//! `restore --new-pidns`: the tree is rebuilt in a fresh pid namespace, under a minimal
//! init of ckpt's (pid 1 there), with its dumped pids inside it; outside it has whatever
//! pids the kernel gives. The same image can then be restored while its pids are taken
//! on the host (the dumped tree still running, or another copy in its own namespace).
//!
//! ckpt forks the init with CLONE_NEWPID (`ckpt_sys::ns`); the init forks the root's seed
//! with set_tid = [root pid] (one entry: the pid in the init's namespace, the innermost),
//! and the seeds fork the rest as on the host. Everything ckpt does to the tree afterwards
//! (ptrace, /proc, pidfd_getfd, affinity) names tasks by their pids in ckpt's namespace,
//! which /proc (the host's, in ckpt's mount namespace) gives as the first NSpid entry:
//! `outer_pids` maps each dumped pid to it by walking the init's descendants. What the
//! restored process itself runs (injected clone3 set_tid, rt_sigqueueinfo) takes the
//! inner pids, the image's.
//!
//! The init waits for ckpt's word before it does anything else: `release` ("go") once
//! every process is detached; EOF instead (ckpt failed or died) makes it exit, and the
//! kernel kills every task of the namespace with it. Released, it reaps whatever exits in
//! the namespace and exits once nothing is left, after writing the root's wait status for
//! a foreground ckpt (`wait`).

use crate::seed::{self, Seeds};
use crate::{RestoreError, R};
use ckpt_sys::process::Forked;
use ckpt_sys::Pid;
use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// The init of the new namespace, a child of ckpt.
pub struct Init {
    /// Its pid in ckpt's namespace.
    pub pid: Pid,
    go: Option<std::fs::File>,
    status: std::fs::File,
}

fn pipe() -> R<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| ckpt_sys::Error::sys("pipe2", e))?)
}

/// Forks the init, which forks the root's seed (the rest of the tree follows from it).
/// `status_w`, the seeds' status pipe, is dropped here once forked, as `seeds::fork_root`
/// does.
pub fn start(seeds: &Seeds, status_w: OwnedFd, detach: bool, keep: &[RawFd]) -> R<Init> {
    let (go_r, go_w) = pipe()?;
    let (st_r, st_w) = pipe()?;
    match ckpt_sys::ns::fork_into_new_pidns()? {
        Forked::Child => {
            drop(go_w);
            drop(st_r);
            run(seeds, go_r.as_raw_fd(), st_w.as_raw_fd(), detach, keep)
        }
        Forked::Parent(pid) => {
            drop(status_w);
            Ok(Init {
                pid,
                go: Some(go_w.into()),
                status: st_r.into(),
            })
        }
    }
}

/// The init: mounts the namespace's own /proc, forks the root's seed, closes every fd
/// but its two pipes and the shared memory objects (`keep`), waits for "go".
fn run(seeds: &Seeds, go: RawFd, status: RawFd, detach: bool, keep: &[RawFd]) -> ! {
    let _ = nix::sys::prctl::set_name(c"ckpt-init");
    let root = seeds.tree.nodes[0].pid;
    if let Err(e) = ckpt_sys::ns::mount_own_proc() {
        seed::report(
            seeds.plans[0].err_fd,
            root,
            &format!("init of the new pid namespace: {e}"),
        );
        ckpt_sys::process::exit_now(1)
    }
    if detach {
        // Outlives ckpt: no SIGHUP from ckpt's terminal.
        let _ = nix::unistd::setsid();
    }
    match ckpt_sys::process::fork_with_pid(Pid::from_raw(root)) {
        Ok(Forked::Child) => seed::run(seeds, 0),
        Ok(Forked::Parent(_)) => {}
        Err(e) => {
            seed::report(
                seeds.plans[0].err_fd,
                root,
                &format!("init of the new pid namespace: clone3 with pid {root}: {e}"),
            );
            ckpt_sys::process::exit_now(1)
        }
    }
    let mut kept = vec![go, status];
    kept.extend_from_slice(keep);
    close_all_but(&kept);
    let mut byte = [0u8; 1];
    let mut go = std::mem::ManuallyDrop::new(ckpt_sys::process::file_from_raw(go));
    if !matches!(go.read(&mut byte), Ok(1)) {
        // ckpt failed or died before the release: the namespace dies with us.
        ckpt_sys::process::exit_now(1)
    }
    // Every puppet has mapped the shared objects: their memory is the tree's alone now.
    close_all_but(&[status]);
    let mut root_status: i32 = 0;
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == root => root_status = code << 8,
            Ok(WaitStatus::Signaled(p, sig, core)) if p.as_raw() == root => {
                root_status = sig as i32 | if core { 0x80 } else { 0 }
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    let mut out = ckpt_sys::process::file_from_raw(status);
    let _ = out.write_all(&root_status.to_le_bytes());
    ckpt_sys::process::exit_now(0)
}

/// Closes every fd but `keep` (ckpt's fds and the tree's slots went to the root's seed).
fn close_all_but(keep: &[RawFd]) {
    let mut keep = keep.to_vec();
    keep.sort_unstable();
    let mut from: u32 = 0;
    for k in keep {
        if k as u32 > from {
            let _ = ckpt_sys::process::close_range(from, k as u32 - 1);
        }
        from = k as u32 + 1;
    }
    let _ = ckpt_sys::process::close_range(from, u32::MAX);
}

impl Init {
    /// The pid in ckpt's namespace of every dumped pid in `pids`, among the init's
    /// descendants.
    pub fn outer_pids(&self, pids: &[i32]) -> R<Vec<Pid>> {
        outer_pids(self.pid, false, pids)
    }

    /// Every process is released: the init starts reaping.
    pub fn release(&mut self) -> R<()> {
        if let Some(mut go) = self.go.take() {
            go.write_all(b"g").map_err(|e| {
                ckpt_sys::Error::Other(format!(
                    "releasing the pid namespace's init {}: {e}",
                    self.pid
                ))
            })?;
        }
        Ok(())
    }

    /// Waits until the namespace is empty (the init exited); the root's wait status.
    pub fn wait(mut self) -> R<i32> {
        loop {
            match waitpid(self.pid, None) {
                Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => break,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    return Err(ckpt_sys::Error::sys(format!("waitpid({})", self.pid), e).into())
                }
            }
        }
        let mut b = [0u8; 4];
        self.status.read_exact(&mut b).map_err(|e| {
            ckpt_sys::Error::Other(format!(
                "the pid namespace's init {} ended without the root's status: {e}",
                self.pid
            ))
        })?;
        Ok(i32::from_le_bytes(b))
    }
}

/// The pid in ckpt's namespace of every dumped pid in `pids`, found among the
/// descendants of `top` (and `top` itself with `with_top`): each one's NSpid at the
/// level of `top`'s namespace is its dumped pid (the innermost but in a pid namespace
/// nested below it, `nested_pidns.rs`).
pub fn outer_pids(top: Pid, with_top: bool, pids: &[i32]) -> R<Vec<Pid>> {
    let mut inner_to_outer: HashMap<i32, Pid> = HashMap::with_capacity(pids.len());
    let level = ckpt_sys::ns::ns_pids(top)?.len().saturating_sub(1);
    let mut add = |p: Pid| -> R<()> {
        if let Some(&inner) = ckpt_sys::ns::ns_pids(p)?.get(level) {
            inner_to_outer.insert(inner, p);
        }
        Ok(())
    };
    if with_top {
        add(top)?;
    }
    let mut todo = vec![top];
    while let Some(p) = todo.pop() {
        for t in ckpt_sys::proc::tasks(p).unwrap_or_default() {
            for c in ckpt_sys::proc::children(p, t).unwrap_or_default() {
                add(c)?;
                todo.push(c);
            }
        }
    }
    pids.iter()
        .map(|p| {
            inner_to_outer.get(p).copied().ok_or_else(|| {
                RestoreError::Refused(format!(
                    "pid {p}: not found in the pid namespace under pid {top}"
                ))
            })
        })
        .collect()
}
