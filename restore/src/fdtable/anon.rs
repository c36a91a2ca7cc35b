//! eventfd, signalfd and timerfd made again from their fdinfo state, each at its slot.
//! A timer comes back with the time it had left at the dump, counted from the restore
//! (the time the process was not running does not count), its interval, clock,
//! TFD_TIMER_ABSTIME / CANCEL_ON_SET flags and its expirations not read yet.

use ckpt_images::pb;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::unistd::dup2;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

const EFD_SEMAPHORE: i32 = 1;
const TFD_TIMER_ABSTIME: u32 = 1;
const TFD_TIMER_CANCEL_ON_SET: u32 = 2;
/// The clocks timerfd_create takes: REALTIME, MONOTONIC, BOOTTIME, REALTIME_ALARM,
/// BOOTTIME_ALARM.
const TIMERFD_CLOCKS: [i32; 5] = [0, 1, 7, 8, 9];

/// What an image's record of these kinds may hold.
pub fn check(d: &pb::FileDesc) -> Result<(), String> {
    let bad = |what: &str| Err(format!("description {}: {what}", d.id));
    match pb::FdKind::try_from(d.kind) {
        Ok(pb::FdKind::FdEventfd) => match &d.eventfd {
            None => bad("an eventfd without its state"),
            Some(e) if e.count == u64::MAX => bad("eventfd count 2^64-1"),
            Some(_) => Ok(()),
        },
        Ok(pb::FdKind::FdSignalfd) => match &d.signalfd {
            None => bad("a signalfd without its mask"),
            Some(_) => Ok(()),
        },
        Ok(pb::FdKind::FdTimerfd) => match &d.timerfd {
            None => bad("a timerfd without its state"),
            Some(t) if !TIMERFD_CLOCKS.contains(&t.clockid) => {
                bad(&format!("timerfd clock {}", t.clockid))
            }
            Some(t)
                if t.settime_flags & !(TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET) != 0
                    || t.value_nsec >= 1_000_000_000
                    || t.interval_nsec >= 1_000_000_000
                    || t.value_sec > i64::MAX as u64 / 2
                    || t.interval_sec > i64::MAX as u64 / 2 =>
            {
                bad("timerfd times or flags out of range")
            }
            Some(_) => Ok(()),
        },
        Ok(pb::FdKind::FdInotify) => match &d.inotify {
            None => bad("an inotify without its watches"),
            Some(i) => {
                for (n, w) in i.watches.iter().enumerate() {
                    if w.wd != n as i32 + 1 || !w.path.starts_with('/') || w.path.contains('\0') {
                        return bad(&format!("inotify watch {} ({:?})", w.wd, w.path));
                    }
                }
                Ok(())
            }
        },
        _ => bad("not an eventfd, signalfd, timerfd or inotify"),
    }
}

/// Puts `fd` at `slot` with the description's status flags (O_NONBLOCK).
pub(super) fn at_slot(fd: OwnedFd, d: &pb::FileDesc, slot: RawFd) -> Result<(), String> {
    dup2(fd.as_raw_fd(), slot).map_err(|e| format!("dup2 to slot {slot}: {e}"))?;
    let status = OFlag::from_bits_retain(d.flags as i32) & OFlag::O_NONBLOCK;
    fcntl(slot, FcntlArg::F_SETFL(status)).map_err(|e| format!("F_SETFL: {e}"))?;
    Ok(())
}

pub fn eventfd(d: &pb::FileDesc, slot: RawFd) -> Result<(), String> {
    let e = d.eventfd.unwrap_or_default();
    let mut flags =
        nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK;
    if e.semaphore {
        flags |= nix::sys::eventfd::EfdFlags::from_bits_retain(EFD_SEMAPHORE);
    }
    let fd = nix::sys::eventfd::EventFd::from_value_and_flags(0, flags)
        .map_err(|e| format!("eventfd: {e}"))?;
    if e.count != 0 {
        fd.write(e.count)
            .map_err(|err| format!("eventfd count {}: {err}", e.count))?;
    }
    at_slot(OwnedFd::from(fd), d, slot)
}

pub fn signalfd(d: &pb::FileDesc, slot: RawFd) -> Result<(), String> {
    let mask = d.signalfd.unwrap_or_default().sigmask;
    let fd = ckpt_sys::anonfd::signalfd(mask, libc_flags()).map_err(|e| e.to_string())?;
    at_slot(fd, d, slot)
}

pub fn timerfd(d: &pb::FileDesc, slot: RawFd) -> Result<(), String> {
    let t = d.timerfd.unwrap_or_default();
    let fd = ckpt_sys::anonfd::timerfd(t.clockid, libc_flags()).map_err(|e| e.to_string())?;
    let mut value = (t.value_sec, t.value_nsec);
    let interval = (t.interval_sec, t.interval_nsec);
    // A periodic timer with unread expirations is not re-armed until they are read (the
    // kernel shows no time left): it must expire once here, so that the first read
    // re-arms it, as it would have.
    let expired_periodic = t.ticks != 0 && interval != (0, 0);
    if expired_periodic {
        value = (0, 1);
    }
    if value != (0, 0) && t.settime_flags & TFD_TIMER_ABSTIME != 0 {
        // The kernel shows the time left; an absolute timer is set to now + that.
        let (s, ns) = ckpt_sys::anonfd::now(t.clockid).map_err(|e| e.to_string())?;
        let total = ns + value.1;
        value = (s + value.0 + total / 1_000_000_000, total % 1_000_000_000);
    }
    ckpt_sys::anonfd::timerfd_settime(&fd, t.settime_flags as i32, value, interval)
        .map_err(|e| e.to_string())?;
    if expired_periodic {
        let mut p = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&fd),
            nix::poll::PollFlags::POLLIN,
        )];
        let n = nix::poll::poll(&mut p, nix::poll::PollTimeout::from(1000u16))
            .map_err(|e| format!("poll: {e}"))?;
        if n != 1 {
            return Err("a timer set to expire at once did not, within 1 s".into());
        }
    }
    if t.ticks != 0 {
        ckpt_sys::anonfd::timerfd_set_ticks(&fd, t.ticks).map_err(|e| e.to_string())?;
    }
    at_slot(fd, d, slot)
}

/// An inotify instance with its watches added again by path, in order (so with the same
/// watch descriptors, checked), as its holder (the caller switched identity): each path
/// must be one it could read.
pub fn inotify(d: &pb::FileDesc, slot: RawFd) -> Result<(), String> {
    let fd = ckpt_sys::anonfd::inotify(libc_flags()).map_err(|e| e.to_string())?;
    for w in d
        .inotify
        .as_ref()
        .map(|i| i.watches.as_slice())
        .unwrap_or_default()
    {
        let got = ckpt_sys::anonfd::inotify_add_watch(&fd, &w.path, w.mask)
            .map_err(|e| format!("watch {}: {e}", w.wd))?;
        if got != w.wd {
            return Err(format!(
                "watch on {} came back as descriptor {got}, not {} (two watches on one inode?)",
                w.path, w.wd
            ));
        }
    }
    at_slot(fd, d, slot)
}

/// O_CLOEXEC | O_NONBLOCK, as signalfd4 and timerfd_create take them.
fn libc_flags() -> i32 {
    (OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).bits()
}
