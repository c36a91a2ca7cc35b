//! POSIX message queues of the calling thread's ipc namespace. They live in the
//! namespace's mqueue filesystem whether or not anything mounts it or holds one open,
//! so the dump cannot learn of them from the tree's fds or mounts: a detached mount of
//! that filesystem (fsopen(2) "mqueue" takes the caller's ipc namespace, fsmount(2)
//! gives a mount attached to no tree, so no mount namespace changes) lists them.
//! Messages are read by receiving them all (mq_timedreceive(3): highest priority first,
//! FIFO within a priority) and sending them back in that order, which leaves the queue
//! as it was: mqueues have no peek.

use crate::error::{Error, Result};
use nix::errno::Errno;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;

/// One queue: its name (no leading '/'), owner, mode and attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MqInfo {
    pub name: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub maxmsg: i64,
    pub msgsize: i64,
    pub curmsgs: i64,
    /// NOTIFY_PID of the queue's status file: a process registered with mq_notify(3).
    pub notify_pid: i32,
}

/// A detached mount of the calling thread's ipc namespace's mqueue filesystem.
fn detached_mount() -> Result<OwnedFd> {
    let fs = c"mqueue";
    // SAFETY: fsopen reads a NUL-terminated name and returns a new fd or -1.
    let r = unsafe { libc::syscall(libc::SYS_fsopen, fs.as_ptr(), FSOPEN_CLOEXEC) };
    let ctx = Errno::result(r).map_err(|e| Error::sys("fsopen(mqueue)", e))?;
    // SAFETY: fsopen returned a new fd that nothing else owns.
    let ctx = unsafe { OwnedFd::from_raw_fd(ctx as i32) };
    // SAFETY: FSCONFIG_CMD_CREATE takes no key, value or aux.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    Errno::result(r).map_err(|e| Error::sys("fsconfig(mqueue, CREATE)", e))?;
    // SAFETY: fsmount of a created context returns a new mount fd or -1.
    let r = unsafe { libc::syscall(libc::SYS_fsmount, ctx.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
    let m = Errno::result(r).map_err(|e| Error::sys("fsmount(mqueue)", e))?;
    // SAFETY: fsmount returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(m as i32) })
}

fn getattr(fd: &impl AsRawFd, name: &str) -> Result<libc::mq_attr> {
    // SAFETY: mq_attr is plain data; zeroed is a valid value.
    let mut a: libc::mq_attr = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is an open mqueue descriptor; mq_getattr writes one mq_attr.
    let r = unsafe { libc::mq_getattr(fd.as_raw_fd(), &mut a) };
    Errno::result(r).map_err(|e| Error::sys(format!("mq_getattr(/{name})"), e))?;
    Ok(a)
}

/// Every queue of the calling thread's ipc namespace.
pub fn list() -> Result<Vec<MqInfo>> {
    use std::os::unix::fs::MetadataExt;
    let mnt = detached_mount()?;
    let root = format!("/proc/thread-self/fd/{}", mnt.as_raw_fd());
    let entries = std::fs::read_dir(&root).map_err(|e| Error::io("mqueue filesystem", e))?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| Error::io("mqueue filesystem", e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let what = format!("mqueue /{name}");
        let mut f = std::fs::File::open(e.path()).map_err(|er| Error::io(&what, er))?;
        let st = f.metadata().map_err(|er| Error::io(&what, er))?;
        let a = getattr(&f, &name)?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut f, &mut text).map_err(|er| Error::io(&what, er))?;
        let notify_pid = text
            .split_whitespace()
            .find_map(|t| t.strip_prefix("NOTIFY_PID:"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        out.push(MqInfo {
            name,
            mode: st.mode() & 0o7777,
            uid: st.uid(),
            gid: st.gid(),
            maxmsg: a.mq_maxmsg,
            msgsize: a.mq_msgsize,
            curmsgs: a.mq_curmsgs,
            notify_pid,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn open_queue(name: &str, flags: libc::c_int, create: Option<&MqInfo>) -> Result<OwnedFd> {
    let path = CString::new(format!("/{name}"))
        .map_err(|_| Error::Other(format!("mqueue name {name:?} holds a NUL")))?;
    let fd = match create {
        Some(q) => {
            // SAFETY: mq_attr is plain data; zeroed is a valid value.
            let mut a: libc::mq_attr = unsafe { std::mem::zeroed() };
            a.mq_maxmsg = q.maxmsg;
            a.mq_msgsize = q.msgsize;
            // SAFETY: mq_open reads the NUL-terminated name and, with O_CREAT, a mode and
            // an mq_attr that outlive the call.
            unsafe {
                libc::mq_open(
                    path.as_ptr(),
                    flags | libc::O_CREAT | libc::O_EXCL,
                    q.mode as libc::mode_t,
                    &a as *const libc::mq_attr,
                )
            }
        }
        // SAFETY: mq_open reads the NUL-terminated name.
        None => unsafe { libc::mq_open(path.as_ptr(), flags) },
    };
    let fd = Errno::result(fd).map_err(|e| Error::sys(format!("mq_open(/{name})"), e))?;
    // SAFETY: mq_open returned a new descriptor (an fd on Linux) nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The messages of queue `name` (priority, bytes), in the order they will be received:
/// received all, then sent back in that order (the queue is as before). A process
/// registered for notification would be notified by the refill: refused by the caller.
pub fn messages(q: &MqInfo) -> Result<Vec<(u32, Vec<u8>)>> {
    let fd = open_queue(
        &q.name,
        libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        None,
    )?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; q.msgsize.max(1) as usize];
    loop {
        let mut prio: libc::c_uint = 0;
        // SAFETY: receives at most buf.len() bytes into buf; prio is a valid out pointer.
        let r = unsafe {
            libc::mq_receive(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut prio,
            )
        };
        match Errno::result(r) {
            Ok(n) => out.push((prio, buf[..n as usize].to_vec())),
            Err(Errno::EAGAIN) => break,
            Err(e) => {
                let _ = send_all(&fd, &q.name, &out);
                return Err(Error::sys(format!("mq_receive(/{})", q.name), e));
            }
        }
    }
    send_all(&fd, &q.name, &out)?;
    Ok(out)
}

fn send_all(fd: &OwnedFd, name: &str, msgs: &[(u32, Vec<u8>)]) -> Result<()> {
    for (prio, m) in msgs {
        // SAFETY: sends m.len() bytes read from m.
        let r = unsafe { libc::mq_send(fd.as_raw_fd(), m.as_ptr().cast(), m.len(), *prio) };
        Errno::result(r).map_err(|e| Error::sys(format!("mq_send(/{name})"), e))?;
    }
    Ok(())
}

/// Creates queue `q` in the calling thread's ipc namespace with its attributes, owner and
/// mode, and sends it `msgs` in order.
pub fn create(q: &MqInfo, msgs: &[(u32, Vec<u8>)]) -> Result<()> {
    let fd = open_queue(
        &q.name,
        libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        Some(q),
    )?;
    // The umask may have taken bits of the mode: set it exactly.
    nix::sys::stat::fchmod(
        fd.as_raw_fd(),
        nix::sys::stat::Mode::from_bits_truncate(q.mode as libc::mode_t),
    )
    .map_err(|e| Error::sys(format!("fchmod mqueue /{}", q.name), e))?;
    nix::unistd::fchown(
        fd.as_raw_fd(),
        Some(nix::unistd::Uid::from_raw(q.uid)),
        Some(nix::unistd::Gid::from_raw(q.gid)),
    )
    .map_err(|e| Error::sys(format!("fchown mqueue /{}", q.name), e))?;
    send_all(&fd, &q.name, msgs)
}

/// The filesystem magic of mqueue (linux/magic.h): an fd on a queue is a regular file of
/// that filesystem, named "/NAME" by its /proc link (its mount is internal) or by a path
/// under wherever the namespace's mqueue filesystem is mounted.
const MQUEUE_MAGIC: i64 = 0x1980_0202;

/// Whether the open file behind `link` (a /proc/PID/fd/N link) is a POSIX message queue.
pub fn is_queue(link: &str) -> Result<bool> {
    let st = nix::sys::statfs::statfs(link).map_err(|e| Error::sys(format!("statfs {link}"), e))?;
    Ok(st.filesystem_type().0 as i64 == MQUEUE_MAGIC)
}

/// NOTIFY_PID of the queue behind `link` (a /proc/PID/fd/N link of a queue): the process
/// registered with mq_notify(3), 0 for none. Reading a queue's file reads its status line.
pub fn notify_pid_of(link: &str) -> Result<i32> {
    let text = std::fs::read_to_string(link).map_err(|e| Error::io(link, e))?;
    Ok(text
        .split_whitespace()
        .find_map(|t| t.strip_prefix("NOTIFY_PID:"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Queue `name` of the calling thread's ipc namespace, opened with `flags` (access mode,
/// O_NONBLOCK) as a process's own mq_open(3) would (checked against the caller's fsuid).
pub fn open(name: &str, flags: libc::c_int) -> Result<OwnedFd> {
    open_queue(name, flags, None)
}

/// "/NAME" with NAME one path component of at most NAME_MAX bytes: what mq_open(3) takes.
pub fn valid_name(path: &str) -> bool {
    path.strip_prefix('/').is_some_and(|n| {
        !n.is_empty() && n.len() <= 255 && !n.contains('/') && n != "." && n != ".."
    })
}

/// mq_unlink(3) of queue `name` (no leading '/') of the calling thread's ipc namespace.
pub fn unlink(name: &str) -> Result<()> {
    let path = CString::new(format!("/{name}"))
        .map_err(|_| Error::Other(format!("mqueue name {name:?} holds a NUL")))?;
    // SAFETY: mq_unlink reads the NUL-terminated name.
    let r = unsafe { libc::mq_unlink(path.as_ptr()) };
    Errno::result(r).map_err(|e| Error::sys(format!("mq_unlink(/{name})"), e))?;
    Ok(())
}
