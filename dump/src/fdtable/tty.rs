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

/// The record of the pty end at `ctx` (once per description). `own_mounts`: the tree is
/// a container with a mount namespace of its own (whose devpts the restore makes fresh).
pub fn dump(
    ctx: &FdCtx,
    master: bool,
    target: &str,
    own_mounts: bool,
) -> Result<pb::TtyState, DumpError> {
    let (pid, fd) = (ctx.pid, ctx.fd);
    let named = |why: String| refuse(format!("pid {pid}: fd {fd} ({target}): {why}"));
    let sys = |e: ckpt_sys::Error| named(e.to_string());
    let mine = ckpt_sys::process::steal_fd(pid, fd)?;
    let f = mine.as_fd();
    use std::os::unix::fs::MetadataExt;
    // The slave's device says which devpts instance the pair is of, whichever end this is
    // and whatever path it was opened by (a container's /dev/console is a bind of it).
    // A locked master has no slave to open (EIO): its own node's device then says which
    // devpts it came from (a pts/ptmx), or nothing (/dev/ptmx: the host's /dev/pts).
    let slave = if master {
        tty::open_slave(f, libc::O_RDONLY | libc::O_NONBLOCK).ok()
    } else {
        None
    };
    let locked_master = master && slave.is_none();
    let st = std::fs::File::from(
        slave
            .as_ref()
            .unwrap_or(&mine)
            .try_clone()
            .map_err(|e| named(e.to_string()))?,
    )
    .metadata()
    .map_err(|e| named(e.to_string()))?;
    let host = std::fs::metadata("/dev/pts").map_err(|e| named(e.to_string()))?;
    let devpts = if st.dev() == host.dev() {
        String::new()
    } else if locked_master {
        container_devpts(pid, st.dev(), own_mounts).unwrap_or_default()
    } else {
        container_devpts(pid, st.dev(), own_mounts).map_err(named)?
    };
    let index = if master {
        tty::index(f).map_err(sys)?
    } else {
        let (major, minor) = (
            nix::sys::stat::major(st.rdev()),
            nix::sys::stat::minor(st.rdev()),
        );
        ((major - tty::PTS_MAJOR) << 8 | minor) as u32
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
        devpts,
        ..Default::default()
    })
}

/// Where the devpts instance of device `dev` is mounted (its root) in `pid`'s mount
/// namespace: a container's own, which the restore makes fresh. Err for another devpts
/// of the host's (nothing would make it again).
fn container_devpts(pid: ckpt_sys::Pid, dev: u64, own_mounts: bool) -> Result<String, String> {
    let want = format!(
        "{}:{}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    let other = "a terminal of another devpts instance than the host's /dev/pts";
    if !own_mounts {
        return Err(format!(
            "{other}, in a tree without a mount namespace of its own; not supported"
        ));
    }
    ckpt_sys::mounts::mountinfo(pid)
        .into_iter()
        .find(|l| l.fstype == "devpts" && l.dev == want && l.root == "/")
        .map(|l| l.mountpoint)
        .ok_or_else(|| format!("{other}, whose root (device {want}) the container has not mounted"))
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

/// A pair's name in messages: /dev/pts/N of the host, or of a container's devpts.
fn pair_name(t: &pb::TtyState) -> String {
    if t.devpts.is_empty() {
        format!("/dev/pts/{}", t.index)
    } else {
        format!("{}/{} of the container", t.devpts, t.index)
    }
}

/// A pair's object number: its index, a container's devpts above the host's.
fn object_of(t: &pb::TtyState) -> u64 {
    t.index as u64 | if t.devpts.is_empty() { 0 } else { 1 << 32 }
}

/// Once every process is read: each slave's master in the tree, pairs as objects, the
/// sessions and foreground groups (see the module doc). `parents`: pid -> parent pid of
/// every process of the tree; `image_pid`: a pid as the images hold it; `shell_job`: a
/// slave whose master is outside is the job's terminal (else refused); `orphan_pts_master`:
/// one of a container's own devpts is its console (runc's), restored with a new master
/// handed to the caller.
pub fn finish(
    table: &mut FdTable,
    parents: &HashMap<i32, i32>,
    image_pid: &dyn Fn(i32) -> i32,
    shell_job: bool,
    orphan_pts_master: bool,
) -> Result<(), DumpError> {
    let ids = table.picked(|d| d.tty.is_some());
    if ids.is_empty() {
        return Ok(());
    }
    let first = |t: &FdTable, i: usize| match t.unix.first_holder(t.descs[i].id) {
        Some((pid, fd)) => format!("pid {pid}: fd {fd}"),
        None => "in flight (SCM_RIGHTS)".to_string(),
    };
    // (devpts, index) -> the master's packet mode and lock.
    let mut masters: HashMap<(String, u32), (bool, bool)> = HashMap::new();
    for &i in &ids {
        let t = table.descs[i].tty.as_ref().expect("tty");
        let key = (t.devpts.clone(), t.index);
        if t.master && masters.insert(key, (t.packet, t.locked)).is_some() {
            return Err(refuse(format!(
                "{}: a second description of the master of {}; not supported",
                first(table, i),
                pair_name(t)
            )));
        }
    }
    let mut outside: Vec<usize> = Vec::new();
    // The pairs a controlling terminal may be (tty_nr names only the index).
    let mut pairs: Vec<(String, u32)> = masters.keys().cloned().collect();
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
        let Some(&(packet, locked)) = masters.get(&(t.devpts.clone(), t.index)) else {
            if !t.devpts.is_empty() {
                // A container's console: its master is the engine's (runc's
                // --console-socket receiver, podman's conmon).
                if !orphan_pts_master {
                    return Err(refuse(format!(
                        "{who} ({}): its master is outside the dumped tree (a container's \
                         console, held by its engine); dump with --orphan-pts-master to \
                         restore it with a new master handed to the caller",
                        pair_name(t)
                    )));
                }
                t.orphan = true;
                d.object = object_of(t);
                pairs.push((t.devpts.clone(), t.index));
                continue;
            }
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
        d.object = object_of(t);
        if let (true, Some((pid, fd))) = (t.master, holder) {
            let q = queued(pid, fd, t).map_err(|why| {
                refuse(format!(
                    "{who} ({}): the bytes queued in the terminal: {why}",
                    pair_name(t)
                ))
            })?;
            (t.input, t.input_eof, t.output) = (q.input.bytes, q.input.eofs, q.output);
        }
    }
    if !outside.is_empty() {
        job_terminal(table, &outside, parents, image_pid)?;
    }
    pairs.sort();
    pairs.dedup();
    // Controlling terminals: the session leader of each, and its foreground group.
    let mut sessions: HashMap<(String, u32), (i32, i32)> = HashMap::new();
    for &pid in parents.keys() {
        let Ok(st) = ckpt_sys::proc::stat(ckpt_sys::Pid::from_raw(pid)) else {
            continue;
        };
        let dev = decode(st.tty_nr);
        if dev.0 != tty::PTS_MAJOR {
            continue;
        }
        let n = dev.1 as u32;
        let mut of_n = pairs.iter().filter(|(_, i)| *i == n);
        let Some(key) = of_n.next() else { continue };
        if of_n.next().is_some() {
            return Err(refuse(format!(
                "pid {pid}: its controlling terminal is pty {n}, which both the host's \
                 /dev/pts and a container's devpts of the tree have; not supported"
            )));
        }
        if !parents.contains_key(&st.session) {
            return Err(refuse(format!(
                "pid {pid}: its controlling terminal {} belongs to session {}, whose \
                 leader is outside the dumped tree; not supported",
                pair_name(&pb::TtyState {
                    devpts: key.0.clone(),
                    index: n,
                    ..Default::default()
                }),
                st.session
            )));
        }
        if st.session == pid {
            sessions.insert(key.clone(), (pid, st.tpgid));
        }
    }
    for ((devpts, n), &(sid, fg)) in &sessions {
        let of = |t: &pb::TtyState| t.index == *n && t.devpts == *devpts;
        if fg > 0 && !parents.contains_key(&fg) {
            return Err(refuse(format!(
                "pid {sid}: the foreground process group {fg} of its terminal pty {n} has \
                 no leader in the dumped tree; not supported yet"
            )));
        }
        let holds = ids.iter().any(|&i| {
            table.descs[i].tty.as_ref().is_some_and(of)
                && table
                    .unix
                    .holders
                    .get(&table.descs[i].id)
                    .is_some_and(|h| h.contains(&sid))
        });
        if !holds {
            return Err(refuse(format!(
                "pid {sid}: it leads the session of pty {n} without holding an fd of it; \
                 not supported yet"
            )));
        }
        for &i in &ids {
            let t = table.descs[i].tty.as_mut().expect("tty");
            if of(t) {
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
