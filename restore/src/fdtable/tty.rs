//! Pseudo-terminal pairs: the master opened again with its index (`/dev/pts/N` is the
//! name the programs know: a shell's ttyname), termios, window size, the bytes queued
//! both ways (`ckpt_sys::tty::put_input`, `put_output`), packet mode, each
//! slave description opened through the master (TIOCGPTPEER), the lock put back; then,
//! in the seed of the session leader that had it as controlling terminal, before it
//! forks its children (who inherit it), TIOCSCTTY, and tcsetpgrp in the seed of the
//! foreground group's leader.

use crate::seed::SeedPlan;
use ckpt_images::pb;
use ckpt_sys::tty;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use std::os::fd::{AsFd, RawFd};

/// The kernel's O_LARGEFILE (libc's is 0 on x86-64: glibc hides it), which open(2) forces
/// on every file it opens and TIOCGPTPEER does not.
const O_LARGEFILE: u32 = 0o100000;

/// What an image's pty record may hold.
pub fn check(d: &pb::FileDesc) -> Result<(), String> {
    let Some(t) = &d.tty else {
        return Err(format!(
            "description {}: a terminal without its record",
            d.id
        ));
    };
    if !t.termios.is_empty() && t.termios.len() != std::mem::size_of::<libc::termios>() {
        return Err(format!(
            "description {}: a termios of {} bytes",
            d.id,
            t.termios.len()
        ));
    }
    if t.input.len() > tty::MAX_QUEUED || t.output.len() > tty::MAX_QUEUED {
        return Err(format!(
            "description {}: {} and {} bytes queued in a terminal",
            d.id,
            t.input.len(),
            t.output.len()
        ));
    }
    if t.input_eof.len() > tty::MAX_QUEUED
        || t.input_eof.windows(2).any(|w| w[0] > w[1])
        || t.input_eof
            .last()
            .is_some_and(|&e| e as usize > t.input.len())
    {
        return Err(format!(
            "description {}: ends of file out of order or past the queued input",
            d.id
        ));
    }
    let queued = !t.input.is_empty() || !t.output.is_empty() || !t.input_eof.is_empty();
    if queued && (!t.master || t.packet || t.locked) {
        return Err(format!(
            "description {}: bytes queued on a terminal's record other than an unlocked \
             master's",
            d.id
        ));
    }
    if t.index > 1 << 20 || t.rows > u16::MAX as u32 || t.cols > u16::MAX as u32 {
        return Err(format!(
            "description {}: terminal /dev/pts/{}",
            d.id, t.index
        ));
    }
    Ok(())
}

/// Makes the pair whose descriptions are `descs` and puts each at its slot.
pub fn create(descs: &[(pb::FileDesc, RawFd)]) -> Result<(), String> {
    let e = |e: ckpt_sys::Error| e.to_string();
    let t = descs[0].0.tty.as_ref().ok_or("no terminal record")?;
    let master = tty::master_with_index(t.index).map_err(e)?;
    let m = master.as_fd();
    if !t.termios.is_empty() {
        tty::set_termios(m, &t.termios).map_err(e)?;
    }
    tty::set_winsize(
        m,
        [
            t.rows as u16,
            t.cols as u16,
            t.xpixel as u16,
            t.ypixel as u16,
        ],
    )
    .map_err(e)?;
    if t.packet {
        tty::set_packet_mode(m, true).map_err(e)?;
    }
    tty::set_locked(m, false).map_err(e)?;
    // The bytes queued both ways, through a slave of ckpt's (the pair's termios set).
    if let Some((q, _)) = descs
        .iter()
        .find(|(d, _)| d.tty.as_ref().is_some_and(|t| t.master))
    {
        let q = q.tty.as_ref().ok_or("no terminal record")?;
        let input = tty::Input {
            bytes: q.input.clone(),
            eofs: q.input_eof.clone(),
        };
        if input != tty::Input::default() {
            let slave = tty::open_slave(m, libc::O_RDWR | libc::O_NONBLOCK).map_err(e)?;
            tty::put_input(slave.as_fd(), &input).map_err(e)?;
        }
        tty::put_output(m, &q.output).map_err(e)?;
    }
    let mut master = Some(master);
    // Slaves first: each is opened through the master, which then goes to its slot.
    let mut order: Vec<&(pb::FileDesc, RawFd)> = descs.iter().collect();
    order.sort_by_key(|(d, _)| d.tty.as_ref().is_some_and(|t| t.master));
    for (d, slot) in order {
        let end = d.tty.as_ref().ok_or("no terminal record")?;
        let fd = if end.master {
            master
                .take()
                .ok_or_else(|| format!("/dev/pts/{}: two masters", t.index))?
        } else {
            let m = master
                .as_ref()
                .ok_or_else(|| format!("/dev/pts/{}: no master", t.index))?;
            if d.flags & O_LARGEFILE != 0 {
                // Opened by its path, as the kernel forces O_LARGEFILE on an open().
                let path = format!("/dev/pts/{}", t.index);
                let fd = nix::fcntl::open(
                    path.as_str(),
                    OFlag::from_bits_retain((d.flags & 3) as i32)
                        | OFlag::O_NOCTTY
                        | OFlag::O_NONBLOCK,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|e| format!("{path}: {e}"))?;
                std::os::fd::OwnedFd::from(ckpt_sys::process::file_from_raw(fd))
            } else {
                tty::open_slave(m.as_fd(), (d.flags & 3) as i32 | libc::O_NONBLOCK).map_err(e)?
            }
        };
        crate::seed::place_owned(fd, *slot)?;
        let flags = OFlag::from_bits_retain(d.flags as i32) - OFlag::O_ACCMODE;
        fcntl(*slot, FcntlArg::F_SETFL(flags))
            .map_err(|e| format!("F_SETFL {:#o}: {e}", d.flags))?;
    }
    if t.locked {
        let at = descs
            .iter()
            .find(|(d, _)| d.tty.as_ref().is_some_and(|t| t.master));
        if let Some((_, slot)) = at {
            let fd = nix::unistd::dup(*slot).map_err(|e| format!("dup: {e}"))?;
            let fd = ckpt_sys::process::file_from_raw(fd);
            tty::set_locked(fd.as_fd(), true).map_err(e)?;
        }
    }
    Ok(())
}

/// The controlling terminal `plan`'s process takes (from the tree's table): as session
/// leader (TIOCSCTTY), and as leader of its foreground group (tcsetpgrp).
/// A job's terminal (external, `--shell-job`) is ckpt's session's already: only its
/// foreground group.
pub fn attach(plan: &mut SeedPlan, descs: &[pb::FileDesc]) {
    for d in descs {
        let Some(t) = &d.tty else { continue };
        let job = !d.external.is_empty();
        if t.session == plan.pid && !job {
            plan.ctty = Some(t.index);
        }
        if t.fg_pgrp == plan.pid && (t.session != 0 || job) {
            plan.foreground = true;
        }
    }
}

/// In the seed, once its objects are made and before it forks: its controlling terminal
/// and foreground group, as `attach` planned.
pub fn take(plan: &SeedPlan) -> Result<(), String> {
    if let Some(n) = plan.ctty {
        let path = format!("/dev/pts/{n}");
        let fd = nix::fcntl::open(
            path.as_str(),
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| format!("{path}: {e}"))?;
        let fd = ckpt_sys::process::file_from_raw(fd);
        tty::make_controlling(fd.as_fd()).map_err(|e| format!("{path}: {e}"))?;
    }
    if plan.foreground {
        tty::set_foreground(plan.pid).map_err(|e| e.to_string())?;
    }
    Ok(())
}
