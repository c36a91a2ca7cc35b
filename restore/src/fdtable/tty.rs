//! Pseudo-terminal pairs: the master opened again with its index (`/dev/pts/N` is the
//! name the programs know: a shell's ttyname), termios, window size, the bytes queued
//! both ways (`ckpt_sys::tty::put_input`, `put_output`), packet mode, each
//! slave description opened through the master (TIOCGPTPEER), the lock put back; then,
//! in the seed of the session leader that had it as controlling terminal, before it
//! forks its children (who inherit it), TIOCSCTTY, and tcsetpgrp in the seed of the
//! foreground group's leader.
//!
//! A pair of a container's own devpts (`TtyState.devpts`) is opened from that instance's
//! ptmx, made fresh by the container's mounts. One whose master was outside the tree (the
//! container's console: `orphan`) gets a new master, which the seed sends to ckpt over a
//! socket made before the seeds (`orphan_channel`); ckpt hands it to the caller
//! (`hand_over`: runc's console socket, or the CRIU client's orphan-pts-master
//! notification). A bind of such a slave (runc's /dev/console) is mounted before any
//! object exists: `premake` opens the pair then and `create` takes it up.

use crate::seed::SeedPlan;
use crate::RestoreError;
use ckpt_images::pb;
use ckpt_sys::tty;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, OnceLock};

/// The directory a pair's slaves are in: the host's /dev/pts or the container's devpts.
fn pts_dir(t: &pb::TtyState) -> &str {
    if t.devpts.is_empty() {
        "/dev/pts"
    } else {
        t.devpts.trim_end_matches('/')
    }
}

/// The ptmx a pair's master is opened from.
fn ptmx_of(t: &pb::TtyState) -> String {
    if t.devpts.is_empty() {
        "/dev/ptmx".into()
    } else {
        format!("{}/ptmx", pts_dir(t))
    }
}

/// Masters opened while the mounts were made (a bind of their slave), by (devpts, index):
/// in the seed that made the mounts, which makes the pair's object too.
static PREMADE: Mutex<Vec<(String, u32, OwnedFd)>> = Mutex::new(Vec::new());

/// The end the seeds send a console's new master on (made by ckpt before them).
static ORPHAN_TX: OnceLock<OwnedFd> = OnceLock::new();

/// In the seed making the mounts, before a bind of slave `index` of the fresh devpts at
/// `devpts`: the pair is opened now, so that the slave exists to be bound; `create` takes
/// the master up.
pub fn premake(devpts: &str, index: u32) -> Result<(), String> {
    let devpts = devpts.trim_end_matches('/');
    if std::path::Path::new(&format!("{devpts}/{index}")).exists() {
        return Ok(());
    }
    let m = tty::master_with_index_at(&format!("{devpts}/ptmx"), index)
        .map_err(|e| format!("the pty {index} a bind mount takes: {e}"))?;
    tty::set_locked(m.as_fd(), false).map_err(|e| e.to_string())?;
    PREMADE
        .lock()
        .map_err(|_| "premade ptys: poisoned".to_string())?
        .push((devpts.to_string(), index, m));
    Ok(())
}

/// The pair's master: premade for a bind, else opened now with the index.
fn master_for(t: &pb::TtyState) -> Result<OwnedFd, String> {
    let dir = pts_dir(t).to_string();
    if let Ok(mut held) = PREMADE.lock() {
        if let Some(at) = held.iter().position(|(d, i, _)| *d == dir && *i == t.index) {
            return Ok(held.swap_remove(at).2);
        }
    }
    tty::master_with_index_at(&ptmx_of(t), t.index).map_err(|e| e.to_string())
}

/// Before the seeds are forked: the socket a console's new master comes back to ckpt on,
/// when the image has one (None otherwise). Refused when nobody would receive it.
pub fn orphan_channel(
    descs: &[pb::FileDesc],
    receiver: bool,
    container: bool,
) -> Result<Option<(OwnedFd, usize)>, RestoreError> {
    if let Some(t) = descs
        .iter()
        .filter_map(|d| d.tty.as_ref())
        .find(|t| !t.devpts.is_empty() && !container)
    {
        return Err(RestoreError::Refused(format!(
            "a pty of the devpts at {}, in an image of no container (nothing makes that \
             devpts again)",
            t.devpts
        )));
    }
    let consoles: Vec<&pb::TtyState> = descs
        .iter()
        .filter_map(|d| d.tty.as_ref())
        .filter(|t| t.orphan)
        .collect();
    let Some(first) = consoles.first() else {
        return Ok(None);
    };
    if !receiver {
        return Err(RestoreError::Refused(format!(
            "{}/{}: the container's console, whose master was outside the tree (its \
             engine's); restore with --console-socket PATH to receive the new master",
            pts_dir(first),
            first.index
        )));
    }
    let mut pairs: Vec<(&str, u32)> = consoles.iter().map(|t| (pts_dir(t), t.index)).collect();
    pairs.sort();
    pairs.dedup();
    let (rx, tx) = ckpt_sys::unix::pair(libc::SOCK_DGRAM)?;
    ORPHAN_TX
        .set(tx)
        .map_err(|_| RestoreError::Refused("a second console channel".into()))?;
    Ok(Some((rx, pairs.len())))
}

/// Each console's new master to the caller: sent to `socket` (as runc sends a console to
/// its --console-socket), else to the installed hook (the CRIU client).
pub fn hand_over(
    masters: &[OwnedFd],
    socket: Option<&std::path::Path>,
) -> Result<(), RestoreError> {
    for m in masters {
        // Blocking, as a console master the engine opened itself would be.
        let flags = fcntl(m.as_raw_fd(), FcntlArg::F_GETFL)
            .map_err(|e| ckpt_sys::Error::sys("F_GETFL of a console master", e))?;
        fcntl(
            m.as_raw_fd(),
            FcntlArg::F_SETFL(OFlag::from_bits_retain(flags) - OFlag::O_NONBLOCK),
        )
        .map_err(|e| ckpt_sys::Error::sys("F_SETFL of a console master", e))?;
        match (socket, crate::hooks::master_hook()) {
            (Some(path), _) => {
                let e = |e: ckpt_sys::Error| {
                    RestoreError::Refused(format!("--console-socket {}: {e}", path.display()))
                };
                let s = ckpt_sys::unix::new(libc::SOCK_STREAM).map_err(e)?;
                use std::os::unix::ffi::OsStrExt;
                ckpt_sys::unix::connect(s.as_fd(), path.as_os_str().as_bytes()).map_err(e)?;
                ckpt_sys::unix::send_with_fds(s.as_fd(), b"/dev/ptmx", &[], &[m.as_raw_fd()])
                    .map_err(e)?;
            }
            (None, Some(hook)) => hook(m.as_fd()).map_err(|why| {
                RestoreError::Refused(format!("orphan-pts-master notification: {why}"))
            })?,
            (None, None) => {
                return Err(RestoreError::Refused(
                    "a console's new master and nobody to hand it to".into(),
                ))
            }
        }
    }
    Ok(())
}

/// Once every seed is ready: the `count` new console masters the seeds sent, in the order
/// they came.
pub fn received(rx: &OwnedFd, count: usize) -> Result<Vec<OwnedFd>, RestoreError> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut out = Vec::new();
    while out.len() < count {
        let mut buf = [0u8; 8];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            rx.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| {
            RestoreError::Refused(format!(
                "the container console's new master: {} of {count} came back ({e})",
                out.len()
            ))
        })?;
        for c in msg.cmsgs().map_err(|e| ckpt_sys::Error::sys("cmsgs", e))? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                out.extend(
                    fds.into_iter()
                        .map(|fd| OwnedFd::from(ckpt_sys::process::file_from_raw(fd))),
                );
            }
        }
    }
    Ok(out)
}

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
    if !t.devpts.is_empty()
        && (!t.devpts.starts_with('/') || t.devpts.split('/').any(|p| p == ".." || p == "."))
    {
        return Err(format!(
            "description {}: devpts at {:?}: not an absolute path",
            d.id, t.devpts
        ));
    }
    if t.orphan && (t.master || t.devpts.is_empty()) {
        return Err(format!(
            "description {}: a console (a pair whose master was outside) other than a slave \
             of a container's devpts",
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
    let master = master_for(t)?;
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
                let path = format!("{}/{}", pts_dir(t), t.index);
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
    if let Some(master) = master.filter(|_| t.orphan) {
        // The console's new master, for the caller (the engine's console socket).
        let tx = ORPHAN_TX
            .get()
            .ok_or("a console's master, and no channel to ckpt for it")?;
        ckpt_sys::unix::send_with_fds(tx.as_fd(), b"m", &[], &[master.as_raw_fd()]).map_err(e)?;
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
            plan.ctty = Some(format!("{}/{}", pts_dir(t), t.index));
        }
        if t.fg_pgrp == plan.pid && (t.session != 0 || job) {
            plan.foreground = true;
        }
    }
}

/// In the seed, once its objects are made and before it forks: its controlling terminal
/// and foreground group, as `attach` planned.
pub fn take(plan: &SeedPlan) -> Result<(), String> {
    if let Some(path) = &plan.ctty {
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
