//! File locks and leases held through the task's fds: flock() locks, POSIX record locks,
//! OFD locks and leases. fdinfo lists, for each fd, exactly the locks taken through its
//! open file description (and, for POSIX locks, owned by the task), so each is recorded
//! on the fd that holds it and re-taken through that fd at restore. A lock the task holds
//! through no fd at all (flock on a description only a mapping still holds) is refused.

use crate::{refuse, DumpError};
use ckpt_images::pb;
use ckpt_sys::inject::Remote;
use ckpt_sys::kstate::{self, LockLine};
use ckpt_sys::Pid;
use std::collections::HashSet;

const F_GETSIG: u64 = 11;

fn to_record(pid: Pid, fd: i32, l: &LockLine) -> Result<pb::FileLock, DumpError> {
    let bad = |why: &str| {
        refuse(format!(
            "pid {pid}: fd {fd} holds a {} {} {} lock on {} ({why}); not supported",
            l.class, l.mode, l.access, l.inode
        ))
    };
    let kind = match (l.class.as_str(), l.mode.as_str()) {
        ("FLOCK", "ADVISORY") => pb::FileLockKind::LockFlock,
        ("POSIX", "ADVISORY") => pb::FileLockKind::LockPosix,
        ("OFDLCK", "ADVISORY") => pb::FileLockKind::LockOfd,
        ("LEASE", "ACTIVE") => pb::FileLockKind::LockLease,
        ("LEASE", _) => return Err(bad("a lease being broken")),
        _ => return Err(bad("a kind ckpt does not know")),
    };
    let write = match l.access.as_str() {
        "READ" => false,
        "WRITE" => true,
        _ => return Err(bad("neither read nor write")),
    };
    Ok(pb::FileLock {
        kind: kind as i32,
        write,
        start: l.start,
        end: l.end,
    })
}

/// The locks a task's fds account for: (inode, start, end) of each fdinfo `lock:` line.
pub type Accounted = HashSet<(String, u64, u64)>;

/// Adds the locks of every fd to its record (the first fd of a shared description
/// only); returns what they account for, for `refuse_unaccounted`.
pub fn attach(pid: Pid, fds: &mut [pb::Fd]) -> Result<Accounted, DumpError> {
    let mut seen = Accounted::new();
    for f in fds.iter_mut() {
        let lines = kstate::fd_locks(pid, f.fd)?;
        for l in &lines {
            seen.insert((l.inode.clone(), l.start, l.end));
        }
        if f.is_dup {
            continue;
        }
        for l in &lines {
            f.locks.push(to_record(pid, f.fd, l)?);
        }
    }
    Ok(seen)
}

/// /proc/locks, read on a thread of its own. Reading it takes the kernel's file_rwsem
/// for writing, which first waits for an RCU grace period (5-20 ms here) unless one has
/// just passed for the same reason: so the dump reads it once as it begins (`warm_up`),
/// and once the tree is stopped (`read_once_stopped`), both beside the dump's own work
/// instead of in its frozen time.
pub struct AllLocks(std::thread::JoinHandle<Result<Vec<LockLine>, DumpError>>);

fn read_on_a_thread() -> Result<AllLocks, DumpError> {
    std::thread::Builder::new()
        .name("proc-locks".into())
        .spawn(|| Ok(kstate::all_locks()?))
        .map(AllLocks)
        .map_err(|e| DumpError::Lost(format!("starting a thread to read /proc/locks: {e}")))
}

/// See `AllLocks`: starts the grace period's wait as early as possible.
pub fn warm_up() {
    let _ = read_on_a_thread();
}

/// See `AllLocks`: every task of the tree must be stopped, so the list is final.
pub fn read_once_stopped() -> Result<AllLocks, DumpError> {
    read_on_a_thread()
}

/// Refuses a lock a stopped task holds through no fd (flock on a description only a
/// mapping still holds).
pub fn refuse_unaccounted(all: AllLocks, tasks: &[(Pid, Accounted)]) -> Result<(), DumpError> {
    let all = all
        .0
        .join()
        .map_err(|_| DumpError::Lost("reading /proc/locks panicked".into()))??;
    for l in all {
        let Some((pid, seen)) = tasks.iter().find(|(p, _)| l.pid == p.as_raw() as i64) else {
            continue;
        };
        if !seen.contains(&(l.inode.clone(), l.start, l.end)) {
            return Err(refuse(format!(
                "pid {pid}: holds a {} {} lock on inode {} through no open fd (e.g. \
                 through a mapping only); not supported",
                l.class, l.access, l.inode
            )));
        }
    }
    Ok(())
}

/// (fd, F_GETSIG) of every fd through which the task holds a lease: the signal a lease
/// break sends it (F_SETSIG; 0 means SIGIO). Asked by an injected fcntl, as no /proc
/// file shows it.
pub fn lease_signals(remote: &mut Remote) -> Result<Vec<(i32, i32)>, DumpError> {
    let pid = remote.pid();
    let mut out = Vec::new();
    for fd in ckpt_sys::proc::fds(pid)? {
        if kstate::fd_locks(pid, fd)?
            .iter()
            .any(|l| l.class == "LEASE")
        {
            let sig = remote.syscall(
                || format!("fcntl({fd}, F_GETSIG)"),
                libc::SYS_fcntl,
                &[fd as u64, F_GETSIG],
            )?;
            out.push((fd, sig as i32));
        }
    }
    Ok(out)
}

/// Puts the lease signals into the fd records that carry the leases.
pub fn set_lease_signals(fds: &mut [pb::Fd], signals: &[(i32, i32)]) {
    for f in fds.iter_mut() {
        if let Some(&(_, sig)) = signals.iter().find(|(fd, _)| *fd == f.fd) {
            f.lease_signal = sig;
        }
    }
}
