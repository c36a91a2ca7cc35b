//! Open file descriptors: regular files, directories, FIFOs and the stateless character
//! devices, reopened by path at restore, anonymous pipes (`fdtable/pipe.rs`), TCP and UDP
//! sockets (`net/`) and epolls (`fdtable/epoll.rs`). Every
//! fd names its open file description in the tree's table (`fdtable.rs`). Everything else
//! is refused, naming the fd and what it is.

use crate::blockers::{Blocker, Blockers};
use crate::describe::{Describer, PipeClass};
use crate::fdtable::{self, FdCtx, FdTable};
use crate::DumpError;
use ckpt_images::pb;
use ckpt_sys::{proc, Pid};
use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

const O_CLOEXEC: u32 = 0o2000000;
const O_ASYNC: u32 = 0o20000;
const F_OWNER_PGRP: i32 = 2;

/// Character devices a fresh open() gives back exactly (major 1: mem): null, zero, full,
/// random, urandom. Any other device object has state of its own (a pty pair, a tun
/// interface, a FUSE connection, a KVM VM, ...) that reopening the path would silently
/// replace with a new, empty one. /dev/tty (5:0) is not here either: it opens whatever is
/// the controlling terminal of the opener, and the restored process has none of its own.
/// Kept in step with `restore/src/image.rs`, which refuses other devices in an image.
pub const STATELESS_CHARDEVS: [(u64, u64); 5] = [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9)];

/// Why an fd cannot be looked at or dumped.
enum Problem {
    /// Closed since it was listed (only possible before the seize).
    Gone(String),
    Blocked(Blocker),
    /// A write tracker a ckpt armed (`track.rs`): not the process's own file, never
    /// dumped nor refused.
    Ours,
}

impl From<Problem> for DumpError {
    fn from(p: Problem) -> DumpError {
        match p {
            Problem::Gone(m) => DumpError::Lost(m),
            Problem::Blocked(b) => b.into(),
            Problem::Ours => DumpError::Lost("a write tracker of ckpt's in flight".into()),
        }
    }
}

/// What an fd refers to: its kind, its link's target (or path) and, for the kinds whose
/// record needs the file's stat (files, directories, devices, FIFOs, memfds, deleted
/// files, terminals), its metadata; pipes, sockets and the anonymous kinds are known by
/// the inode fdinfo gives, without a stat of the link (a statx of /proc/PID/fd/N for
/// each of them in each pass, ~500 of ~20000 syscalls of a dump of 909 fds); or why it
/// cannot be dumped.
fn inspect(pid: Pid, fd: i32, describer: &mut Describer) -> Result<Looked, Problem> {
    let link = format!("/proc/{pid}/fd/{fd}");
    let target = match proc::fd_link(pid, fd) {
        Ok(t) => t.to_string_lossy().into_owned(),
        Err(e) => return Err(Problem::Gone(format!("pid {pid}: fd {fd}: {e}"))),
    };
    // Checked here, where the link is read anyway (not by a readlink of every fd first).
    if target == "anon_inode:[userfaultfd]" && crate::track::is_ours(pid, fd) {
        return Err(Problem::Ours);
    }
    let blocked = |why: String| {
        Problem::Blocked(Blocker {
            pid: pid.as_raw(),
            what: format!("fd {fd} ({target})"),
            why,
        })
    };
    let unsupported = |what: &str| blocked(format!("{what}; not supported yet"));
    if target.starts_with("pipe:[") {
        // Refused only when held at both ends inside the tree and also outside it.
        describer
            .pipe_class(pid, fd, &target)
            .map_err(Problem::Blocked)?;
        return Ok((pb::FdKind::FdPipe, target, None, None));
    }
    if target.starts_with("socket:[") {
        // One copy of the socket for every check of its family.
        let ino = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        match crate::net::socket_kind(pid, fd, ino) {
            Ok(Some(seen)) => return Ok((seen.kind, target, None, Some(seen))),
            // A family ckpt does not know: the describer names it below.
            Ok(None) => {}
            Err(why) => {
                return Err(Problem::Blocked(
                    describer.refused_socket(pid, fd, &target, why),
                ))
            }
        }
    }
    if target == "anon_inode:[eventpoll]" {
        let epoll_blocked = |why: String| {
            Problem::Blocked(Blocker {
                pid: pid.as_raw(),
                what: format!("fd {fd} (epoll, {target})"),
                why,
            })
        };
        fdtable::epoll::check(pid, fd).map_err(epoll_blocked)?;
        if let Some((other, ofd)) = describer.epoll_sharer(pid, fd) {
            return Err(epoll_blocked(format!(
                "shared with pid {other} (fd {ofd}); an epoll held by several processes is \
                 not supported yet"
            )));
        }
        return Ok((pb::FdKind::FdEpoll, target, None, None));
    }
    if target == "anon_inode:[pidfd]" {
        let d = &*describer;
        fdtable::pidfd::check(pid.as_raw(), fd, &|p| d.has(p)).map_err(blocked)?;
    }
    let anon = match target.as_str() {
        "anon_inode:[pidfd]" => Some(pb::FdKind::FdPidfd),
        "anon_inode:[eventfd]" => Some(pb::FdKind::FdEventfd),
        "anon_inode:[signalfd]" => Some(pb::FdKind::FdSignalfd),
        "anon_inode:[timerfd]" => Some(pb::FdKind::FdTimerfd),
        "anon_inode:inotify" | "anon_inode:[inotify]" => Some(pb::FdKind::FdInotify),
        "anon_inode:[fanotify]" => Some(pb::FdKind::FdFanotify),
        _ => None,
    };
    if !target.starts_with('/') && anon.is_none() {
        // socket:[N], anon_inode:[eventpoll], ...
        return Err(Problem::Blocked(describer.blocker(pid, fd, &target)));
    }
    if let Some(kind) = anon {
        if kind == pb::FdKind::FdInotify {
            fdtable::anon::inotify_watches(pid, fd).map_err(blocked)?;
        }
        if kind == pb::FdKind::FdFanotify {
            fdtable::fanotify::marks(pid, fd).map_err(blocked)?;
        }
        return Ok((kind, target, None, None));
    }
    // Follows the magic link to the open file itself.
    let meta = std::fs::metadata(&link)
        .map_err(|e| Problem::Gone(format!("pid {pid}: fd {fd} ({target}): {e}")))?;
    // Before any path kind: a queue's link looks like a file's path ("/NAME") and reads
    // as its status line.
    if meta.file_type().is_file() && nix::sys::stat::major(meta.dev()) == 0 {
        if let Some(name) = mqueue_name(&link, &target, &*describer).map_err(blocked)? {
            return Ok((pb::FdKind::FdMqueue, name, Some(meta), None));
        }
    }
    if let Some(gone) = target.strip_suffix(" (deleted)") {
        if meta.file_type().is_dir() && meta.nlink() == 0 {
            // Empty (rmdir needs that): made again at restore (`FileDesc.removed`).
            return Ok((pb::FdKind::FdDirectory, target, Some(meta), None));
        }
        if !meta.file_type().is_file() {
            return Err(unsupported("a deleted file that is not a regular file"));
        }
        let kind = if gone.starts_with("/memfd:") {
            if let Some(p) = describer.memfd_mapped_by(meta.ino()) {
                return Err(blocked(format!(
                    "also mapped by pid {p}; a memfd that is both an fd and a mapping is not \
                     supported yet"
                )));
            }
            pb::FdKind::FdMemfd
        } else {
            pb::FdKind::FdDeleted
        };
        if meta.size() > fdtable::contents::MAX_CONTENTS {
            return Err(blocked(format!(
                "{} bytes of contents, more than the {} MiB ckpt stores for a memfd or a \
                 file deleted while open",
                meta.size(),
                fdtable::contents::MAX_CONTENTS >> 20
            )));
        }
        return Ok((kind, gone.to_string(), Some(meta), None));
    }
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        pb::FdKind::FdRegular
    } else if ft.is_dir() {
        pb::FdKind::FdDirectory
    } else if ft.is_char_device() {
        let dev = (
            nix::sys::stat::major(meta.rdev()),
            nix::sys::stat::minor(meta.rdev()),
        );
        if fdtable::tty::end_of(dev).is_some() {
            return Ok((pb::FdKind::FdTty, target, Some(meta), None));
        }
        if !STATELESS_CHARDEVS.contains(&dev) {
            return Err(blocked(format!(
                "character device {}:{}, which holds state a reopen would lose; only \
                 /dev/null, /dev/zero, /dev/full, /dev/random and /dev/urandom are supported",
                dev.0, dev.1
            )));
        }
        pb::FdKind::FdChardev
    } else if ft.is_fifo() {
        pb::FdKind::FdFifo
    } else if ft.is_socket() {
        return Err(unsupported("a unix socket file"));
    } else if ft.is_block_device() {
        return Err(unsupported("a block device"));
    } else {
        return Err(unsupported("of an unknown file type"));
    };
    Ok((kind, target, Some(meta), None))
}

/// "/NAME" when `link` (an fd's /proc link, `target`) is a POSIX message queue (reopened
/// by name with mq_open at restore), None for any other file on an anonymous device.
/// Refused: a queue removed while open (nothing can name it again) and one a process of
/// the tree asked to be notified by (mq_notify: the registration ends with its process).
fn mqueue_name(link: &str, target: &str, describer: &Describer) -> Result<Option<String>, String> {
    if !ckpt_sys::mqueue::is_queue(link).map_err(|e| e.to_string())? {
        return Ok(None);
    }
    if target.ends_with(" (deleted)") {
        return Err("a POSIX message queue removed (mq_unlink) while open; not supported".into());
    }
    let notify = ckpt_sys::mqueue::notify_pid_of(link).map_err(|e| e.to_string())?;
    if notify != 0 && describer.has(notify) {
        return Err(format!(
            "a POSIX message queue that pid {notify} asked to be notified by (mq_notify); \
             not restored yet"
        ));
    }
    let name = target.rsplit('/').next().unwrap_or_default();
    Ok(Some(format!("/{name}")))
}

/// What `inspect` found: kind, target, the stat of the file when its kind needs one, and
/// for a socket what its check found (ckpt's copy of it among that).
type Looked = (
    pb::FdKind,
    String,
    Option<Metadata>,
    Option<crate::net::Seen>,
);

/// The stat of fd `fd` of `pid` (`inspect` left it out): a kernel without `ino:` in
/// fdinfo keys the table by it.
fn stat_link(pid: Pid, fd: i32) -> Result<Metadata, Problem> {
    std::fs::metadata(format!("/proc/{pid}/fd/{fd}"))
        .map_err(|e| Problem::Gone(format!("pid {pid}: fd {fd}: {e}")))
}

/// Before the seize (and for `ckpt check`): every fd this version cannot restore.
pub fn blockers(pid: Pid, describer: &mut Describer, out: &mut Blockers) -> Result<(), DumpError> {
    for fd in proc::fds(pid)? {
        match inspect(pid, fd, describer) {
            Ok((kind, _, _, _)) => {
                if crate::locks::may_carry_unlisted(kind) {
                    describer.lock_candidates = true;
                }
            }
            // An fd closed while we looked is not a reason to refuse.
            Err(Problem::Gone(_) | Problem::Ours) => {}
            Err(Problem::Blocked(b)) => out.add(b),
        }
    }
    Ok(())
}

/// One Fd record per open descriptor of the stopped task, each naming its description in
/// `table` (new descriptions are added to it).
/// Beside them, each fd's `lock:` lines of fdinfo (read in the same pass, for `locks.rs`).
pub fn collect(pid: Pid, table: &mut FdTable) -> Result<(Vec<pb::Fd>, Vec<String>), DumpError> {
    let t = std::time::Instant::now();
    let cpu = fdtable::thread_cpu();
    let mut out: Vec<pb::Fd> = Vec::new();
    let mut lock_texts = Vec::new();
    // Description -> the first fd of this process that refers to it.
    let mut here: HashMap<u64, i32> = HashMap::new();
    let mut infos = proc::FdInfoDir::open(pid)?;
    for fd in proc::fds(pid)? {
        // fdinfo first: its mount and inode are enough to find a description met before
        // (an fd inherited by 100 processes costs this read and a kcmp, nothing more).
        let info = infos.get(fd)?;
        let mut looked = None;
        // ckpt's copy of a new socket (taken by its check): its owner is read through it.
        let mut copy: Option<std::os::fd::OwnedFd> = None;
        let key = if info.ino != 0 {
            (info.mnt_id, info.ino)
        } else {
            // A kernel without `ino:` in fdinfo: stat the link instead.
            let Some(mut l) = skip_ours(inspect(pid, fd, table.describer()))? else {
                continue;
            };
            let m = match l.2.take() {
                Some(m) => m,
                None => stat_link(pid, fd)?,
            };
            let k = (m.dev() | 1 << 63, m.ino());
            l.2 = Some(m);
            looked = Some(l);
            k
        };
        // New: the file's (st_dev, st_ino), which a FIFO's bytes are stored once by (one
        // FIFO seen through two mounts has two mount ids).
        let (desc, new) = match table.find(pid, fd, key)? {
            Some(id)
                if [pb::FdKind::FdEpoll as i32, pb::FdKind::FdPidfd as i32]
                    .contains(&table.desc(id).kind) =>
            {
                // An epoll's watches name fds of the process that registered them; a
                // pidfd's holder waits at restore for its target to exist.
                if let Some((other, ofd)) = table.holder(id).filter(|&(p, _)| p != pid) {
                    let what = if table.desc(id).kind == pb::FdKind::FdEpoll as i32 {
                        "epoll"
                    } else {
                        "pidfd"
                    };
                    return Err(crate::refuse(format!(
                        "pid {pid}: fd {fd} ({what}): shared with pid {other} (fd {ofd}); an \
                         {what} held by several processes is not supported yet"
                    )));
                }
                (id, None)
            }
            Some(id) => (id, None),
            None => {
                let (kind, path, meta, seen) = match looked.take() {
                    Some(l) => l,
                    None => match skip_ours(inspect(pid, fd, table.describer()))? {
                        Some(l) => l,
                        None => continue,
                    },
                };
                let looked = Found {
                    kind,
                    target: &path,
                    meta: meta.as_ref(),
                    seen: seen.as_ref(),
                };
                let d = describe(pid, fd, key, &looked, &info, table)?;
                copy = seen.map(|s| s.sock);
                // The file's (st_dev, st_ino): only a FIFO's (the one kind that uses it)
                // is known; the others are new all the same.
                let file = meta
                    .as_ref()
                    .map_or((0, key.1), |m| (m.dev() | 1 << 62, m.ino()));
                (table.insert(pid, fd, key, d)?, Some(file))
            }
        };
        let kind = table.desc(desc).kind;
        if kind == pb::FdKind::FdUnixSocket as i32 || kind == pb::FdKind::FdTty as i32 {
            table.unix.held(desc, pid, fd);
        }
        // A dup of a lower fd of this process: restore dups it rather than reopening.
        let dup_of = here.get(&desc).copied();
        here.entry(desc).or_insert(fd);
        let d = table.desc(desc);
        let kind = pb::FdKind::try_from(d.kind).unwrap_or(pb::FdKind::FdRegular);
        let (path, file_size, rdev) = if is_path_kind(kind) {
            (d.path.clone(), d.file_size, d.rdev)
        } else {
            (String::new(), 0, 0)
        };
        let outside_root = d.outside_root;
        let removed = d.removed;
        let object = d.object;
        // A FIFO's unread bytes belong to the pipe, not the fd: stored once in the tree,
        // with the description that first holds them (a shared one is made from there).
        let (mut pipe_data, mut pipe_size) = (Vec::new(), 0);
        if let (pb::FdKind::FdFifo, Some(file)) = (kind, new) {
            let mine = ckpt_sys::process::steal_fd(pid, fd)?;
            pipe_size = ckpt_sys::pipe::capacity(&mine)?;
            if table.first_to_store(file) {
                pipe_data = fifo_bytes(pid, fd, &mine)?;
            }
        }
        // O_ASYNC: whom its signal goes to; a lease: the signal its break sends
        // (F_SETSIG). Read through a copy (they belong to the description).
        let (mut owner_type, mut owner_pid, mut async_signal, mut lease_signal) = (0, 0, 0, 0);
        let lease = info.lock_lines.contains("LEASE");
        // A socket's owner (F_SETOWN) also gets SIGURG when out-of-band data arrives,
        // with or without O_ASYNC.
        let socket = matches!(
            kind,
            pb::FdKind::FdUnixSocket
                | pb::FdKind::FdInetSocket
                | pb::FdKind::FdNetlinkSocket
                | pb::FdKind::FdPacketSocket
        );
        let async_or_socket = info.flags & O_ASYNC != 0 || socket;
        if (info.flags & O_ASYNC != 0 || lease || (socket && new.is_some())) && dup_of.is_none() {
            let mine = match copy.take() {
                Some(c) => c,
                None => ckpt_sys::process::steal_fd(pid, fd)?,
            };
            (owner_type, owner_pid, async_signal) =
                ckpt_sys::process::async_owner(std::os::fd::AsFd::as_fd(&mine))?;
            if lease {
                lease_signal = async_signal;
            }
            if !async_or_socket || new.is_none() {
                // The owner belongs to the description: recorded with the process that
                // holds it first (whose seed sets it again), not with those that share
                // it after (nginx's workers inherit their master's channels).
                (owner_type, owner_pid, async_signal) = (0, 0, 0);
            }
            // Set again by the owner's own seed, which must be this process (its main
            // thread) and hold it.
            if owner_pid != 0 && (owner_pid != pid.as_raw() || owner_type == F_OWNER_PGRP) {
                return Err(crate::refuse(format!(
                    "pid {pid}: fd {fd}: O_ASYNC signals go to {} {owner_pid}, not to this \
                     process; only a process's own fds signalling itself are supported",
                    if owner_type == F_OWNER_PGRP {
                        "process group"
                    } else {
                        "pid"
                    }
                )));
            }
        }
        // A queue of ckpt's (the host's) ipc namespace outlives the processes: reopened
        // by name and checked by inode. The tree's own namespace's are made again.
        let mqueue_ino = if kind == pb::FdKind::FdMqueue
            && ckpt_sys::ns::ns_id(pid, "ipc")? == ckpt_sys::ns::ns_id(Pid::this(), "ipc")?
        {
            object
        } else {
            0
        };
        lock_texts.push(info.lock_lines.clone());
        out.push(pb::Fd {
            mqueue_ino,
            owner_type,
            owner_pid,
            async_signal,
            locks: Vec::new(),
            lease_signal,
            pipe_data,
            pipe_size,
            is_dup: dup_of.is_some(),
            dup_of: dup_of.unwrap_or(0),
            fd,
            kind: kind as i32,
            path,
            flags: info.flags & !O_CLOEXEC,
            pos: info.pos,
            cloexec: info.flags & O_CLOEXEC != 0,
            file_size,
            rdev,
            desc,
            outside_root,
            removed,
        });
    }
    table.fds += out.len() as u64;
    table.spent += t.elapsed();
    table.cpu += fdtable::thread_cpu().saturating_sub(cpu);
    Ok((out, lock_texts))
}

/// What `inspect` found, None for a tracker of ckpt's (skipped: a new description, so
/// met before the table holds anything of it).
fn skip_ours(r: Result<Looked, Problem>) -> Result<Option<Looked>, Problem> {
    match r {
        Ok(l) => Ok(Some(l)),
        Err(Problem::Ours) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The description of a file in flight (SCM_RIGHTS, sent and not received) that a peek
/// of the unix socket `carrier` (its inode) installed in ckpt as `fd` (kept open by the
/// caller until the table is written: the table compares descriptions with kcmp through
/// it, and a terminal's queued bytes are read through it): one met before (held by a
/// process of the tree too) or a new one, described as a process's would be. Every kind
/// a restore can make before the socket sends it again: files, devices, pipes, FIFOs
/// (their unread bytes kept with the description when no process of the tree holds
/// them), the anonymous kinds, memfds, deleted files, unix sockets (which may carry more
/// in their own queues) and terminals; not an epoll (its watches name fd numbers of
/// the process that registered them, which the seed making the socket cannot give).
pub fn in_flight(fd: i32, carrier: u64, table: &mut FdTable, what: &str) -> Result<u64, DumpError> {
    let me = Pid::this();
    let link = proc::read_link(&format!("/proc/self/fd/{fd}"))
        .map(|t| t.to_string_lossy().into_owned())
        .unwrap_or_default();
    if link == "anon_inode:[eventpoll]" {
        // Before `inspect`, whose check of the watches would name ckpt's own fds.
        return Err(crate::refuse(format!(
            "{what}: a file in flight (SCM_RIGHTS) that is an epoll; not supported in flight \
             (its watches name fd numbers of the process that registered them)"
        )));
    }
    let info = proc::FdInfoDir::open(me)?.get(fd)?;
    let (kind, path, meta, seen) = inspect(me, fd, table.describer())?;
    let meta = match meta {
        Some(m) => Some(m),
        None if info.ino == 0 => Some(stat_link(me, fd)?),
        None => None,
    };
    let key = match &meta {
        _ if info.ino != 0 => (info.mnt_id, info.ino),
        Some(m) => (m.dev() | 1 << 63, m.ino()),
        None => unreachable!("stat above"),
    };
    let id = match table.find(me, fd, key)? {
        Some(id) => id,
        None => {
            use pb::FdKind as K;
            // A listening or unconnected TCP socket, a UDP one (systemd's socket passing):
            // made by the seed that sends it again, as a held one is. A connection would
            // need its lock and repair where no process holds it.
            let connection = seen.as_ref().and_then(|s| s.connection());
            let refused = match kind {
                K::FdPidfd => Some("a pidfd".to_string()),
                K::FdMqueue => Some("a POSIX message queue".to_string()),
                K::FdInetSocket => connection.map(|c| format!("a TCP socket {c}")),
                _ => None,
            };
            if let Some(it) = refused {
                return Err(crate::refuse(format!(
                    "{what}: a file in flight (SCM_RIGHTS) that is {it}; not supported in \
                     flight yet"
                )));
            }
            let found = Found {
                kind,
                target: &path,
                meta: meta.as_ref(),
                seen: seen.as_ref(),
            };
            let mut d = describe(me, fd, key, &found, &info, table)?;
            let fifo = meta.as_ref().filter(|_| kind == K::FdFifo);
            if fifo.is_some_and(|m| table.first_to_store((m.dev() | 1 << 62, m.ino()))) {
                // No process of the tree met so far holds it: its bytes go with this
                // description (one that does later finds them stored).
                let mine = ckpt_sys::process::steal_fd(me, fd)?;
                d.fifo_size = ckpt_sys::pipe::capacity(&mine)?;
                d.fifo_data = fifo_bytes(me, fd, &mine)?;
            }
            table.insert(me, fd, key, d)?
        }
    };
    table.unix.flying(id, fd, carrier);
    Ok(id)
}

const O_TMPFILE_BIT: u32 = 0o20000000;

/// Kinds reopened by their path (the rest are made again from the table's record).
fn is_path_kind(kind: pb::FdKind) -> bool {
    matches!(
        kind,
        pb::FdKind::FdRegular
            | pb::FdKind::FdDirectory
            | pb::FdKind::FdChardev
            | pb::FdKind::FdFifo
            | pb::FdKind::FdMqueue
    )
}

/// What `inspect` found of a new description, lent to `describe`.
struct Found<'a> {
    kind: pb::FdKind,
    target: &'a str,
    meta: Option<&'a Metadata>,
    seen: Option<&'a crate::net::Seen>,
}

/// The table's record of a description met for the first time, at fd `fd` of `pid`.
fn describe(
    pid: Pid,
    fd: i32,
    key: (u64, u64),
    found: &Found,
    info: &proc::FdInfo,
    table: &mut FdTable,
) -> Result<pb::FileDesc, DumpError> {
    let (kind, target, meta) = (found.kind, found.target, found.meta);
    // The kinds `inspect` stats; the others are known by their inode (fdinfo's, or the
    // stat's on a kernel without it: then `key` is the stat's).
    let stat = || {
        meta.ok_or_else(|| {
            crate::refuse(format!(
                "pid {pid}: fd {fd} ({target}): no stat of the file"
            ))
        })
    };
    let object = meta.map_or(key.1, MetadataExt::ino);
    let ctx = FdCtx {
        pid,
        fd,
        info,
        inode: key,
        sock: found.seen.map(|s| std::os::fd::AsFd::as_fd(&s.sock)),
    };
    if info.flags & O_TMPFILE_BIT != 0 {
        return Err(crate::refuse(format!(
            "pid {pid}: fd {fd} ({target}): a file opened with O_TMPFILE is not supported yet"
        )));
    }
    let mut d = pb::FileDesc {
        id: 0,
        kind: kind as i32,
        flags: info.flags & !O_CLOEXEC,
        pos: info.pos,
        object,
        ..Default::default()
    };
    match kind {
        pb::FdKind::FdPipe => {
            let class = table
                .describer()
                .pipe_class(pid, fd, target)
                .map_err(DumpError::from)?;
            let external = class == PipeClass::External;
            if external {
                d.external = target.to_string();
            }
            d.pipe = Some(fdtable::pipe::dump(&ctx, external, table)?);
        }
        pb::FdKind::FdEventfd => d.eventfd = Some(fdtable::anon::eventfd(&ctx)?),
        pb::FdKind::FdSignalfd => d.signalfd = Some(fdtable::anon::signalfd(&ctx)?),
        pb::FdKind::FdTimerfd => d.timerfd = Some(fdtable::anon::timerfd(&ctx)?),
        pb::FdKind::FdInotify => d.inotify = Some(fdtable::anon::inotify(&ctx)?),
        pb::FdKind::FdFanotify => d.fanotify = Some(fdtable::fanotify::dump(&ctx)?),
        pb::FdKind::FdPidfd => {
            let named =
                |why: String| crate::refuse(format!("pid {pid}: fd {fd} (pidfd, {target}): {why}"));
            d.pidfd = Some(fdtable::pidfd::dump(&ctx).map_err(named)?);
        }
        pb::FdKind::FdMemfd => {
            let name = target.strip_prefix("/memfd:").unwrap_or(target);
            d.memfd = Some(fdtable::contents::memfd(&ctx, name, stat()?.size(), table)?);
        }
        pb::FdKind::FdInetSocket => d.inet = Some(table.net.collect(pid, fd, object, found.seen)?),
        pb::FdKind::FdUnixSocket => d.unix = Some(fdtable::unix::dump(&ctx, table)?),
        pb::FdKind::FdPacketSocket => {
            d.packet =
                Some(crate::net::packet::collect(pid, fd).map_err(|why| {
                    crate::refuse(format!("pid {pid}: fd {fd} ({target}): {why}"))
                })?)
        }
        pb::FdKind::FdNetlinkSocket => {
            d.netlink =
                Some(crate::net::netlink::collect(pid, fd).map_err(|why| {
                    crate::refuse(format!("pid {pid}: fd {fd} ({target}): {why}"))
                })?)
        }
        pb::FdKind::FdTty => {
            let rdev = stat()?.rdev();
            let dev = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
            let master = fdtable::tty::end_of(dev) == Some(true);
            let own_mounts = table.container_mounts.is_some();
            d.tty = Some(fdtable::tty::dump(&ctx, master, target, own_mounts)?);
        }
        pb::FdKind::FdEpoll => {
            let named =
                |why: String| crate::refuse(format!("pid {pid}: fd {fd} (epoll, {target}): {why}"));
            d.epoll = Some(fdtable::epoll::dump(&ctx).map_err(named)?);
        }
        pb::FdKind::FdDeleted => {
            d.path = target.to_string();
            d.deleted = Some(fdtable::contents::deleted(
                &ctx,
                target,
                stat()?.size(),
                stat()?.mode() & 0o7777,
                table,
            )?);
        }
        // "/NAME", opened by name in the restored process's ipc namespace.
        pb::FdKind::FdMqueue => d.path = target.to_string(),
        _ => {
            if info.mnt_id != 0 && !table.on_reachable_mount(pid, info.mnt_id)? {
                return Err(crate::refuse(format!(
                    "pid {pid}: fd {fd} ({target}): its file is on a mount that is in no mount \
                     namespace of the tree (its filesystem was unmounted with umount -l, or the \
                     fd came from another mount namespace): its path would open another file"
                )));
            }
            d.path = target.to_string();
            if kind == pb::FdKind::FdDirectory && stat()?.nlink() == 0 {
                if let Some(was) = target.strip_suffix(" (deleted)") {
                    d.path = was.to_string();
                    d.removed = true;
                }
            }
            if kind == pb::FdKind::FdRegular {
                d.file_size = stat()?.size();
            }
            if kind == pb::FdKind::FdChardev {
                d.rdev = stat()?.rdev();
            }
            // On a mount a pivoted container's namespace lacks: its path is ckpt's.
            d.outside_root = table
                .container_mounts
                .as_ref()
                .is_some_and(|ids| !ids.contains(&info.mnt_id));
        }
    }
    Ok(d)
}

/// The unread bytes of a FIFO; ones written in packet mode (O_DIRECT) would come back as
/// one stream, so they are refused (an anonymous pipe keeps its packets: `fdtable/pipe.rs`).
fn fifo_bytes(pid: Pid, fd: i32, mine: &std::os::fd::OwnedFd) -> Result<Vec<u8>, DumpError> {
    let (data, packets) = ckpt_sys::pipe::peek(mine)?;
    if !packets.is_empty() {
        return Err(crate::refuse(format!(
            "pid {pid}: fd {fd}: a FIFO holding {} packets written in packet mode \
             (O_DIRECT); not supported yet",
            packets.len()
        )));
    }
    Ok(data)
}
