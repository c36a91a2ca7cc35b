//! mount(2) as a container's restore needs it: fresh filesystems, binds of a directory
//! held open beforehand (so a mount made meanwhile cannot shadow it), and per-mount flags
//! changed afterwards (MS_REMOUNT | MS_BIND, which leaves the superblock alone).

use crate::error::{Error, Result};
use nix::mount::{mount, MsFlags};
use std::os::fd::{AsRawFd, OwnedFd};

/// Mounts a new `fstype` superblock on `target` with `flags` and `data` (its options).
pub fn fresh(fstype: &str, source: &str, target: &str, flags: u64, data: &str) -> Result<()> {
    let f = MsFlags::from_bits_truncate(flags);
    mount(
        Some(source),
        target,
        Some(fstype),
        f,
        (!data.is_empty()).then_some(data),
    )
    .map_err(|e| Error::sys(format!("mount {fstype} ({data}) on {target}"), e))
}

/// Opens `path` (a directory or file to bind later) as an O_PATH fd.
pub fn hold(path: &str) -> Result<OwnedFd> {
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map(|fd| {
        // SAFETY: open returned a new fd that nothing else owns.
        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
    })
    .map_err(|e| Error::sys(format!("open {path}"), e))
}

/// Binds what `held` names (`hold`) on `target`.
pub fn bind(held: &OwnedFd, what: &str, target: &str) -> Result<()> {
    let src = format!("/proc/self/fd/{}", held.as_raw_fd());
    mount(
        Some(src.as_str()),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| Error::sys(format!("bind {what} on {target}"), e))
}

/// Sets the per-mount flags of the mount on `target` to `flags` (ro, nosuid, ...).
pub fn set_flags(target: &str, flags: u64) -> Result<()> {
    let f = MsFlags::from_bits_truncate(flags) | MsFlags::MS_REMOUNT | MsFlags::MS_BIND;
    mount(None::<&str>, target, None::<&str>, f, None::<&str>)
        .map_err(|e| Error::sys(format!("remount {target} with flags {flags:#x}"), e))
}
