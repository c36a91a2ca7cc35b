//! Pseudo-terminals of the host's devpts held inside the tree (a `tmux` or `screen`
//! server with its shells): each end through ckpt's copy of it (the pair's termios and
//! window size, read through either end; packet mode and the slave's lock from the
//! master). Bytes waiting at either end are refused (a terminal cannot be read without
//! taking them, and writing them back would run them through the line discipline
//! again). Once the tree is read, `finish` checks every slave's master is in the tree
//! too, makes each pair one object, and records which session has it as controlling
//! terminal and its foreground group, from /proc/PID/stat.

use super::{FdCtx, FdTable};
use crate::{refuse, DumpError};
use ckpt_images::pb;
use ckpt_sys::tty;
use std::collections::HashMap;
use std::os::fd::AsFd;

/// Whether a character device (major, minor) is a pty end: Some(true) the master
/// (/dev/ptmx), Some(false) a slave (/dev/pts/N).
pub fn end_of(dev: (u64, u64)) -> Option<bool> {
    if dev == tty::PTMX {
        Some(true)
    } else if dev.0 == tty::PTS_MAJOR {
        Some(false)
    } else {
        None
    }
}

/// The record of the pty end at `ctx` (once per description).
pub fn dump(ctx: &FdCtx, master: bool, target: &str) -> Result<pb::TtyState, DumpError> {
    let (pid, fd) = (ctx.pid, ctx.fd);
    let named = |why: String| refuse(format!("pid {pid}: fd {fd} ({target}): {why}"));
    let sys = |e: ckpt_sys::Error| named(e.to_string());
    let mine = ckpt_sys::process::steal_fd(pid, fd)?;
    let f = mine.as_fd();
    let index = if master {
        tty::index(f).map_err(sys)?
    } else {
        let n = target
            .strip_prefix("/dev/pts/")
            .and_then(|n| n.parse().ok());
        let pts = std::fs::metadata("/dev/pts").map_err(|e| named(e.to_string()))?;
        let mine = std::fs::metadata(format!("/proc/{pid}/fd/{fd}"));
        use std::os::unix::fs::MetadataExt;
        match (n, mine) {
            (Some(n), Ok(m)) if m.dev() == pts.dev() => n,
            _ => {
                return Err(named(
                    "a terminal of another devpts than the host's /dev/pts (a container's); \
                     not supported here"
                        .into(),
                ))
            }
        }
    };
    let unread = tty::unread(f).map_err(sys)?;
    if unread > 0 {
        return Err(named(format!(
            "{unread} bytes wait unread at this end of /dev/pts/{index}; a terminal's \
             queued bytes cannot be kept (read them first)"
        )));
    }
    let ws = tty::winsize(f).map_err(sys)?;
    Ok(pb::TtyState {
        index,
        master,
        termios: tty::termios(f).map_err(sys)?,
        rows: ws[0] as u32,
        cols: ws[1] as u32,
        xpixel: ws[2] as u32,
        ypixel: ws[3] as u32,
        packet: master && tty::packet_mode(f).map_err(sys)?,
        locked: master && tty::locked(f).map_err(sys)?,
        session: 0,
        fg_pgrp: 0,
    })
}

/// tty_nr of /proc/PID/stat as (major, minor).
fn decode(tty_nr: i32) -> (u64, u64) {
    let n = tty_nr as u32 as u64;
    ((n >> 8) & 0xfff, (n & 0xff) | ((n >> 12) & 0xfff00))
}

/// Once every process is read: each slave's master in the tree, pairs as objects, the
/// sessions and foreground groups (see the module doc). `parents`: pid -> parent pid of
/// every process of the tree; `image_pid`: a pid as the images hold it.
pub fn finish(
    table: &mut FdTable,
    parents: &HashMap<i32, i32>,
    image_pid: &dyn Fn(i32) -> i32,
) -> Result<(), DumpError> {
    let ids = table.picked(|d| d.tty.is_some());
    if ids.is_empty() {
        return Ok(());
    }
    let first = |t: &FdTable, i: usize| {
        let (pid, fd) = t.unix.first_holder(t.descs[i].id).unwrap_or((0, -1));
        format!("pid {pid}: fd {fd}")
    };
    // index -> the master's packet mode and lock.
    let mut masters: HashMap<u32, (bool, bool)> = HashMap::new();
    for &i in &ids {
        let t = table.descs[i].tty.as_ref().expect("tty");
        if t.master && masters.insert(t.index, (t.packet, t.locked)).is_some() {
            return Err(refuse(format!(
                "{}: a second description of the master of /dev/pts/{}; not supported",
                first(table, i),
                t.index
            )));
        }
    }
    for &i in &ids {
        let who = first(table, i);
        let d = &mut table.descs[i];
        let t = d.tty.as_mut().expect("tty");
        let Some(&(packet, locked)) = masters.get(&t.index) else {
            return Err(refuse(format!(
                "{who} (/dev/pts/{}): its master (a terminal emulator, sshd, the shell's \
                 terminal) is outside the dumped tree; a job attached to such a terminal \
                 is not supported yet",
                t.index
            )));
        };
        t.packet = packet;
        t.locked = locked;
        d.object = t.index as u64;
    }
    // Controlling terminals: the session leader of each, and its foreground group.
    let mut sessions: HashMap<u32, (i32, i32)> = HashMap::new();
    for &pid in parents.keys() {
        let Ok(st) = ckpt_sys::proc::stat(ckpt_sys::Pid::from_raw(pid)) else {
            continue;
        };
        let dev = decode(st.tty_nr);
        if dev.0 != tty::PTS_MAJOR || !masters.contains_key(&(dev.1 as u32)) {
            continue;
        }
        let n = dev.1 as u32;
        if !parents.contains_key(&st.session) {
            return Err(refuse(format!(
                "pid {pid}: its controlling terminal /dev/pts/{n} belongs to session {}, \
                 whose leader is outside the dumped tree; not supported",
                st.session
            )));
        }
        if st.session == pid {
            sessions.insert(n, (pid, st.tpgid));
        }
    }
    for (&n, &(sid, fg)) in &sessions {
        if fg > 0 && !parents.contains_key(&fg) {
            return Err(refuse(format!(
                "pid {sid}: the foreground process group {fg} of its terminal /dev/pts/{n} \
                 has no leader in the dumped tree; not supported yet"
            )));
        }
        let holds = ids.iter().any(|&i| {
            table.descs[i].tty.as_ref().is_some_and(|t| t.index == n)
                && table
                    .unix
                    .holders
                    .get(&table.descs[i].id)
                    .is_some_and(|h| h.contains(&sid))
        });
        if !holds {
            return Err(refuse(format!(
                "pid {sid}: it leads the session of /dev/pts/{n} without holding an fd of \
                 it; not supported yet"
            )));
        }
        for &i in &ids {
            let t = table.descs[i].tty.as_mut().expect("tty");
            if t.index == n {
                t.session = image_pid(sid);
                t.fg_pgrp = if fg > 0 { image_pid(fg) } else { 0 };
            }
        }
    }
    Ok(())
}
