//! File locks and leases taken again through the restored fds, as the process held them
//! (dump/src/locks.rs): flock(), POSIX record locks, OFD locks and leases, each without
//! waiting (a conflicting holder fails the restore instead of hanging it). Run before
//! the credentials change: a lease needs the file's owner or CAP_LEASE.

use crate::RestoreError;
use ckpt_images::pb;
use ckpt_sys::inject::Remote;
use ckpt_sys::mem;

const LOCK_SH: u64 = 1;
const LOCK_EX: u64 = 2;
const LOCK_NB: u64 = 4;
const F_RDLCK: i16 = 0;
const F_WRLCK: i16 = 1;
const F_SETLK: u64 = 6;
const F_OFD_SETLK: u64 = 37;
const F_SETLEASE: u64 = 1024;
const F_SETSIG: u64 = 10;

/// Refuses a lock record this restore does not know (checked at load).
pub fn check(f: &pb::Fd) -> Result<(), String> {
    for l in &f.locks {
        if pb::FileLockKind::try_from(l.kind).is_err() || l.end < l.start {
            return Err(format!("fd {}: lock {l:?} is not valid", f.fd));
        }
        if f.is_dup {
            return Err(format!("fd {}: a dup carries locks of its own", f.fd));
        }
    }
    if !(0..=64).contains(&f.lease_signal) {
        return Err(format!("fd {}: lease signal {}", f.fd, f.lease_signal));
    }
    Ok(())
}

/// `scratch`: 32 bytes (a struct flock) in the task.
pub fn restore(remote: &mut Remote, scratch: u64, fds: &[pb::Fd]) -> Result<(), RestoreError> {
    let pid = remote.pid();
    for f in fds {
        for l in &f.locks {
            let fd = f.fd as u64;
            let kind = pb::FileLockKind::try_from(l.kind).unwrap_or(pb::FileLockKind::LockFlock);
            let ty = if l.write { F_WRLCK } else { F_RDLCK };
            let what = || {
                format!(
                    "{} {} lock of fd {} ({}) [{}, {}]",
                    kind.as_str_name(),
                    if l.write { "write" } else { "read" },
                    f.fd,
                    f.path,
                    l.start,
                    if l.end == u64::MAX {
                        "EOF".to_string()
                    } else {
                        l.end.to_string()
                    }
                )
            };
            match kind {
                pb::FileLockKind::LockFlock => {
                    let op = if l.write { LOCK_EX } else { LOCK_SH } | LOCK_NB;
                    remote.syscall(what, libc::SYS_flock, &[fd, op])?;
                }
                pb::FileLockKind::LockPosix | pb::FileLockKind::LockOfd => {
                    let mut b = [0u8; 32];
                    b[0..2].copy_from_slice(&ty.to_le_bytes());
                    // l_whence SEEK_SET (0) at 2; l_start at 8, l_len at 16 (0: to EOF).
                    b[8..16].copy_from_slice(&l.start.to_le_bytes());
                    let len = if l.end == u64::MAX {
                        0
                    } else {
                        l.end - l.start + 1
                    };
                    b[16..24].copy_from_slice(&len.to_le_bytes());
                    mem::write(pid, scratch, &b)?;
                    let cmd = if kind == pb::FileLockKind::LockPosix {
                        F_SETLK
                    } else {
                        F_OFD_SETLK
                    };
                    remote.syscall(what, libc::SYS_fcntl, &[fd, cmd, scratch])?;
                }
                pb::FileLockKind::LockLease => {
                    if f.lease_signal != 0 {
                        remote.syscall(
                            || format!("fcntl({fd}, F_SETSIG, {})", f.lease_signal),
                            libc::SYS_fcntl,
                            &[fd, F_SETSIG, f.lease_signal as u64],
                        )?;
                    }
                    remote.syscall(what, libc::SYS_fcntl, &[fd, F_SETLEASE, ty as u64])?;
                }
            }
        }
    }
    Ok(())
}
