//! A fanotify group made again: fanotify_init with the dumped flags, then each mark on
//! its path (an inode, a mount's mount point, a path on a filesystem), its ignore mask
//! as a second mark of the same object, as fanotify_mark(2) takes it.

use ckpt_images::pb;
use std::os::fd::RawFd;

/// The classes with permission events (the dump refuses them).
const PERMISSION_CLASSES: u32 = 0x0c;
const FAN_MARK_ADD: u32 = 0x1;
const FAN_MARK_IGNORED_MASK: u32 = 0x20;
const FAN_MARK_IGNORED_SURV_MODIFY: u32 = 0x40;
const FAN_MARK_MOUNT: u32 = 0x10;
const FAN_MARK_FILESYSTEM: u32 = 0x100;
const FAN_MARK_EVICTABLE: u32 = 0x200;
const FAN_MARK_IGNORE: u32 = 0x400;

pub fn check(d: &pb::FileDesc) -> Result<(), String> {
    let bad = |what: String| Err(format!("description {}: {what}", d.id));
    let Some(f) = &d.fanotify else {
        return bad("a fanotify group without its state".into());
    };
    if f.flags & PERMISSION_CLASSES != 0 {
        return bad(format!("fanotify flags {:#x}: a permission class", f.flags));
    }
    for m in &f.marks {
        let known = FAN_MARK_IGNORED_SURV_MODIFY | FAN_MARK_EVICTABLE | FAN_MARK_IGNORE;
        if pb::FanotifyOn::try_from(m.on).is_err() || m.mflags & !known != 0 {
            return bad(format!("fanotify mark kind {} flags {:#x}", m.on, m.mflags));
        }
        if !m.path.starts_with('/') {
            return bad(format!("fanotify mark path {:?} is not absolute", m.path));
        }
    }
    Ok(())
}

pub fn create(d: &pb::FileDesc, slot: RawFd) -> Result<(), String> {
    let f = d.fanotify.clone().unwrap_or_default();
    // The group keeps its init flags as given (fdinfo shows FAN_CLOEXEC and FAN_NONBLOCK
    // among them); the fd's own O_NONBLOCK and close-on-exec are set at its slot.
    let fd = ckpt_sys::anonfd::fanotify_init(f.flags, f.event_flags).map_err(|e| e.to_string())?;
    for m in &f.marks {
        let on = match pb::FanotifyOn::try_from(m.on) {
            Ok(pb::FanotifyOn::FanOnMount) => FAN_MARK_MOUNT,
            Ok(pb::FanotifyOn::FanOnFilesystem) => FAN_MARK_FILESYSTEM,
            _ => 0,
        };
        let base = FAN_MARK_ADD | on | (m.mflags & FAN_MARK_EVICTABLE);
        if m.mask != 0 {
            ckpt_sys::anonfd::fanotify_mark(&fd, base, m.mask, &m.path)
                .map_err(|e| e.to_string())?;
        }
        if m.ignored_mask != 0 {
            let ignore = if m.mflags & FAN_MARK_IGNORE != 0 {
                FAN_MARK_IGNORE
            } else {
                FAN_MARK_IGNORED_MASK
            };
            let flags = base | ignore | (m.mflags & FAN_MARK_IGNORED_SURV_MODIFY);
            ckpt_sys::anonfd::fanotify_mark(&fd, flags, m.ignored_mask, &m.path)
                .map_err(|e| e.to_string())?;
        }
    }
    super::anon::at_slot(fd, d, slot)
}
