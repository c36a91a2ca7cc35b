//! Pseudo-terminals (pty(7), tty_ioctl(4)), thinly wrapped: a master's index, a pair's
//! termios and window size (read and set through the master: the kernel applies both to
//! the slave), packet mode, the slave's lock, bytes waiting, a master with a given index,
//! its slave (TIOCGPTPEER), and the controlling terminal of the caller.

use crate::error::{Ctx, Error, Result};
use nix::errno::Errno;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The major number of the host's pty slaves (/dev/pts/N) and of /dev/ptmx (5:2).
pub const PTS_MAJOR: u64 = 136;
pub const PTMX: (u64, u64) = (5, 2);

fn ioctl_int(fd: BorrowedFd<'_>, req: libc::c_ulong, what: &str) -> Result<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: these ioctls write one int into `v`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, &mut v) };
    Errno::result(r).ctx(|| format!("ioctl({what})"))?;
    Ok(v)
}

fn ioctl_set_int(fd: BorrowedFd<'_>, req: libc::c_ulong, v: i32, what: &str) -> Result<()> {
    // SAFETY: these ioctls read one int from `v`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, &v) };
    Errno::result(r).ctx(|| format!("ioctl({what})"))?;
    Ok(())
}

/// TIOCGPTN: the index N of a master's /dev/pts/N.
pub fn index(master: BorrowedFd<'_>) -> Result<u32> {
    Ok(ioctl_int(master, libc::TIOCGPTN as _, "TIOCGPTN")? as u32)
}

/// TCGETS: the pair's termios, as raw bytes of `struct termios`.
pub fn termios(fd: BorrowedFd<'_>) -> Result<Vec<u8>> {
    // SAFETY: termios is plain data; all zeroes is a valid value.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: TCGETS writes one struct termios into `t`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TCGETS as _, &mut t) };
    Errno::result(r).ctx(|| "ioctl(TCGETS)".into())?;
    let p = (&t as *const libc::termios).cast::<u8>();
    // SAFETY: `t` is a live struct termios of that many bytes.
    Ok(unsafe { std::slice::from_raw_parts(p, std::mem::size_of::<libc::termios>()) }.to_vec())
}

/// TCSETS with raw bytes from [`termios`].
pub fn set_termios(fd: BorrowedFd<'_>, raw: &[u8]) -> Result<()> {
    if raw.len() != std::mem::size_of::<libc::termios>() {
        return Err(Error::Other(format!("a termios of {} bytes", raw.len())));
    }
    // SAFETY: termios is plain data; all zeroes is a valid value.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `raw` holds exactly one struct termios (checked), copied into `t`.
    unsafe {
        std::ptr::copy_nonoverlapping(
            raw.as_ptr(),
            (&mut t as *mut libc::termios).cast::<u8>(),
            raw.len(),
        )
    };
    // SAFETY: TCSETS reads one struct termios from `t`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TCSETS as _, &t) };
    Errno::result(r).ctx(|| "ioctl(TCSETS)".into())?;
    Ok(())
}

/// TIOCGWINSZ: rows, columns, x and y pixels.
pub fn winsize(fd: BorrowedFd<'_>) -> Result<[u16; 4]> {
    let mut w = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one struct winsize into `w`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ as _, &mut w) };
    Errno::result(r).ctx(|| "ioctl(TIOCGWINSZ)".into())?;
    Ok([w.ws_row, w.ws_col, w.ws_xpixel, w.ws_ypixel])
}

pub fn set_winsize(fd: BorrowedFd<'_>, ws: [u16; 4]) -> Result<()> {
    let w = libc::winsize {
        ws_row: ws[0],
        ws_col: ws[1],
        ws_xpixel: ws[2],
        ws_ypixel: ws[3],
    };
    // SAFETY: TIOCSWINSZ reads one struct winsize from `w`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ as _, &w) };
    Errno::result(r).ctx(|| "ioctl(TIOCSWINSZ)".into())?;
    Ok(())
}

/// TIOCGPKT / TIOCPKT: packet mode of a master.
pub fn packet_mode(master: BorrowedFd<'_>) -> Result<bool> {
    Ok(ioctl_int(master, libc::TIOCGPKT as _, "TIOCGPKT")? != 0)
}

pub fn set_packet_mode(master: BorrowedFd<'_>, on: bool) -> Result<()> {
    ioctl_set_int(master, libc::TIOCPKT as _, on as i32, "TIOCPKT")
}

/// TIOCGPTLCK / TIOCSPTLCK: whether the slave is locked (unlockpt(3) not called yet).
pub fn locked(master: BorrowedFd<'_>) -> Result<bool> {
    Ok(ioctl_int(master, libc::TIOCGPTLCK as _, "TIOCGPTLCK")? != 0)
}

pub fn set_locked(master: BorrowedFd<'_>, on: bool) -> Result<()> {
    ioctl_set_int(master, libc::TIOCSPTLCK as _, on as i32, "TIOCSPTLCK")
}

/// FIONREAD: bytes waiting to be read at this end.
pub fn unread(fd: BorrowedFd<'_>) -> Result<u32> {
    Ok(ioctl_int(fd, libc::FIONREAD, "FIONREAD")? as u32)
}

/// A new master (/dev/ptmx) whose slave is /dev/pts/`want`: opened again and again,
/// holding the lower indexes the kernel hands out meanwhile, until it gives `want`
/// (the lowest free index comes first). Err if `want` is taken.
pub fn master_with_index(want: u32) -> Result<OwnedFd> {
    let mut held = Vec::new();
    loop {
        let fd = nix::fcntl::open(
            "/dev/ptmx",
            nix::fcntl::OFlag::O_RDWR
                | nix::fcntl::OFlag::O_NOCTTY
                | nix::fcntl::OFlag::O_NONBLOCK
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ctx(|| "open /dev/ptmx".into())?;
        // SAFETY: open returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let got = index(std::os::fd::AsFd::as_fd(&fd))?;
        if got == want {
            return Ok(fd);
        }
        if got > want || held.len() > 4096 {
            return Err(Error::Other(format!(
                "/dev/pts/{want} is taken (the kernel gave /dev/pts/{got} next)"
            )));
        }
        held.push(fd);
    }
}

/// TIOCGPTPEER: a new description of the master's slave, opened with `flags`
/// (O_NOCTTY added) without looking up its path, as openpty(3) does. (O_CLOEXEC would
/// stay in the description's flags: not given, the caller places it at once.)
pub fn open_slave(master: BorrowedFd<'_>, flags: i32) -> Result<OwnedFd> {
    let f = flags | libc::O_NOCTTY;
    // SAFETY: TIOCGPTPEER takes its flags by value and returns a new fd.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER as _, f) };
    let fd = Errno::result(r).ctx(|| "ioctl(TIOCGPTPEER)".into())?;
    // SAFETY: TIOCGPTPEER returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// TIOCSCTTY: makes `fd`'s terminal the controlling terminal of the caller's session
/// (the caller leads it and has none).
pub fn make_controlling(fd: BorrowedFd<'_>) -> Result<()> {
    ioctl_set_int(fd, libc::TIOCSCTTY as _, 0, "TIOCSCTTY").map(|_| ())
}

/// tcsetpgrp(3) on the caller's controlling terminal (/dev/tty), SIGTTOU blocked for
/// the call (a background caller would be stopped otherwise).
pub fn set_foreground(pgrp: i32) -> Result<()> {
    use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
    let tty = nix::fcntl::open(
        "/dev/tty",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| "open /dev/tty".into())?;
    // SAFETY: open returned a fresh fd that nothing else owns.
    let tty = unsafe { OwnedFd::from_raw_fd(tty) };
    let mut block = SigSet::empty();
    block.add(Signal::SIGTTOU);
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&block), Some(&mut old))
        .ctx(|| "sigprocmask".into())?;
    let r = nix::unistd::tcsetpgrp(&tty, nix::unistd::Pid::from_raw(pgrp))
        .ctx(|| format!("tcsetpgrp({pgrp})"));
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    r
}
