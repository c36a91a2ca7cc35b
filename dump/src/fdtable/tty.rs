//! Pseudo-terminals of the host's devpts held inside the tree (a `tmux` or `screen`
//! server with its shells): each end through ckpt's copy of it (the pair's termios and
//! window size, read through either end; packet mode and the slave's lock from the
//! master). Once the tree is read, `finish` checks every slave's master is in the tree
//! too, makes each pair one object, records the bytes queued in it both ways (read out
//! and put back at once: a terminal has no peek, `ckpt_sys::tty::take_input`), and which
//! session has it as controlling terminal and its foreground group, from /proc/PID/stat.
//!
//! A slave whose master is outside (the terminal a shell started the job from) is the
//! job's terminal with `--shell-job`: external (`tty:[136:N]`), with its termios and
//! window size and, if the job's group was the terminal's foreground one, that group;
//! the restore attaches the job to the terminal ckpt runs in (`restore/src/shelljob.rs`).
//! Its session (the shell's) is outside the tree: the root's own session, which the
//! restore gives anew (ckpt's). Bytes waiting there stay with that terminal.

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
        ..Default::default()
    })
}

/// The bytes queued in the pair whose master is fd `fd` of `pid` (`tty::Queued`): read
/// out and put back at once, the tree being stopped, so that a `--leave-running` or
/// failed dump leaves them as they were.
fn queued(pid: i32, fd: i32, t: &pb::TtyState) -> Result<tty::Queued, String> {
    let e = |e: ckpt_sys::Error| e.to_string();
    let master = ckpt_sys::process::steal_fd(ckpt_sys::Pid::from_raw(pid), fd).map_err(e)?;
    let m = master.as_fd();
    if t.locked || t.packet {
        let n = tty::unread(m).map_err(e)?;
        if n > 0 {
            return Err(format!(
                "{n} bytes wait at the master, which is in {} mode; not supported",
                if t.locked { "locked" } else { "packet" }
            ));
        }
        if t.locked {
            // No slave is open: nothing typed waits at one.
            return Ok(tty::Queued::default());
        }
    }
    let slave = tty::open_slave(m, libc::O_RDWR | libc::O_NONBLOCK).map_err(e)?;
    let s = slave.as_fd();
    let output = if t.packet {
        Vec::new()
    } else {
        tty::take_output(m).map_err(e)?
    };
    let input = tty::take_input(s);
    let put = tty::put_output(m, &output);
    let input = input.map_err(e)?;
    let back = tty::put_input(s, &input);
    put.map_err(e)?;
    back.map_err(e)?;
    Ok(tty::Queued { input, output })
}

/// The key of the job's terminal /dev/pts/`n` (external, `--shell-job`).
pub fn external_key(n: u32) -> String {
    format!("tty:[{}:{n}]", tty::PTS_MAJOR)
}

/// tty_nr of /proc/PID/stat as (major, minor).
fn decode(tty_nr: i32) -> (u64, u64) {
    let n = tty_nr as u32 as u64;
    ((n >> 8) & 0xfff, (n & 0xff) | ((n >> 12) & 0xfff00))
}

/// Once every process is read: each slave's master in the tree, pairs as objects, the
/// sessions and foreground groups (see the module doc). `parents`: pid -> parent pid of
/// every process of the tree; `image_pid`: a pid as the images hold it; `shell_job`: a
/// slave whose master is outside is the job's terminal (else refused).
pub fn finish(
    table: &mut FdTable,
    parents: &HashMap<i32, i32>,
    image_pid: &dyn Fn(i32) -> i32,
    shell_job: bool,
) -> Result<(), DumpError> {
    let ids = table.picked(|d| d.tty.is_some());
    if ids.is_empty() {
        return Ok(());
    }
    let first = |t: &FdTable, i: usize| match t.unix.first_holder(t.descs[i].id) {
        Some((pid, fd)) => format!("pid {pid}: fd {fd}"),
        None => "in flight (SCM_RIGHTS)".to_string(),
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
    let mut outside: Vec<usize> = Vec::new();
    for &i in &ids {
        let who = first(table, i);
        // A master only in flight (SCM_RIGHTS) is read through ckpt's own copy.
        let id = table.descs[i].id;
        let holder = table.unix.first_holder(id).or_else(|| {
            let me = ckpt_sys::Pid::this().as_raw();
            table.unix.flying_fd(id).map(|fd| (me, fd))
        });
        let d = &mut table.descs[i];
        let t = d.tty.as_mut().expect("tty");
        let Some(&(packet, locked)) = masters.get(&t.index) else {
            if !shell_job {
                return Err(refuse(format!(
                    "{who} (/dev/pts/{}): its master (a terminal emulator, sshd, the shell's \
                     terminal) is outside the dumped tree; a job on the shell's terminal is \
                     dumped with --shell-job",
                    t.index
                )));
            }
            d.external = external_key(t.index);
            outside.push(i);
            continue;
        };
        t.packet = packet;
        t.locked = locked;
        d.object = t.index as u64;
        if let (true, Some((pid, fd))) = (t.master, holder) {
            let q = queued(pid, fd, t).map_err(|why| {
                refuse(format!(
                    "{who} (/dev/pts/{}): the bytes queued in the terminal: {why}",
                    t.index
                ))
            })?;
            (t.input, t.input_eof, t.output) = (q.input.bytes, q.input.eofs, q.output);
        }
    }
    if !outside.is_empty() {
        job_terminal(table, &outside, parents, image_pid)?;
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

/// The job's terminal(s) (`--shell-job`, descriptions `outside`): one only, and the
/// controlling terminal of whoever in the tree has one; its foreground group, if the
/// tree's, recorded on each description.
fn job_terminal(
    table: &mut FdTable,
    outside: &[usize],
    parents: &HashMap<i32, i32>,
    image_pid: &dyn Fn(i32) -> i32,
) -> Result<(), DumpError> {
    let n = table.descs[outside[0]].tty.as_ref().expect("tty").index;
    if let Some(&i) = outside
        .iter()
        .find(|&&i| table.descs[i].tty.as_ref().is_some_and(|t| t.index != n))
    {
        let (pid, fd) = table
            .unix
            .first_holder(table.descs[i].id)
            .unwrap_or((0, -1));
        return Err(refuse(format!(
            "pid {pid}: fd {fd}: a second terminal outside the tree besides /dev/pts/{n}; \
             --shell-job takes one"
        )));
    }
    let mut fg = 0;
    for &pid in parents.keys() {
        let Ok(st) = ckpt_sys::proc::stat(ckpt_sys::Pid::from_raw(pid)) else {
            continue;
        };
        let dev = decode(st.tty_nr);
        if dev == (tty::PTS_MAJOR, n as u64) && parents.contains_key(&st.tpgid) {
            fg = image_pid(st.tpgid);
        }
    }
    for &i in outside {
        let t = table.descs[i].tty.as_mut().expect("tty");
        t.fg_pgrp = fg;
        t.session = 0;
    }
    Ok(())
}
