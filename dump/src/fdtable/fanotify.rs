//! A fanotify group: its init flags and its marks, read from fdinfo. An inode mark's
//! inode is found again from its file handle (as inotify's watches are), a mount mark's
//! mount by its id, a filesystem mark's filesystem by any mount of it; the restore marks
//! those paths again. Refused: a group of the content or pre-content class (permission
//! events: a process may be waiting for its answer), events not read yet (no interface
//! puts an event back), and a mark on something no path of ckpt's reaches.

use super::FdCtx;
use crate::DumpError;
use ckpt_images::pb;
use ckpt_sys::Pid;
use std::collections::HashMap;

/// FAN_CLASS_CONTENT | FAN_CLASS_PRE_CONTENT.
const PERMISSION_CLASSES: u32 = 0x0c;

pub fn dump(ctx: &FdCtx) -> Result<pb::FanotifyState, DumpError> {
    marks(ctx.pid, ctx.fd)
        .map_err(|why| crate::refuse(format!("pid {}: fd {} (fanotify): {why}", ctx.pid, ctx.fd)))
}

/// The group behind fd `fd` of `pid`, or why it cannot be restored (also asked before
/// the seize: it only reads).
pub fn marks(pid: Pid, fd: i32) -> Result<pb::FanotifyState, String> {
    let text = ckpt_sys::proc::read_trimmed(&format!("/proc/{pid}/fdinfo/{fd}"))
        .map_err(|e| e.to_string())?;
    let mut state = None;
    let mut marks = Vec::new();
    for l in text.lines().filter_map(|l| l.strip_prefix("fanotify ")) {
        let kv: HashMap<&str, &str> = l
            .split_whitespace()
            .filter_map(|t| t.split_once(':'))
            .collect();
        let hex = |k: &str| kv.get(k).and_then(|v| u64::from_str_radix(v, 16).ok());
        let unreadable = || format!("unreadable line {l:?}");
        if kv.contains_key("event-flags") {
            let (Some(flags), Some(event_flags)) = (hex("flags"), hex("event-flags")) else {
                return Err(unreadable());
            };
            if flags as u32 & PERMISSION_CLASSES != 0 {
                return Err(format!(
                    "a group of the content class (flags {flags:#x}), whose permission events \
                     a process may be waiting on; not supported"
                ));
            }
            state = Some((flags as u32, event_flags as u32));
            continue;
        }
        let (Some(mflags), Some(mask), Some(ignored)) =
            (hex("mflags"), hex("mask"), hex("ignored_mask"))
        else {
            return Err(unreadable());
        };
        let (on, path) = if kv.contains_key("ino") {
            let (Some(sdev), Some(htype), Some(handle)) = (
                hex("sdev"),
                kv.get("fhandle-type")
                    .and_then(|v| i32::from_str_radix(v, 16).ok()),
                kv.get("f_handle").and_then(|v| super::anon::unhex(v)),
            ) else {
                return Err(unreadable());
            };
            let path = ckpt_sys::anonfd::path_of_handle(sdev, htype, &handle)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("a mark on an inode no path leads to ({l})"))?;
            (pb::FanotifyOn::FanOnInode, path)
        } else if let Some(id) = hex("mnt_id") {
            let path = mount_point(|m| m.id == id)
                .ok_or_else(|| format!("a mark on mount {id}, which ckpt does not see"))?;
            (pb::FanotifyOn::FanOnMount, path)
        } else if let Some(sdev) = hex("sdev") {
            let dev = format!("{}:{}", sdev >> 20, sdev & 0xfffff);
            let path = mount_point(|m| m.dev == dev)
                .ok_or_else(|| format!("a mark on filesystem {dev}, mounted nowhere ckpt sees"))?;
            (pb::FanotifyOn::FanOnFilesystem, path)
        } else {
            return Err(unreadable());
        };
        marks.push(pb::FanotifyMark {
            on: on as i32,
            path,
            mflags: mflags as u32,
            mask,
            ignored_mask: ignored,
        });
    }
    let (flags, event_flags) = state.ok_or("no \"fanotify flags:\" line in its fdinfo")?;
    super::anon::no_unread_events(pid, fd)?;
    Ok(pb::FanotifyState {
        flags,
        event_flags,
        marks,
    })
}

/// The mount point of the first of ckpt's mounts `want` accepts.
fn mount_point(want: impl Fn(&ckpt_sys::mounts::Line) -> bool) -> Option<String> {
    ckpt_sys::mounts::mountinfo(Pid::this())
        .into_iter()
        .find(|m| want(m))
        .map(|m| m.mountpoint)
}
