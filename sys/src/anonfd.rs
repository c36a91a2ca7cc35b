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

/// inotify_init1(flags).
pub fn inotify(flags: i32) -> Result<OwnedFd> {
    // SAFETY: inotify_init1 takes no pointers.
    let r = unsafe { libc::inotify_init1(flags) };
    let fd = Errno::result(r).ctx(|| "inotify_init1".to_string())?;
    // SAFETY: inotify_init1 returned a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// inotify_add_watch(fd, path, mask): the watch descriptor the kernel gave.
pub fn inotify_add_watch(fd: &OwnedFd, path: &str, mask: u32) -> Result<i32> {
    let c = std::ffi::CString::new(path)
        .map_err(|_| crate::Error::Other(format!("{path:?} has a NUL byte")))?;
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    let r = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) };
    Errno::result(r).ctx(|| format!("inotify_add_watch({path}, {mask:#x})"))
}

/// The path (in ckpt's mount namespace) of the inode a file handle names, on the
/// filesystem whose kernel dev_t is `sdev` (as inotify's fdinfo shows it): through
/// open_by_handle_at on one of its mounts, then /proc/self/fd. None if no mount of it is
/// found or the inode has no path any more.
pub fn path_of_handle(sdev: u64, handle_type: i32, handle: &[u8]) -> Result<Option<String>> {
    let want = format!("{}:{}", sdev >> 20, sdev & 0xfffff);
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| crate::Error::io("/proc/self/mountinfo", e))?;
    // A mount of the filesystem's root first: paths under a bind mount's subtree only.
    let mut mounts: Vec<(bool, String)> = info
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(2) == Some(&want.as_str())).then(|| {
                (
                    f.get(3) != Some(&"/"),
                    crate::probe::unescape_octal(f.get(4).copied().unwrap_or("")),
                )
            })
        })
        .collect();
    mounts.sort();
    let Some((_, mount)) = mounts.into_iter().next() else {
        return Ok(None);
    };
    // Not O_PATH: open_by_handle_at refuses one (EBADF).
    let mfd = nix::fcntl::open(
        mount.as_str(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| crate::Error::sys(format!("open {mount}"), e))?;
    // SAFETY: open returned a new fd nothing else owns.
    let mfd = unsafe { OwnedFd::from_raw_fd(mfd) };
    // struct file_handle: u32 handle_bytes, i32 handle_type, then the bytes.
    let mut fh = Vec::with_capacity(8 + handle.len());
    fh.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
    fh.extend_from_slice(&handle_type.to_ne_bytes());
    fh.extend_from_slice(handle);
    // SAFETY: `fh` is a complete struct file_handle of handle.len() bytes, valid for the
    // call; the kernel only reads it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mfd.as_raw_fd(),
            fh.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    let Ok(fd) = Errno::result(r) else {
        return Ok(None);
    };
    // SAFETY: open_by_handle_at returned a new fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| crate::Error::io("/proc/self/fd", e))?;
    let path = link.to_string_lossy().into_owned();
    if !path.starts_with('/') || path.ends_with(" (deleted)") {
        return Ok(None);
    }
    Ok(Some(path))
}

/// fanotify_init(flags, event_f_flags): a new notification group.
pub fn fanotify_init(flags: u32, event_flags: u32) -> Result<OwnedFd> {
    // SAFETY: fanotify_init takes no pointers.
    let r = unsafe { libc::fanotify_init(flags, event_flags) };
    let fd = Errno::result(r).ctx(|| format!("fanotify_init({flags:#x}, {event_flags:#x})"))?;
    // SAFETY: fanotify_init returned a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// fanotify_mark(fd, flags, mask, AT_FDCWD, path).
pub fn fanotify_mark(fd: &OwnedFd, flags: u32, mask: u64, path: &str) -> Result<()> {
    let c = std::ffi::CString::new(path)
        .map_err(|_| crate::Error::Other(format!("{path:?} has a NUL byte")))?;
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    let r = unsafe { libc::fanotify_mark(fd.as_raw_fd(), flags, mask, libc::AT_FDCWD, c.as_ptr()) };
    Errno::result(r)
        .map(drop)
        .ctx(|| format!("fanotify_mark({flags:#x}, {mask:#x}, {path})"))
}

/// FIONREAD of a notification fd (inotify, fanotify): bytes of events not read yet.
pub fn queued_bytes(fd: &OwnedFd) -> Result<u32> {
    let mut v: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into `v`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD as _, &mut v) };
    Errno::result(r).ctx(|| "ioctl(FIONREAD)".to_string())?;
    Ok(v as u32)
}
