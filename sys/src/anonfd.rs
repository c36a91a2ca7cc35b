//! Anonymous-inode fds the restore makes again with exact state that nix cannot express:
//! a signalfd of any mask (real-time signals too), a timerfd of any clock with its time
//! left, interval and pending expirations.

use crate::error::{Ctx, Result};
use nix::errno::Errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// signalfd4(-1, mask, flags): a new signalfd reading the signals of `mask` (bit N-1 for
/// signal N).
pub fn signalfd(mask: u64, flags: i32) -> Result<OwnedFd> {
    // SAFETY: the kernel reads 8 bytes of mask from a valid u64 for the call's duration.
    let r = unsafe { libc::syscall(libc::SYS_signalfd4, -1, &mask as *const u64, 8usize, flags) };
    let fd = Errno::result(r).ctx(|| format!("signalfd4(mask {mask:#x})"))?;
    // SAFETY: signalfd4 returned a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// timerfd_create(clockid, flags).
pub fn timerfd(clockid: i32, flags: i32) -> Result<OwnedFd> {
    // SAFETY: timerfd_create takes no pointers.
    let r = unsafe { libc::timerfd_create(clockid, flags) };
    let fd = Errno::result(r).ctx(|| format!("timerfd_create(clock {clockid})"))?;
    // SAFETY: timerfd_create returned a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// timerfd_settime(fd, flags, {interval, value}); times as (seconds, nanoseconds).
pub fn timerfd_settime(
    fd: &OwnedFd,
    flags: i32,
    value: (u64, u64),
    interval: (u64, u64),
) -> Result<()> {
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: interval.0 as i64,
            tv_nsec: interval.1 as i64,
        },
        it_value: libc::timespec {
            tv_sec: value.0 as i64,
            tv_nsec: value.1 as i64,
        },
    };
    // SAFETY: `spec` is a valid itimerspec for the call; the old value is not asked for.
    let r = unsafe { libc::timerfd_settime(fd.as_raw_fd(), flags, &spec, std::ptr::null_mut()) };
    Errno::result(r).ctx(|| "timerfd_settime".to_string())?;
    Ok(())
}

/// TFD_IOC_SET_TICKS: the expirations a read will return, as if they had happened.
pub fn timerfd_set_ticks(fd: &OwnedFd, ticks: u64) -> Result<()> {
    const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;
    // SAFETY: the ioctl reads a u64 from a valid pointer for the call's duration.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), TFD_IOC_SET_TICKS, &ticks as *const u64) };
    Errno::result(r).ctx(|| format!("TFD_IOC_SET_TICKS({ticks})"))?;
    Ok(())
}

/// clock_gettime(clockid) as (seconds, nanoseconds).
pub fn now(clockid: i32) -> Result<(u64, u64)> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec the kernel writes.
    let r = unsafe { libc::clock_gettime(clockid, &mut ts) };
    Errno::result(r).ctx(|| format!("clock_gettime({clockid})"))?;
    Ok((ts.tv_sec as u64, ts.tv_nsec as u64))
}
