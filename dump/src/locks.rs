//! File locks and leases held through the task's fds: flock() locks, POSIX record locks,
//! OFD locks and leases. fdinfo lists, for each fd, exactly the locks taken through its
//! open file description (and, for POSIX locks, owned by the task), so each is recorded
//! on the fd that holds it and re-taken through that fd at restore. A lock the task holds
//! through no fd at all (flock on a description only a mapping still holds) is refused.

use crate::{refuse, DumpError};
use ckpt_images::pb;
use ckpt_sys::kstate::{self, LockLine};
use ckpt_sys::Pid;
use std::collections::HashSet;

fn to_record(pid: Pid, fd: i32, l: &LockLine) -> Result<pb::FileLock, DumpError> {
    let bad = |why: &str| {
        refuse(format!(
            "pid {pid}: fd {fd} holds a {} {} {} lock on {} ({why}); not supported",
            l.class, l.mode, l.access, l.inode
        ))
    };
    let kind = match (l.class.as_str(), l.mode.as_str()) {
        ("FLOCK", "ADVISORY") => pb::FileLockKind::LockFlock,
        ("POSIX", "ADVISORY") => pb::FileLockKind::LockPosix,
        ("OFDLCK", "ADVISORY") => pb::FileLockKind::LockOfd,
        ("LEASE", "ACTIVE") => pb::FileLockKind::LockLease,
        ("LEASE", _) => return Err(bad("a lease being broken")),
        _ => return Err(bad("a kind ckpt does not know")),
    };
    let write = match l.access.as_str() {
        "READ" => false,
        "WRITE" => true,
        _ => return Err(bad("neither read nor write")),
    };
    Ok(pb::FileLock {
        kind: kind as i32,
        write,
        start: l.start,
        end: l.end,
    })
}

/// The locks a task's fds account for: (inode, start, end) of each fdinfo `lock:` line.
pub type Accounted = HashSet<(String, u64, u64)>;

/// Adds the locks of every fd to its record (the first fd of a shared description
/// only); returns what they account for, for `refuse_unaccounted`.
pub fn attach(pid: Pid, fds: &mut [pb::Fd], texts: &[String]) -> Result<Accounted, DumpError> {
    let mut seen = Accounted::new();
    for (f, text) in fds.iter_mut().zip(texts) {
        let lines = kstate::fd_locks_of(text).map_err(|l| {
            DumpError::Lost(format!(
                "/proc/{pid}/fdinfo/{}: unreadable lock line {l:?}",
                f.fd
            ))
        })?;
        for l in &lines {
            seen.insert((l.inode.clone(), l.start, l.end));
        }
        if f.is_dup {
            continue;
        }
        for l in &lines {
            f.locks.push(to_record(pid, f.fd, l)?);
        }
    }
    Ok(seen)
}

/// Whether a stopped task could hold a lock through no fd of its own that
/// `through_mappings` has to look for in /proc/locks: through a description a file
/// mapping keeps (open, flock, mmap, close: the JVM's hsperfdata file, shared; or a
/// file opened read-only and mapped private or read-only, which no flag tells apart
/// from a library's mapping), or one riding in a unix socket's queue
/// (`may_carry_unlisted`). Reading /proc/locks costs an RCU grace period (see
/// `AllLocks`), longer than the whole dump of a small process; but nothing else shows a
/// flock() held through a mapping, and a lock lost without a word is what ckpt must
/// never do. A task with no file mapping (a static program run from memory) and no unix
/// socket skips it.
pub fn may_hold_unlisted(maps: &[ckpt_sys::proc::Mapping], kinds: &[pb::FdKind]) -> bool {
    maps.iter().any(file_mapping) || kinds.iter().any(|&k| may_carry_unlisted(k))
}

/// `may_hold_unlisted` for a running task, from /proc/PID/maps.
pub fn may_hold_unlisted_running(_pid: Pid, maps: &[ckpt_sys::proc::Mapping]) -> bool {
    maps.iter().any(file_mapping)
}

/// A mapping of a file whose description a lock may hang on: not shared anonymous
/// memory (whose shmem file never had an fd) nor a System V segment.
fn file_mapping(m: &ckpt_sys::proc::Mapping) -> bool {
    m.is_file() && !(m.deleted && m.name == "/dev/zero") && !m.name.starts_with("/SYSV")
}

/// An fd through which descriptions can leave the task's fd table and stay alive (in
/// flight with SCM_RIGHTS), locks and all.
pub fn may_carry_unlisted(kind: pb::FdKind) -> bool {
    kind == pb::FdKind::FdUnixSocket
}

/// /proc/locks, read on a thread of its own. Reading it takes the kernel's file_rwsem
/// for writing, which first waits for an RCU grace period (5-20 ms here) unless one has
/// just passed for the same reason: so a dump whose tree may need it (`may_hold_unlisted`,
/// seen at validation) reads it once as it begins (`warm_up`) and once the tree is stopped
/// (`AllLocks::stopped(true)`), both beside the dump's own work instead of in its frozen
/// time; the first process that needs it waits for the rest. A tree that looked as if it
/// needed none at validation reads it only if a stopped process turns out to need it
/// (a cold read then, in the frozen time).
pub struct AllLocks {
    reading: Option<std::thread::JoinHandle<Result<Vec<LockLine>, DumpError>>>,
    lines: Option<Vec<LockLine>>,
}

fn read_on_a_thread() -> Result<std::thread::JoinHandle<Result<Vec<LockLine>, DumpError>>, DumpError>
{
    std::thread::Builder::new()
        .name("proc-locks".into())
        .spawn(|| Ok(kstate::all_locks()?))
        .map_err(|e| DumpError::Lost(format!("starting a thread to read /proc/locks: {e}")))
}

/// See `AllLocks`: starts the grace period's wait as early as possible.
pub fn warm_up() {
    let _ = read_on_a_thread();
}

impl AllLocks {
    /// Every task of the tree must be stopped, so the list is final. `warm`: the warm-up
    /// is under way, so the read starts now, on a thread; otherwise it is made by the
    /// first process that needs it.
    pub fn stopped(warm: bool) -> Result<AllLocks, DumpError> {
        Ok(AllLocks {
            reading: if warm {
                Some(read_on_a_thread()?)
            } else {
                None
            },
            lines: None,
        })
    }

    fn lines(&mut self) -> Result<&[LockLine], DumpError> {
        if self.lines.is_none() {
            let lines = match self.reading.take() {
                Some(r) => r
                    .join()
                    .map_err(|_| DumpError::Lost("reading /proc/locks panicked".into()))??,
                None => kstate::all_locks()?,
            };
            self.lines = Some(lines);
        }
        Ok(self.lines.as_deref().unwrap_or_default())
    }
}

/// "fe:00:10018942" (hex device numbers, decimal inode) as /proc/locks prints it.
fn lock_inode(s: &str) -> Option<(u32, u32, u64)> {
    let mut t = s.split(':');
    let maj = u32::from_str_radix(t.next()?, 16).ok()?;
    let min = u32::from_str_radix(t.next()?, 16).ok()?;
    Some((maj, min, t.next()?.parse().ok()?))
}

/// The locks a stopped task holds through no fd. A flock() on a description that only a
/// mapping still holds (the fd closed after flock and mmap: the JVM's hsperfdata file)
/// is recorded on the first VMA of that file, whose description restore opens anyway
/// (`Vma.flock`); anything else is refused.
pub fn through_mappings(
    pid: Pid,
    accounted: &Accounted,
    all: &mut AllLocks,
    maps: &[ckpt_sys::proc::Mapping],
    vmas: &mut [crate::mm::VmaInfo],
) -> Result<(), DumpError> {
    for l in all.lines()? {
        if l.pid != pid.as_raw() as i64 || accounted.contains(&(l.inode.clone(), l.start, l.end)) {
            continue;
        }
        let file = lock_inode(&l.inode);
        let mapped = maps
            .iter()
            .find(|m| m.inode != 0 && file == Some((m.dev_major, m.dev_minor, m.inode)));
        let vma = mapped.and_then(|m| {
            vmas.iter_mut().find(|v| {
                v.vma.start == m.start
                    && matches!(
                        v.kind(),
                        pb::VmaKind::VmaFilePrivate | pb::VmaKind::VmaFileShared
                    )
            })
        });
        match (l.class.as_str(), l.mode.as_str(), vma) {
            ("FLOCK", "ADVISORY", Some(v)) => {
                v.vma.flock = if l.access == "WRITE" { 2 } else { 1 };
            }
            _ => {
                return Err(refuse(format!(
                    "pid {pid}: holds a {} {} lock on inode {} through no open fd{}; \
                     not supported",
                    l.class,
                    l.access,
                    l.inode,
                    if mapped.is_some() {
                        " (through a mapping only)"
                    } else {
                        " nor mapping"
                    }
                )));
            }
        }
    }
    Ok(())
}
