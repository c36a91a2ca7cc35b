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
    master_with_index_at("/dev/ptmx", want)
}

/// As `master_with_index`, from the ptmx node `ptmx` (a container's own devpts instance:
/// its `pts/ptmx`).
pub fn master_with_index_at(ptmx: &str, want: u32) -> Result<OwnedFd> {
    let mut held = Vec::new();
    loop {
        let fd = nix::fcntl::open(
            ptmx,
            nix::fcntl::OFlag::O_RDWR
                | nix::fcntl::OFlag::O_NOCTTY
                | nix::fcntl::OFlag::O_NONBLOCK
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ctx(|| format!("open {ptmx}"))?;
        // SAFETY: open returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let got = index(std::os::fd::AsFd::as_fd(&fd))?;
        if got == want {
            return Ok(fd);
        }
        if got > want || held.len() > 4096 {
            return Err(Error::Other(format!(
                "pty {want} of {ptmx} is taken (the kernel gave {got} next)"
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

/// The bytes queued in a pty pair: typed (written to the master) but not read at the
/// slave, and written at the slave but not read at the master. Neither end has a peek:
/// they are read out (`take`) and put back at once (`put`, also how a restore queues
/// them in the new pair), while the holders are stopped. See `take_input`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Queued {
    pub input: Input,
    pub output: Vec<u8>,
}

/// More queued than this at either end is refused (n_tty buffers 4 KiB; the flip buffers
/// behind it hold more while the reader is throttled).
pub const MAX_QUEUED: usize = 1 << 20;

fn get_termios(fd: BorrowedFd<'_>) -> Result<libc::termios> {
    // SAFETY: termios is plain data; all zeroes is a valid value.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: TCGETS writes one struct termios into `t`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TCGETS as _, &mut t) };
    Errno::result(r).ctx(|| "ioctl(TCGETS)".into())?;
    Ok(t)
}

fn put_termios(fd: BorrowedFd<'_>, t: &libc::termios) -> Result<()> {
    // SAFETY: TCSETS reads one struct termios from `t`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TCSETS as _, t) };
    Errno::result(r).ctx(|| "ioctl(TCSETS)".into())?;
    Ok(())
}

/// Reads `fd` until it has nothing more. A description of ckpt's own is non-blocking; the
/// program's (`gated`: a master, whose termios is raw with VMIN 1) is read only when
/// poll() says it can be. Both a read and a poll that find nothing first wait for the
/// bytes still in the tty's flip buffers.
fn drain(fd: BorrowedFd<'_>, gated: bool, what: &str) -> Result<Vec<u8>> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if gated {
            let mut p = [PollFd::new(fd, PollFlags::POLLIN)];
            let n = poll(&mut p, PollTimeout::ZERO).ctx(|| format!("poll of {what}"))?;
            let ready = p[0].revents().unwrap_or(PollFlags::empty());
            if n == 0 || !ready.contains(PollFlags::POLLIN) {
                break;
            }
        }
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(Errno::EAGAIN) => break,
            Err(Errno::EINTR) => continue,
            // A hung-up slave.
            Err(Errno::EIO) => break,
            Err(e) => return Err(Error::sys(format!("read of {what}"), e)),
        }
        if out.len() > MAX_QUEUED {
            return Err(Error::Other(format!(
                "more than {MAX_QUEUED} bytes queued at {what}"
            )));
        }
    }
    Ok(out)
}

/// TIOCSTI, byte by byte: each goes through the line discipline of `fd`'s end as if
/// received (synchronously, unlike a write to the other end, which a worker delivers
/// later), under the termios in force.
fn inject(fd: BorrowedFd<'_>, bytes: &[u8]) -> Result<()> {
    for b in bytes {
        // SAFETY: TIOCSTI reads one byte from the pointer.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSTI as _, b as *const u8) };
        Errno::result(r).ctx(|| "ioctl(TIOCSTI)".into())?;
    }
    Ok(())
}

/// The bytes typed and not read yet, through `slave` (a non-blocking description of
/// ckpt's, O_NOCTTY), and where an end of file (VEOF) stands among them (offsets). In
/// canonical mode the finished lines are read one by one, as the program would (a line
/// ended by end of file reads without it, an end of file alone as 0 bytes), then the
/// pair is switched to non-canonical for the line not finished yet (a canonical read
/// cannot see it) and back, which leaves it empty: `put_input` queues them again.
pub fn take_input(slave: BorrowedFd<'_>) -> Result<Input> {
    let t = get_termios(slave)?;
    if t.c_lflag & libc::ICANON == 0 {
        return Ok(Input {
            bytes: drain(slave, false, "the slave")?,
            eofs: Vec::new(),
        });
    }
    let ends = |c: u8| {
        c == b'\n'
            || (c == t.c_cc[libc::VEOL] && c != 0)
            || (t.c_lflag & libc::IEXTEN != 0 && c == t.c_cc[libc::VEOL2] && c != 0)
    };
    let escaped = || Error::Other("a line end escaped (VLNEXT) waits in the input".into());
    let mut got = Input::default();
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(slave.as_raw_fd(), &mut buf) {
            Ok(n) => {
                let line = &buf[..n];
                let body = match line.split_last() {
                    Some((&last, body)) if ends(last) => body,
                    _ => line,
                };
                if body.iter().any(|&c| ends(c)) {
                    return Err(escaped());
                }
                got.bytes.extend_from_slice(line);
                if body.len() == n {
                    got.eofs.push(got.bytes.len() as u32);
                }
            }
            Err(Errno::EAGAIN) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("read of the slave", e)),
        }
        if got.bytes.len() + got.eofs.len() > MAX_QUEUED {
            return Err(Error::Other(format!(
                "more than {MAX_QUEUED} bytes queued at the slave"
            )));
        }
    }
    let mut raw = t;
    raw.c_lflag &= !libc::ICANON;
    raw.c_cc[libc::VMIN] = 1;
    raw.c_cc[libc::VTIME] = 0;
    put_termios(slave, &raw)?;
    let rest = drain(slave, false, "the slave");
    let back = put_termios(slave, &t);
    let rest = rest?;
    back?;
    if rest.iter().any(|&c| ends(c)) {
        return Err(escaped());
    }
    got.bytes.extend_from_slice(&rest);
    Ok(got)
}

/// Input queued at a slave (`take_input`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Input {
    pub bytes: Vec<u8>,
    /// Offsets into `bytes` where an end of file (canonical mode) was typed.
    pub eofs: Vec<u32>,
}

/// Queues `input` at `slave` as typed but not read, as `take_input` read it: injected
/// under a termios that does no input processing (it was done when the bytes came),
/// no echo, no signals, no flow control, and, in canonical mode, line ends where they
/// were (a newline, VEOL, VEOL2 as they are; an end of file as a VEOF that is a byte the
/// input does not hold) while erase, kill and the like are off; then the pair's termios
/// again.
pub fn put_input(slave: BorrowedFd<'_>, input: &Input) -> Result<()> {
    if input.bytes.is_empty() && input.eofs.is_empty() {
        return Ok(());
    }
    let t = get_termios(slave)?;
    let mut inj = t;
    // IXON and EXTPROC kept: a packet-mode master is told of their changes.
    inj.c_iflag &= libc::IXON;
    inj.c_lflag &= libc::ICANON | libc::IEXTEN | libc::EXTPROC;
    // (Consumed when they came; changed only if the input holds them after all, as a
    // packet-mode master is told of a change of flow control.)
    for i in [libc::VSTART, libc::VSTOP] {
        if input.bytes.contains(&t.c_cc[i]) {
            inj.c_cc[i] = 0;
        }
    }
    // NUL is never a special character of the line discipline: 0 turns one off.
    for i in [
        libc::VERASE,
        libc::VKILL,
        libc::VWERASE,
        libc::VLNEXT,
        libc::VREPRINT,
    ] {
        inj.c_cc[i] = 0;
    }
    if !input.eofs.is_empty() {
        inj.c_cc[libc::VEOF] = (1..=255u8)
            .find(|c| !input.bytes.contains(c))
            .ok_or_else(|| Error::Other("the queued input holds every byte value".into()))?;
    }
    put_termios(slave, &inj)?;
    let mut r = Ok(());
    let mut at = 0usize;
    for &e in input.eofs.iter().chain(std::iter::once(&u32::MAX)) {
        let end = (e as usize).min(input.bytes.len());
        r = r.and_then(|()| inject(slave, &input.bytes[at.min(end)..end]));
        if e != u32::MAX {
            r = r.and_then(|()| inject(slave, &[inj.c_cc[libc::VEOF]]));
        }
        at = end;
    }
    let back = put_termios(slave, &t);
    r?;
    back
}

/// The bytes the slave wrote that the master has not read, through `master` (the
/// program's description; not in packet mode, where a read also takes status events).
/// The master's line discipline does no processing: `put_output` queues them again as
/// they were.
pub fn take_output(master: BorrowedFd<'_>) -> Result<Vec<u8>> {
    drain(master, true, "the master")
}

pub fn put_output(master: BorrowedFd<'_>, output: &[u8]) -> Result<()> {
    inject(master, output)
}
