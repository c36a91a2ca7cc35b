//! userfaultfd(2) of another process, driven from ckpt: the puppet creates the context (it
//! binds to the caller's mm), ckpt takes a copy with pidfd_getfd and fills the puppet's
//! memory with UFFDIO_COPY — pages allocated and filled in one step, no fault, no zeroing
//! (the fastest 4 KiB fill measured here, ../shared/notes/lazy-and-freezer-facts.md).

use crate::error::{Error, Result};
use nix::errno::Errno;
use std::os::fd::{AsRawFd, OwnedFd};

const UFFD_API: u64 = 0xaa;
const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
const UFFDIO_UNREGISTER: libc::c_ulong = 0x8010_aa01;
const UFFDIO_COPY: libc::c_ulong = 0xc028_aa03;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFDIO_COPY_MODE_DONTWAKE: u64 = 1;

#[repr(C)]
struct Api {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct Range {
    start: u64,
    len: u64,
}

#[repr(C)]
struct Register {
    range: Range,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct Copy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

/// ckpt's handle on a userfaultfd context of another process.
pub struct Uffd {
    fd: OwnedFd,
}

fn ioctl<T>(fd: &OwnedFd, req: libc::c_ulong, arg: &mut T) -> nix::Result<()> {
    // SAFETY: every request used here takes a pointer to the #[repr(C)] struct `T` that
    // matches its uapi layout; the kernel reads and writes only within it.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg as *mut T) };
    Errno::result(r).map(drop)
}

impl Uffd {
    /// Takes a userfaultfd (a copy from pidfd_getfd) and does the API handshake.
    pub fn new(fd: OwnedFd) -> Result<Self> {
        let mut api = Api {
            api: UFFD_API,
            features: 0,
            ioctls: 0,
        };
        ioctl(&fd, UFFDIO_API, &mut api).map_err(|e| Error::sys("UFFDIO_API", e))?;
        Ok(Uffd { fd })
    }

    /// A context that had its API handshake already (in an earlier ckpt run).
    pub fn adopt(fd: OwnedFd) -> Self {
        Uffd { fd }
    }

    pub fn register_missing(&self, start: u64, len: u64) -> Result<()> {
        self.register_mode(start, len, UFFDIO_REGISTER_MODE_MISSING)
    }

    pub(crate) fn register_mode(&self, start: u64, len: u64, mode: u64) -> Result<()> {
        let mut r = Register {
            range: Range { start, len },
            mode,
            ioctls: 0,
        };
        ioctl(&self.fd, UFFDIO_REGISTER, &mut r)
            .map_err(|e| Error::sys(format!("UFFDIO_REGISTER of [{start:#x}, +{len:#x})"), e))
    }

    pub fn unregister(&self, start: u64, len: u64) -> Result<()> {
        let mut r = Range { start, len };
        ioctl(&self.fd, UFFDIO_UNREGISTER, &mut r)
            .map_err(|e| Error::sys(format!("UFFDIO_UNREGISTER of [{start:#x}, +{len:#x})"), e))
    }

    /// Copies `src` to `dst` in the other process, page aligned, waking nobody (the
    /// process is stopped while it is filled).
    pub fn copy(&self, dst: u64, src: &[u8]) -> Result<()> {
        let mut done = 0usize;
        while done < src.len() {
            let mut c = Copy {
                dst: dst + done as u64,
                src: src[done..].as_ptr() as u64,
                len: (src.len() - done) as u64,
                mode: UFFDIO_COPY_MODE_DONTWAKE,
                copy: 0,
            };
            match ioctl(&self.fd, UFFDIO_COPY, &mut c) {
                Ok(()) => done += c.copy as usize,
                // Interrupted part way: `copy` says how far it got.
                Err(Errno::EAGAIN) | Err(Errno::EINTR) if c.copy > 0 => done += c.copy as usize,
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                Err(e) => {
                    return Err(Error::sys(
                        format!("UFFDIO_COPY to {:#x}", dst + done as u64),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Lazy restore: serving another process's missing pages while it runs.

const UFFDIO_WAKE: libc::c_ulong = 0x8010_aa02;
const UFFDIO_ZEROPAGE: libc::c_ulong = 0xc020_aa04;
const UFFDIO_POISON: libc::c_ulong = 0xc020_aa08;
/// fork(2) of the target: the child gets a context of its own, sent to the reader.
pub const UFFD_FEATURE_EVENT_FORK: u64 = 1 << 1;
/// mremap(2) of a registered range.
pub const UFFD_FEATURE_EVENT_REMAP: u64 = 1 << 2;
/// MADV_DONTNEED / MADV_REMOVE of a registered range.
pub const UFFD_FEATURE_EVENT_REMOVE: u64 = 1 << 3;
/// munmap(2) of a registered range.
pub const UFFD_FEATURE_EVENT_UNMAP: u64 = 1 << 6;
/// UFFDIO_POISON (6.6+): a missing page can be marked so that touching it raises SIGBUS,
/// even after the context is closed.
pub const UFFD_FEATURE_POISON: u64 = 1 << 14;
/// The features a lazy restore asks for (never UFFD_USER_MODE_ONLY: the kernel's own
/// accesses to missing pages must be served too), with `UFFD_FEATURE_POISON` added where
/// the kernel has it (`lazy_features`).
pub const LAZY_FEATURES: u64 = UFFD_FEATURE_EVENT_FORK
    | UFFD_FEATURE_EVENT_REMAP
    | UFFD_FEATURE_EVENT_REMOVE
    | UFFD_FEATURE_EVENT_UNMAP;

/// `LAZY_FEATURES`, plus poisoning if this kernel offers it: asked of a throwaway context
/// of ckpt's own (a context takes one handshake, and one asking for a feature the kernel
/// lacks fails).
pub fn lazy_features() -> u64 {
    // SAFETY: userfaultfd takes flags only and returns a new fd.
    let r = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    let Ok(fd) = Errno::result(r) else {
        return LAZY_FEATURES;
    };
    use std::os::fd::FromRawFd;
    // SAFETY: a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut api = Api {
        api: UFFD_API,
        features: 0,
        ioctls: 0,
    };
    match ioctl(&fd, UFFDIO_API, &mut api) {
        Ok(()) => LAZY_FEATURES | (api.features & UFFD_FEATURE_POISON),
        Err(_) => LAZY_FEATURES,
    }
}

/// struct uffdio_zeropage and struct uffdio_poison: the same layout (a range, a mode, and
/// what was done).
#[repr(C)]
struct RangeOp {
    range: Range,
    mode: u64,
    done: i64,
}

/// One message read from a userfaultfd (struct uffd_msg, 32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A missing page at this address (not page aligned).
    PageFault(u64),
    /// The target forked; the child's context, now an fd of ours.
    Fork(OwnedFdNum),
    /// [from, from+len) moved to [to, to+len).
    Remap {
        from: u64,
        to: u64,
        len: u64,
    },
    /// MADV_DONTNEED/REMOVE of [start, end): the pages now read zero.
    Remove {
        start: u64,
        end: u64,
    },
    /// munmap of [start, end).
    Unmap {
        start: u64,
        end: u64,
    },
    Other(u8),
}

/// A raw fd number the kernel installed in this process (the FORK event's context);
/// turn it into an owned fd with [`Uffd::from_fork`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnedFdNum(pub i32);

/// The outcome of a UFFDIO_COPY / UFFDIO_ZEROPAGE for a serving loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// All of it is in.
    Done,
    /// This many bytes went in, then a page that is already present.
    Exists(u64),
    /// The address space is changing (an event is pending): retry after reading it.
    Again(u64),
    /// No registered VMA there (unmapped or moved).
    NoVma(u64),
    /// The target's address space is gone (it exited).
    Gone,
}

fn u64_at(b: &[u8; 32], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

impl Uffd {
    /// Takes a userfaultfd and does the API handshake asking for `features`.
    pub fn with_features(fd: OwnedFd, features: u64) -> Result<Self> {
        let mut api = Api {
            api: UFFD_API,
            features,
            ioctls: 0,
        };
        ioctl(&fd, UFFDIO_API, &mut api)
            .map_err(|e| Error::sys(format!("UFFDIO_API (features {features:#x})"), e))?;
        Ok(Uffd { fd })
    }

    /// The context a FORK event handed us (already past its API handshake).
    pub fn from_fork(n: OwnedFdNum) -> Self {
        use std::os::fd::FromRawFd;
        // SAFETY: the kernel installed this fd in our table for us while delivering the
        // FORK event; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(n.0) };
        Uffd { fd }
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Waits up to `timeout_ms` for the fd or one of `others` (a pidfd, a pipe) to be
    /// readable. Returns (uffd readable or hung up, which of `others` are readable).
    pub fn poll_with<const N: usize>(
        &self,
        others: [&OwnedFd; N],
        timeout_ms: i32,
    ) -> Result<(bool, [bool; N])> {
        let pfd = |fd: i32| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut p: Vec<libc::pollfd> = std::iter::once(self.fd.as_raw_fd())
            .chain(others.iter().map(|o| o.as_raw_fd()))
            .map(pfd)
            .collect();
        // SAFETY: poll reads and writes the `p.len()` pollfd structs of `p` only.
        let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
        match Errno::result(r) {
            Ok(_) => Ok((
                p[0].revents != 0,
                std::array::from_fn(|i| p[i + 1].revents != 0),
            )),
            Err(Errno::EINTR) => Ok((false, [false; N])),
            Err(e) => Err(Error::sys("poll of the userfaultfd", e)),
        }
    }

    /// Reads one message; None when none is pending (the fd is non-blocking).
    pub fn read_event(&self) -> Result<Option<Event>> {
        let mut b = [0u8; 32];
        // SAFETY: read writes at most 32 bytes into `b`, which is 32 bytes long.
        let r = unsafe { libc::read(self.fd.as_raw_fd(), b.as_mut_ptr().cast(), 32) };
        match Errno::result(r) {
            Ok(32) => {}
            Ok(0) => return Ok(None),
            Ok(n) => return Err(Error::Other(format!("short uffd_msg read ({n} bytes)"))),
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => return Ok(None),
            Err(e) => return Err(Error::sys("read of the userfaultfd", e)),
        }
        Ok(Some(match b[0] {
            0x12 => Event::PageFault(u64_at(&b, 16)),
            0x13 => Event::Fork(OwnedFdNum(
                u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")) as i32,
            )),
            0x14 => Event::Remap {
                from: u64_at(&b, 8),
                to: u64_at(&b, 16),
                len: u64_at(&b, 24),
            },
            0x15 => Event::Remove {
                start: u64_at(&b, 8),
                end: u64_at(&b, 16),
            },
            0x16 => Event::Unmap {
                start: u64_at(&b, 8),
                end: u64_at(&b, 16),
            },
            e => Event::Other(e),
        }))
    }

    /// One UFFDIO_COPY of `src` to `dst` that wakes the waiters; reports how it ended.
    pub fn copy_once(&self, dst: u64, src: &[u8]) -> Result<Fill> {
        let mut c = Copy {
            dst,
            src: src.as_ptr() as u64,
            len: src.len() as u64,
            mode: 0,
            copy: 0,
        };
        let r = ioctl(&self.fd, UFFDIO_COPY, &mut c);
        let done = c.copy.max(0) as u64;
        fill_outcome(r, done, src.len() as u64, || {
            format!("UFFDIO_COPY to {dst:#x}")
        })
    }

    /// UFFDIO_ZEROPAGE of [start, start+len), waking the waiters.
    pub fn zeropage(&self, start: u64, len: u64) -> Result<Fill> {
        self.range_op(UFFDIO_ZEROPAGE, "UFFDIO_ZEROPAGE", start, len)
    }

    fn range_op(&self, req: libc::c_ulong, name: &str, start: u64, len: u64) -> Result<Fill> {
        let mut op = RangeOp {
            range: Range { start, len },
            mode: 0,
            done: 0,
        };
        let r = ioctl(&self.fd, req, &mut op);
        fill_outcome(r, op.done.max(0) as u64, len, || {
            format!("{name} at {start:#x}")
        })
    }

    /// UFFDIO_POISON of the missing pages from `start` on, up to `len` bytes, waking the
    /// waiters (they get SIGBUS). EINVAL: the context was made without the feature.
    pub fn poison_once(&self, start: u64, len: u64) -> Result<Fill> {
        self.range_op(UFFDIO_POISON, "UFFDIO_POISON", start, len)
    }

    /// UFFDIO_WAKE of [start, start+len).
    pub fn wake(&self, start: u64, len: u64) -> Result<()> {
        let mut r = Range { start, len };
        match ioctl(&self.fd, UFFDIO_WAKE, &mut r) {
            Ok(()) | Err(Errno::ESRCH) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(Error::sys(format!("UFFDIO_WAKE at {start:#x}"), e)),
        }
    }
}

fn fill_outcome(
    r: nix::Result<()>,
    done: u64,
    len: u64,
    what: impl FnOnce() -> String,
) -> Result<Fill> {
    match r {
        Ok(()) if done >= len => Ok(Fill::Done),
        Ok(()) => Ok(Fill::Again(done)),
        Err(Errno::EEXIST) => Ok(Fill::Exists(done)),
        Err(Errno::EAGAIN) | Err(Errno::EINTR) => Ok(Fill::Again(done)),
        Err(Errno::ENOENT) | Err(Errno::EFAULT) => Ok(Fill::NoVma(done)),
        Err(Errno::ESRCH) => Ok(Fill::Gone),
        Err(e) => Err(Error::sys(what(), e)),
    }
}

/// pidfd_open(2): readable once `pid` has exited.
pub fn pidfd_open(pid: nix::unistd::Pid) -> Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes no pointers and returns a new fd we own.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let r = Errno::result(r).map_err(|e| Error::sys(format!("pidfd_open({pid})"), e))?;
    // SAFETY: a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// fork(2) of ckpt while it is single-threaded (the lazy pager).
pub fn fork_single_threaded() -> Result<Option<nix::unistd::Pid>> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1);
    if threads != 1 {
        return Err(Error::Other(format!(
            "fork of the pager: ckpt has {threads} threads"
        )));
    }
    // SAFETY: ckpt is single-threaded (checked just above), so the child is a complete
    // copy with no lock held by a vanished thread.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => Ok(None),
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(Some(child)),
        Err(e) => Err(Error::sys("fork of the pager", e)),
    }
}

/// The pager leaves ckpt's session and terminal, names itself, and lets go of stdin and
/// stdout (so a pipe reading ckpt's stdout sees EOF when ckpt exits).
pub fn become_pager() {
    let _ = nix::unistd::setsid();
    let name = c"ckpt-pager";
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
}
