//! The seed: a forked copy of ckpt that becomes the restored process. It does what a
//! process can do for itself (fds, cwd, root, umask, rlimits, name, session), maps the
//! trampoline the puppet phase injects through, then stops for ckpt to take over.
//!
//! Runs in the child of a fork of a single-threaded ckpt: it may allocate, but must end
//! in pause() (ready, waiting to be seized) or in `_exit`, never return into ckpt's code.
//!
//! In a tree each seed first joins its session and group, then forks its children's seeds
//! (`family.rs`), which inherit those, then prepares itself. Every seed reports on the
//! status pipe, one line in one write: `PID ok`, or `PID reason` before it exits.

mod access;
mod family;
mod objects;
pub mod sharing;

pub use access::set_ckpt;
pub use family::Seeds;

use access::{Expect, Identity};
use ckpt_images::pb;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{chdir, chroot, close, dup2, lseek, Whence};
use std::io::Write;
use std::os::fd::{IntoRawFd, RawFd};

/// What the seed must do, computed by the parent before the fork.
pub struct SeedPlan {
    pub pid: i32,
    pub trampoline: u64,
    /// First fd above every restored one: the error pipe goes here, the exe at +1, the
    /// files of file-backed VMAs from +2.
    pub helper_base: RawFd,
    pub err_fd: RawFd,
    pub exe_path: String,
    pub vma_files: Vec<(String, i32)>,
    /// (index into `vma_files`, exclusive): a flock() held through the description a
    /// mapping keeps (`Vma.flock`), taken on the one this seed opens for it.
    pub vma_flocks: Vec<(usize, bool)>,
    pub fds: Vec<pb::Fd>,
    /// The image's credentials: its files are opened as it (None: it stays root). In a
    /// container's user namespace, the ids inside it (`userns::inside`).
    pub creds: Option<pb::Creds>,
    /// The maps of the container's user namespace when the ids inside differ from the
    /// image's: the puppet translates what it injects (`puppet/creds.rs`).
    pub userns: Option<std::sync::Arc<crate::userns::Ids>>,
    pub cwd: String,
    pub root: String,
    pub umask: u32,
    pub rlimits: Vec<pb::Rlimit>,
    pub personality: u32,
    pub comm: String,
    pub no_new_privs: bool,
    pub session_leader: bool,
    pub group_leader: bool,
    pub nice: i32,
    pub oom_score_adj: i32,
    pub sched_policy: u32,
    pub rt_priority: u32,
    /// The audit login uid (None: older image, left as inherited).
    pub loginuid: Option<u32>,
    pub timerslack_ns: Option<u64>,
    /// Its working directory was removed while it was in it.
    pub cwd_removed: bool,
    /// The nice value of its autogroup (None: older image, or no autogroups).
    pub autogroup_nice: Option<i32>,
    /// The pidfds of `fds` (fd, whose), from the tree's table (`fdtable/pidfd.rs`).
    pub pidfds: Vec<(i32, pb::PidfdState)>,
    /// The epolls of `fds` (fd, what it watches), from the tree's table
    /// (`fdtable/epoll.rs`).
    pub epolls: Vec<(i32, pb::EpollState)>,
    /// The pty (its /dev/pts/N path, the container's devpts for one of those) this session
    /// leader takes as controlling terminal.
    pub ctty: Option<String>,
    /// It leads the foreground group of its controlling terminal.
    pub foreground: bool,
}

impl SeedPlan {
    pub fn exe_fd(&self) -> RawFd {
        self.helper_base + 1
    }
    pub fn vma_fd(&self, i: usize) -> RawFd {
        self.helper_base + 2 + i as RawFd
    }
    pub fn helper_end(&self) -> RawFd {
        self.vma_fd(self.vma_files.len())
    }
}

/// Runs the seed of `seeds.tree.nodes[me]`; never returns.
pub fn run(seeds: &Seeds, me: usize) -> ! {
    let node = &seeds.tree.nodes[me];
    let p = &seeds.plans[node.live.expect("a live process")];
    // A seed that ckpt never seizes (ckpt killed meanwhile) would wait in pause() for
    // ever: it dies with its parent instead (ckpt, or its parent's seed, which dies with
    // its own). The puppet clears this first thing. A parent gone before the call shows
    // in getppid() (ckpt is a subreaper: orphans would be its, or init's).
    let parent = crate::nested_pidns::parent_seen(seeds.tree, me, seeds.ckpt);
    let dies_with_parent =
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).is_ok();
    if !dies_with_parent || nix::unistd::getppid().as_raw() != parent {
        ckpt_sys::process::exit_now(1)
    }
    // Until `prepare` moved it, the status pipe is where ckpt left it.
    // The shared files its descendants hold are made before they are forked.
    let entered = if me == 0 {
        crate::cgroups::enter_root(seeds.cgroups)
    } else {
        Ok(())
    };
    let t_ns = std::time::Instant::now();
    let container = entered.and_then(|()| match seeds.container.filter(|_| me == 0) {
        Some(c) => crate::container::set_up_root(c, seeds.ns),
        None => Ok(()),
    });
    // A container's root tells ckpt what its namespace work took (the -v timings).
    let ready = match seeds.container.filter(|_| me == 0) {
        Some(_) => format!("ok {}", t_ns.elapsed().as_micros()),
        None => "ok".to_string(),
    };
    let early = container
        .and_then(|()| join_groups(p))
        .and_then(|()| objects::create(&seeds.fds.creates[me], seeds.fds.end))
        .and_then(|()| crate::fdtable::tty::take(p))
        .and_then(|()| sharing::prepare(seeds.sharing.as_ref(), me))
        .and_then(|()| family::fork_children(seeds, me));
    let result = early
        .map_err(|m| (m, p.err_fd))
        .and_then(|()| prepare(p, seeds.fds).map_err(|m| (m, status_fd(p))));
    match result {
        Ok(()) => {
            report(p.helper_base, p.pid, &ready);
            let _ = close(p.helper_base);
            // ckpt seizes and interrupts us here (the puppet phase replaces all of this).
            ckpt_sys::process::pause_forever()
        }
        Err((msg, fd)) => {
            report(fd, p.pid, &msg);
            ckpt_sys::process::exit_now(1)
        }
    }
}

/// The status pipe's fd once `prepare` may have moved it above the restored fds.
fn status_fd(p: &SeedPlan) -> RawFd {
    if fcntl(p.helper_base, FcntlArg::F_GETFD).is_ok() {
        p.helper_base
    } else {
        p.err_fd
    }
}

/// One line, in one write (atomic below PIPE_BUF, whatever other seeds write meanwhile).
pub(crate) fn report(fd: RawFd, pid: i32, msg: &str) {
    let mut line: String = msg
        .chars()
        .map(|c| if c == '\n' { ' ' } else { c })
        .collect();
    while line.len() > 3900 {
        line.pop();
    }
    let line = format!("{pid} {line}\n");
    let mut f = std::mem::ManuallyDrop::new(file_from_fd(fd));
    let _ = f.write_all(line.as_bytes());
}

/// Session first, then group: what the children forked next inherit.
fn join_groups(p: &SeedPlan) -> Result<(), String> {
    join(p.session_leader, p.group_leader)
}

/// setsid() for a session leader, else setpgid(0, 0) for a group leader.
pub(crate) fn join(session_leader: bool, group_leader: bool) -> Result<(), String> {
    if session_leader {
        nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    } else if group_leader {
        nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0))
            .map_err(|e| format!("setpgid: {e}"))?;
    }
    Ok(())
}

fn file_from_fd(fd: RawFd) -> std::fs::File {
    ckpt_sys::process::file_from_raw(fd)
}

/// A FIFO opened for reading or writing alone would block in open() until the other side
/// appears; a read-write opening held meanwhile (ckpt's own, never the process's) keeps
/// the pipe alive and lets the real open go through at once. The dumped unread bytes go
/// back through a writer opened as the process: it must be allowed to write them.
fn place_fifo(f: &pb::Fd, flags: OFlag, spare: RawFd, id: &mut Identity) -> Result<(), String> {
    if f.outside_root {
        id.root()?;
    }
    let handle = access::locate(&access::path_of(f), Expect::Fifo, spare)?;
    id.root()?;
    let keeper = access::reopen(&handle, &f.path, OFlag::O_RDWR | OFlag::O_CLOEXEC, "");
    id.image()?;
    let keeper = access::above(keeper?.into_raw_fd(), spare)?;
    let file = access::reopen(&handle, &f.path, flags, &id.who())?;
    access::place(file, f.fd)?;
    if f.pipe_size != 0 {
        let _ = ckpt_sys::pipe::set_capacity(&keeper, f.pipe_size);
    }
    if !f.pipe_data.is_empty() {
        let who = id.who();
        let mut writer = access::reopen(
            &handle,
            &f.path,
            OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            &who,
        )
        .map_err(|e| format!("putting back {} unread bytes: {e}", f.pipe_data.len()))?;
        writer
            .write_all(&f.pipe_data)
            .map_err(|e| format!("refilling {} bytes: {e}", f.pipe_data.len()))?;
    }
    Ok(())
}

/// An fd of the image, opened as the process (`id`) after its path is checked to be what
/// the image says.
fn place_fd(f: &pb::Fd, mut flags: OFlag, spare: RawFd, id: &mut Identity) -> Result<(), String> {
    let want = Expect::of_fd(f)?;
    if matches!(want, Expect::Chardev(_)) {
        // Never let a device become the controlling terminal on the way.
        flags |= OFlag::O_NOCTTY;
    }
    // A file outside a pivoted root is reached through ckpt's /proc/PID/root, which only
    // ckpt's own identity may walk; opening it is still checked as the process.
    if f.removed {
        // Made as the process would have made it, opened, removed again.
        let made = removed_dir(&f.path, f.fd)?;
        let handle = access::locate(&made, want, spare);
        let file = handle.and_then(|h| access::reopen(&h, &made, flags, &id.who()));
        let gone = std::fs::remove_dir(&made).map_err(|e| format!("rmdir {made}: {e}"));
        return access::place(file?, f.fd).and(gone);
    }
    let handle = if f.outside_root {
        id.root()?;
        let h = access::locate(&access::path_of(f), want, spare);
        id.image()?;
        h?
    } else {
        access::locate(&f.path, want, spare)?
    };
    let file = access::reopen(&handle, &f.path, flags, &id.who())?;
    access::place(file, f.fd)
}

/// A POSIX message queue, opened by name as the process (mq_open checks its access
/// against the fsuid in force). One of the host's namespace must still be the very queue
/// of the dump: a queue removed and made again under the name since is another object.
fn place_mqueue(f: &pb::Fd, flags: OFlag, id: &mut Identity) -> Result<(), String> {
    let name = f.path.strip_prefix('/').unwrap_or(&f.path);
    let keep = OFlag::O_ACCMODE | OFlag::O_NONBLOCK;
    let fd = ckpt_sys::mqueue::open(name, (flags & keep).bits())
        .map_err(|e| format!("{e}{}", id.who()))?;
    if f.mqueue_ino != 0 {
        let ino = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd))
            .map_err(|e| format!("fstat: {e}"))?
            .st_ino;
        if ino != f.mqueue_ino {
            return Err(format!(
                "the queue of that name is inode {ino}, the dump's was {}: it was removed and \
                 made again since",
                f.mqueue_ino
            ));
        }
    }
    access::place(std::fs::File::from(fd), f.fd)
}

/// A new empty directory standing for one removed while in use (an open fd's, or the
/// working directory): at its old path, so /proc shows the same "PATH (deleted)", or,
/// when that name is taken again, beside it. Its parent must still exist. The caller
/// opens it and removes it.
pub(crate) fn removed_dir(path: &str, tag: i32) -> Result<String, String> {
    use std::os::unix::fs::DirBuilderExt;
    let mk = |p: &str| std::fs::DirBuilder::new().mode(0o700).create(p);
    match mk(path) {
        Ok(()) => return Ok(path.to_string()),
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(format!("removed directory {path}, made again: {e}"))
        }
        Err(_) => {}
    }
    let parent = std::path::Path::new(path)
        .parent()
        .ok_or_else(|| format!("removed directory {path} has no parent"))?;
    let beside = parent
        .join(format!(".ckpt-removed-{}-{tag}", std::process::id()))
        .to_string_lossy()
        .into_owned();
    mk(&beside).map_err(|e| format!("removed directory {path}, made again as {beside}: {e}"))?;
    Ok(beside)
}

/// A helper of ckpt's (the exe, a mapped file) at fd `at`, opened as the process too:
/// what it maps or names must be a file it could open itself.
fn place_helper(
    path: &str,
    want: Expect,
    flags: OFlag,
    at: RawFd,
    spare: RawFd,
    id: &Identity,
) -> Result<(), String> {
    let handle = access::locate(path, want, spare)?;
    let file = access::reopen(&handle, path, flags | OFlag::O_CLOEXEC, &id.who())?;
    access::place(file, at)
}

/// Puts a new object at fd number `at` (its own number if that is the one: dup2 onto
/// itself and closing the original would lose it).
pub fn place_owned(fd: std::os::fd::OwnedFd, at: RawFd) -> Result<(), String> {
    access::place(std::fs::File::from(fd), at)
}

/// Sets or clears FD_CLOEXEC on `fd`.
pub fn cloexec(fd: RawFd, on: bool) -> Result<(), String> {
    let fl = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(fd, FcntlArg::F_SETFD(fl)).map_err(|e| format!("fd {fd}: F_SETFD: {e}"))?;
    Ok(())
}

/// The dups among `p`'s fds picked by `of` (made by their seed after the fds they dup:
/// epolls, pidfds), each with its close-on-exec flag.
pub fn place_dups(p: &SeedPlan, of: impl Fn(&pb::Fd) -> bool) -> Result<(), String> {
    for f in p.fds.iter().filter(|f| of(f) && f.is_dup) {
        dup2(f.dup_of, f.fd).map_err(|e| format!("fd {}: dup of fd {}: {e}", f.fd, f.dup_of))?;
        cloexec(f.fd, f.cloexec)?;
    }
    Ok(())
}

/// O_ASYNC, and its owner (this process: the only one the dump accepts) and signal, on
/// the descriptions that had them; set here, once the description is in place (open(2)
/// ignores O_ASYNC).
fn async_owners(p: &SeedPlan) -> Result<(), String> {
    const O_ASYNC: u32 = 0o20000;
    // A socket's owner is recorded without O_ASYNC too (SIGURG goes to it).
    let wanted = |f: &&pb::Fd| (f.flags & O_ASYNC != 0 || f.owner_pid != 0) && !f.is_dup;
    for f in p.fds.iter().filter(wanted) {
        if f.flags & O_ASYNC != 0 {
            let fl =
                fcntl(f.fd, FcntlArg::F_GETFL).map_err(|e| format!("fd {}: F_GETFL: {e}", f.fd))?;
            let on = OFlag::from_bits_retain(fl) | OFlag::O_ASYNC;
            fcntl(f.fd, FcntlArg::F_SETFL(on)).map_err(|e| format!("fd {}: O_ASYNC: {e}", f.fd))?;
        }
        // Nothing recorded here: the description's owner was set by the process that
        // held it first (it is shared, from an ancestor's seed): left as it is.
        if f.owner_pid == 0 && f.async_signal == 0 {
            continue;
        }
        let owner = if f.owner_pid != 0 { p.pid } else { 0 };
        ckpt_sys::process::set_async_owner(f.fd, f.owner_type, owner, f.async_signal)
            .map_err(|e| format!("fd {}: {e}", f.fd))?;
    }
    Ok(())
}

/// The close-on-exec flag belongs to the fd, not to the file description a dup shares.
fn set_cloexec(fd: RawFd, on: bool) -> Result<(), String> {
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(fd, FcntlArg::F_SETFD(flags)).map_err(|e| format!("fd {fd}: F_SETFD: {e}"))?;
    Ok(())
}

/// Only the task itself may write its /proc/self/loginuid (and, once it is set, only with
/// CAP_AUDIT_CONTROL, which the seed still has as root). Writing it gives the process a
/// new audit session id (/proc/PID/sessionid): that one the kernel alone hands out.
fn set_loginuid(want: Option<u32>) -> Result<(), String> {
    let Some(want) = want else {
        return Ok(());
    };
    let path = "/proc/self/loginuid";
    let now = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    if now.trim().parse::<u32>().ok() == Some(want) {
        return Ok(());
    }
    std::fs::write(path, want.to_string()).map_err(|e| {
        format!(
            "audit loginuid {want} (now {}): writing {path}: {e} (needs CAP_AUDIT_CONTROL              once set, and audit loginuid_immutable off)",
            now.trim()
        )
    })
}

/// ckpt's soft RLIMIT_NOFILE may be below the image's highest fd (dup2 beyond it is
/// EBADF): raise it, up to the hard limit, before any fd is placed. The image's own limits
/// are set last anyway.
/// A session leader's setsid() made it a new autogroup (nice 0), which the processes of
/// its session share: it gives the group its dumped nice value. Others are left alone:
/// their group is their leader's, or, in the session ckpt was started from, the caller's,
/// which a restore must not change.
fn set_autogroup_nice(want: Option<i32>) -> Result<(), String> {
    // A new autogroup's nice is 0: nothing to write (nor a /proc to need).
    let Some(want) = want.filter(|&n| n != 0) else {
        return Ok(());
    };
    const PATH: &str = "/proc/self/autogroup";
    let now = std::fs::read_to_string(PATH).unwrap_or_default();
    let now = now
        .split_whitespace()
        .last()
        .and_then(|n| n.parse::<i32>().ok());
    if now == Some(want) {
        return Ok(());
    }
    std::fs::write(PATH, want.to_string())
        .map_err(|e| format!("autogroup nice {want} (now {now:?}): {e}"))
}

fn raise_nofile(p: &SeedPlan) -> Result<(), String> {
    const RLIMIT_NOFILE: u32 = 7;
    // The helpers end at helper_end(); a FIFO's keeper fd goes just above them.
    let need = p.helper_end() as u64 + 2;
    let (cur, max) = ckpt_sys::process::get_rlimit(nix::unistd::getpid(), RLIMIT_NOFILE)
        .map_err(|e| e.to_string())?;
    if cur >= need {
        return Ok(());
    }
    let highest = p.fds.iter().map(|f| f.fd).max().unwrap_or(0);
    if max < need {
        return Err(format!(
            "fd {highest} of the image and ckpt's {} helper fds above it need RLIMIT_NOFILE \
             {need}, but the hard limit here is {max} (raise it, e.g. ulimit -Hn {need})",
            p.helper_end() - p.helper_base
        ));
    }
    ckpt_sys::process::set_rlimit(RLIMIT_NOFILE, need, max)
        .map_err(|e| format!("raising the soft RLIMIT_NOFILE from {cur} to {need}: {e}"))
}

/// Opens the fd `f` of the image by its path, as `id`, at its number, with its offset.
fn open_one(f: &pb::Fd, spare: RawFd, id: &mut Identity) -> Result<(), String> {
    let flags = OFlag::from_bits_retain(f.flags as i32) - OFlag::O_CLOEXEC;
    if f.kind == pb::FdKind::FdFifo as i32 {
        place_fifo(f, flags, spare, id)
            .map_err(|e| format!("fd {} (FIFO {}): {e}", f.fd, f.path))?;
    } else if f.kind == pb::FdKind::FdMqueue as i32 {
        place_mqueue(f, flags, id)
            .map_err(|e| format!("fd {} (POSIX message queue {}): {e}", f.fd, f.path))?;
    } else {
        place_fd(f, flags, spare, id).map_err(|e| format!("fd {}: {e}", f.fd))?;
    }
    if f.kind == pb::FdKind::FdRegular as i32 && f.pos != 0 {
        lseek(f.fd, f.pos as i64, Whence::SeekSet)
            .map_err(|e| format!("fd {}: seek {} to {}: {e}", f.fd, f.path, f.pos))?;
    }
    if f.kind == pb::FdKind::FdDirectory as i32 && f.pos != 0 {
        // Directory offsets are cookies of the filesystem; best effort.
        let _ = lseek(f.fd, f.pos as i64, Whence::SeekSet);
    }
    set_cloexec(f.fd, f.cloexec)
}

fn prepare(p: &SeedPlan, fds: &crate::fdtable::Plan) -> Result<(), String> {
    raise_nofile(p)?;
    // Helpers first, above every fd the process will own.
    dup2(p.err_fd, p.helper_base).map_err(|e| format!("dup2 error pipe: {e}"))?;
    // Every file from here on is opened as the process would open it (access.rs).
    let mut id = Identity::new(p.creds.as_ref())?;
    id.image()?;
    let spare = p.helper_end();
    place_helper(
        &p.exe_path,
        Expect::Regular,
        OFlag::O_RDONLY,
        p.exe_fd(),
        spare,
        &id,
    )
    .map_err(|e| format!("executable: {e}"))?;
    for (i, (path, flags)) in p.vma_files.iter().enumerate() {
        // Only the access mode: the image is untrusted.
        let mode = OFlag::from_bits_retain(*flags) & OFlag::O_ACCMODE;
        place_helper(path, Expect::Mapped, mode, p.vma_fd(i), spare, &id)
            .map_err(|e| format!("mapped file: {e}"))?;
        if let Some(&(_, exclusive)) = p.vma_flocks.iter().find(|&&(j, _)| j == i) {
            let how = if exclusive {
                nix::fcntl::FlockArg::LockExclusiveNonblock
            } else {
                nix::fcntl::FlockArg::LockSharedNonblock
            };
            #[allow(deprecated)] // nix's Flock wrapper takes the fd by value
            nix::fcntl::flock(p.vma_fd(i), how)
                .map_err(|e| format!("flock of mapped file {path}: {e}"))?;
        }
    }
    ckpt_sys::process::close_range(0, p.helper_base as u32 - 1).map_err(|e| e.to_string())?;
    // Up to the slots of the tree's shared files (`fdtable.rs`), closed once placed.
    ckpt_sys::process::close_range(p.helper_end() as u32, fds.base as u32 - 1)
        .map_err(|e| e.to_string())?;

    let later =
        |f: &pb::Fd| crate::fdtable::epoll::is_epoll(f) || crate::fdtable::pidfd::is_pidfd(f);
    for f in p.fds.iter().filter(|f| !later(f)) {
        if let Some(slot) = fds.slot(f.desc) {
            // Created once for the tree (`fdtable.rs`), inherited from a seed above.
            dup2(slot, f.fd).map_err(|e| format!("fd {}: from slot {slot}: {e}", f.fd))?;
            set_cloexec(f.fd, f.cloexec)?;
            continue;
        }
        if f.is_dup {
            // Shares the open file description (offset, flags) of a lower fd.
            dup2(f.dup_of, f.fd)
                .map_err(|e| format!("fd {}: dup of fd {}: {e}", f.fd, f.dup_of))?;
            set_cloexec(f.fd, f.cloexec)?;
            continue;
        }
        open_one(f, spare, &mut id)?;
    }
    // Every slot: those this process holds are dup2()ed into place by now.
    ckpt_sys::process::close_range(fds.base as u32, u32::MAX).map_err(|e| e.to_string())?;
    async_owners(p)?;
    // Once their processes exist (their seeds may come after this one).
    crate::fdtable::pidfd::place(p)?;
    // Last: they watch the others by fd number.
    crate::fdtable::epoll::place(p)?;
    id.root()?;

    umask(Mode::from_bits_truncate(p.umask));
    nix::sys::personality::set(nix::sys::personality::Persona::from_bits_retain(
        p.personality as i32,
    ))
    .map_err(|e| format!("personality {:#x}: {e}", p.personality))?;
    let comm =
        std::ffi::CString::new(p.comm.as_bytes()).map_err(|_| "comm has a NUL byte".to_string())?;
    nix::sys::prctl::set_name(&comm).map_err(|e| format!("PR_SET_NAME: {e}"))?;
    if p.no_new_privs {
        nix::sys::prctl::set_no_new_privs().map_err(|e| format!("PR_SET_NO_NEW_PRIVS: {e}"))?;
    }
    let (policy, prio) =
        ckpt_sys::process::get_sched(nix::unistd::getpid()).map_err(|e| e.to_string())?;
    if (policy, prio) != (p.sched_policy, p.rt_priority) {
        ckpt_sys::process::set_sched(p.sched_policy, p.rt_priority).map_err(|e| e.to_string())?;
    }
    if ckpt_sys::process::get_nice(nix::unistd::getpid()).ok() != Some(p.nice) {
        ckpt_sys::process::set_nice(p.nice).map_err(|e| e.to_string())?;
    }
    let oom = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap_or_default();
    if oom.trim().parse::<i32>().ok() != Some(p.oom_score_adj) {
        std::fs::write("/proc/self/oom_score_adj", p.oom_score_adj.to_string()).map_err(|e| {
            format!(
                "oom_score_adj {} (now {}; lowering it needs CAP_SYS_RESOURCE): {e}",
                p.oom_score_adj,
                oom.trim()
            )
        })?;
    }
    set_loginuid(p.loginuid)?;
    if let Some(ns) = p.timerslack_ns.filter(|&ns| ns != 0) {
        // 0 is what the kernel gives real-time tasks by itself (set by the policy above).
        if nix::sys::prctl::get_timerslack().ok() != Some(ns as i32) {
            nix::sys::prctl::set_timerslack(ns)
                .map_err(|e| format!("PR_SET_TIMERSLACK {ns}: {e}"))?;
        }
    }
    if p.session_leader {
        set_autogroup_nice(p.autogroup_nice)?;
    }
    if p.cwd_removed {
        // Entered by fd (before a chroot, as below), then removed.
        use std::os::unix::fs::OpenOptionsExt;
        let made = removed_dir(&p.cwd, -1)?;
        let cwd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(&made)
            .map_err(|e| format!("working directory {made}: {e}"));
        std::fs::remove_dir(&made).map_err(|e| format!("rmdir {made}: {e}"))?;
        let cwd = cwd?;
        if p.root != "/" {
            chroot(p.root.as_str()).map_err(|e| format!("chroot {}: {e}", p.root))?;
        }
        nix::unistd::fchdir(std::os::fd::AsRawFd::as_raw_fd(&cwd))
            .map_err(|e| format!("fchdir {} (removed): {e}", p.cwd))?;
    } else if p.root != "/" {
        // Both paths were read as ckpt sees them, which is how this seed sees them
        // before the chroot: the working directory is opened first and entered by fd
        // (inside the new root or not, as the process had it). After every step above
        // that needs /proc, which the new root may not have.
        use std::os::unix::fs::OpenOptionsExt;
        let cwd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(&p.cwd)
            .map_err(|e| format!("working directory {}: {e}", p.cwd))?;
        chroot(p.root.as_str()).map_err(|e| format!("chroot {}: {e}", p.root))?;
        nix::unistd::fchdir(std::os::fd::AsRawFd::as_raw_fd(&cwd))
            .map_err(|e| format!("fchdir {}: {e}", p.cwd))?;
    } else {
        chdir(p.cwd.as_str()).map_err(|e| format!("chdir {}: {e}", p.cwd))?;
    }
    ckpt_sys::process::map_trampoline(p.trampoline).map_err(|e| e.to_string())?;
    // Limits last: a lowered RLIMIT_NOFILE must not stop the fds above from being placed.
    for l in &p.rlimits {
        let (cur, max) = ckpt_sys::process::get_rlimit(nix::unistd::getpid(), l.resource)
            .map_err(|e| e.to_string())?;
        if (cur, max) != (l.cur, l.max) {
            ckpt_sys::process::set_rlimit(l.resource, l.cur, l.max).map_err(|e| {
                format!(
                    "rlimit {}: {}/{} (now {cur}/{max}; raising a hard limit needs CAP_SYS_RESOURCE): {e}",
                    l.resource, l.cur, l.max
                )
            })?;
        }
    }
    Ok(())
}
