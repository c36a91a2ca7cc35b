//! Creating and inspecting processes where nix has no safe call: clone3 with set_tid,
//! prlimit of another process, robust lists, the trampoline page of a restore seed.

use crate::error::{Ctx, Error, Result};
use nix::errno::Errno;
use nix::unistd::Pid;
use std::os::fd::AsRawFd;

/// Result of a fork-like call.
pub enum Forked {
    Parent(Pid),
    Child,
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Forks (clone3(2), no CLONE_VM) a child that gets exactly pid `want` in the caller's pid
/// namespace. Needs CAP_CHECKPOINT_RESTORE; EEXIST means the pid is in use.
///
/// The caller must be single-threaded: the child runs on a copy of the caller's memory and
/// may only rely on what a forked child of a single-threaded program can.
pub fn fork_with_pid(want: Pid) -> Result<Forked> {
    clone_with_pid(want, false)
}

/// [`fork_with_pid`] with a pid at each of several levels of nested pid namespaces:
/// `pids` innermost first (the caller's pid_for_children namespace's), then one per
/// namespace above it (clone3 set_tid). Needs CAP_CHECKPOINT_RESTORE in each; pid 1 is
/// the only one a namespace without an init takes.
pub fn fork_with_pids(pids: &[i32]) -> Result<Forked> {
    fork3(0, libc::SIGCHLD as u64, pids)
        .map_err(|e| Error::sys(format!("clone3 with pids {pids:?}"), e))
}

/// [`fork_with_pid`], the child sharing the caller's fd table (CLONE_FILES): what it opens
/// or closes, the caller has or has not.
pub fn fork_with_pid_sharing_files(want: Pid) -> Result<Forked> {
    fork3(
        libc::CLONE_FILES as u64,
        libc::SIGCHLD as u64,
        &[want.as_raw()],
    )
    .map_err(|e| Error::sys(format!("clone3 with pid {want}"), e))
}

/// [`fork_with_pid`], but the child is the caller's sibling (CLONE_PARENT): its parent is
/// the caller's, its session and process group still the caller's. Its exit signal is
/// the caller's own (the kernel's rule for CLONE_PARENT).
pub fn fork_sibling_with_pid(want: Pid) -> Result<Forked> {
    clone_with_pid(want, true)
}

fn clone_with_pid(want: Pid, sibling: bool) -> Result<Forked> {
    let (flags, exit_signal) = if sibling {
        // clone3 refuses an exit signal with CLONE_PARENT.
        (libc::CLONE_PARENT as u64, 0)
    } else {
        (0, libc::SIGCHLD as u64)
    };
    fork3(flags, exit_signal, &[want.as_raw()])
        .map_err(|e| Error::sys(format!("clone3 with pid {want}"), e))
}

/// clone3(2) without CLONE_VM (a fork) with `flags`, `exit_signal` and the pids of
/// `set_tid` (innermost namespace first; empty: the kernel's choice).
///
/// The caller must be single-threaded: the child runs on a copy of the caller's memory.
pub(crate) fn fork3(
    flags: u64,
    exit_signal: u64,
    set_tid: &[libc::pid_t],
) -> std::result::Result<Forked, Errno> {
    let args = CloneArgs {
        flags,
        exit_signal,
        set_tid: if set_tid.is_empty() {
            0
        } else {
            set_tid.as_ptr() as u64
        },
        set_tid_size: set_tid.len() as u64,
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM duplicates the process like fork(); `args` and
    // `set_tid` are valid for the duration of the call. The caller guarantees it is
    // single-threaded, so the child's copy of the address space holds no lock owned by
    // another thread.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match Errno::result(r)? {
        0 => Ok(Forked::Child),
        p => Ok(Forked::Parent(Pid::from_raw(p as i32))),
    }
}

/// getrlimit of another process (prlimit(2) with no new limit).
pub fn get_rlimit(pid: Pid, resource: u32) -> Result<(u64, u64)> {
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit64 writes one rlimit64 into `old`; new_limit is null (read only).
    let r = unsafe {
        libc::prlimit64(
            pid.as_raw(),
            resource as libc::__rlimit_resource_t,
            std::ptr::null(),
            &mut old,
        )
    };
    Errno::result(r).ctx(|| format!("prlimit(pid {pid}, resource {resource})"))?;
    Ok((old.rlim_cur, old.rlim_max))
}

/// setrlimit(2) on the calling process.
pub fn set_rlimit(resource: u32, cur: u64, max: u64) -> Result<()> {
    let new = libc::rlimit64 {
        rlim_cur: cur,
        rlim_max: max,
    };
    // SAFETY: prlimit64 reads one rlimit64 from `new`; old_limit is null.
    let r = unsafe {
        libc::prlimit64(
            0,
            resource as libc::__rlimit_resource_t,
            &new,
            std::ptr::null_mut(),
        )
    };
    Errno::result(r).ctx(|| format!("setrlimit(resource {resource})"))?;
    Ok(())
}

/// get_robust_list(2) of another thread: (head, len).
pub fn get_robust_list(tid: Pid) -> Result<(u64, u64)> {
    let mut head: u64 = 0;
    let mut len: usize = 0;
    // SAFETY: the kernel writes one pointer into `head` and one size_t into `len`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid.as_raw(),
            &mut head as *mut u64,
            &mut len as *mut usize,
        )
    };
    Errno::result(r).ctx(|| format!("get_robust_list(tid {tid})"))?;
    Ok((head, len as u64))
}

/// close_range(2): closes fds `first..=last` of the calling process.
pub fn close_range(first: u32, last: u32) -> Result<()> {
    if first > last {
        return Ok(());
    }
    // SAFETY: closing descriptors has no memory-safety effect on Rust objects here: the
    // caller (a restore seed) owns every fd it has and holds no File for the closed ones.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    Errno::result(r).ctx(|| format!("close_range({first}, {last})"))?;
    Ok(())
}

/// _exit(2): ends the calling process at once, running no destructors or atexit handlers
/// (what a forked child that must not touch its parent's state has to do).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no memory of this process.
    unsafe { libc::_exit(code) }
}

/// Wraps a raw fd the caller owns (a forked child's inherited pipe end) as a File.
pub fn file_from_raw(fd: std::os::fd::RawFd) -> std::fs::File {
    use std::os::fd::FromRawFd;
    // SAFETY: the caller passes an fd it owns and that nothing else will close; callers
    // wrap the result in ManuallyDrop when the fd must stay open.
    unsafe { std::fs::File::from_raw_fd(fd) }
}

/// The bytes of a restore seed's trampoline: `syscall; int3`.
pub const TRAMPOLINE_CODE: [u8; 3] = [0x0f, 0x05, 0xcc];

/// Where in the trampoline page `crate::inject::BATCH_CODE` sits.
pub const TRAMPOLINE_BATCH_AT: u64 = 16;

/// Maps the two-page trampoline of a restore seed at `addr` in the calling process: page 0
/// holds `syscall; int3` and, at `TRAMPOLINE_BATCH_AT`, the batch loop, and becomes
/// read+exec; page 1 stays read-write as scratch space for the arguments of injected
/// calls (and a batch's table).
pub fn map_trampoline(addr: u64) -> Result<()> {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping, so no memory this
    // process uses is touched; the new pages are only written below, within their bounds.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Error::sys(
            format!("mmap of the trampoline at {addr:#x}"),
            Errno::last(),
        ));
    }
    if p as u64 != addr {
        return Err(Error::Other(format!(
            "trampoline landed at {p:?}, not {addr:#x}"
        )));
    }
    let batch = &crate::inject::BATCH_CODE;
    // SAFETY: `p` points to 8192 freshly mapped writable bytes; both copies end inside
    // the first page (16 + 92 bytes).
    unsafe {
        std::ptr::copy_nonoverlapping(TRAMPOLINE_CODE.as_ptr(), p.cast::<u8>(), 3);
        std::ptr::copy_nonoverlapping(
            batch.as_ptr(),
            p.cast::<u8>().add(TRAMPOLINE_BATCH_AT as usize),
            batch.len(),
        );
    }
    // SAFETY: changes the protection of the first page of the mapping made above only.
    let r = unsafe { libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC) };
    Errno::result(r).ctx(|| format!("mprotect of the trampoline at {addr:#x}"))?;
    Ok(())
}

/// The xfeatures (XCR0) word the kernel stores for ptrace in the software-reserved bytes of
/// an NT_X86_XSTATE regset (sw_reserved[USER_XSTATE_XCR0_WORD], offset 464).
pub fn xsave_features(xsave: &[u8]) -> u64 {
    xsave
        .get(464..472)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .unwrap_or(0)
}

/// CPU affinity of a task as a bit mask of the first 64 CPUs.
pub fn affinity(tid: Pid) -> Result<u64> {
    let set = nix::sched::sched_getaffinity(tid).ctx(|| format!("sched_getaffinity({tid})"))?;
    let mut mask = 0u64;
    for cpu in 0..64 {
        if set.is_set(cpu).unwrap_or(false) {
            mask |= 1 << cpu;
        }
    }
    Ok(mask)
}

pub fn set_affinity(tid: Pid, mask: u64) -> Result<()> {
    let mut set = nix::sched::CpuSet::new();
    for cpu in 0..64 {
        if mask & (1 << cpu) != 0 {
            let _ = set.set(cpu);
        }
    }
    nix::sched::sched_setaffinity(tid, &set).ctx(|| format!("sched_setaffinity({tid})"))
}

/// Reads a whole mapping of the calling process (its [vdso], to compare with a dump's).
pub fn read_own(start: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    crate::mem::peek(nix::unistd::getpid(), start, &mut buf)?;
    Ok(buf)
}

pub use memmap2::{Mmap, MmapMut};

/// `len` bytes of anonymous memory for a copy buffer, in transparent huge pages where the
/// host allows them (MADV_HUGEPAGE), populated now (MADV_POPULATE_WRITE): the dump's batch
/// buffers are written by process_vm_readv and read by write(), 8 MiB a time, and on 4 KiB
/// pages the first pass alone costs a fault per page and every pass a TLB miss per page.
pub fn copy_buffer(len: usize) -> Result<MmapMut> {
    let map =
        MmapMut::map_anon(len).map_err(|e| Error::Other(format!("mmap of {len} bytes: {e}")))?;
    let _ = map.advise(memmap2::Advice::HugePage);
    // Best effort: without it the first copy faults the pages in.
    let _ = map.advise(memmap2::Advice::PopulateWrite);
    Ok(map)
}

/// Maps a file read-only and shared (the pages file a restore copies from).
pub fn map_file(file: &std::fs::File) -> Result<Mmap> {
    // SAFETY: a read-only mapping of an image file in ckpt's own 0700 directory; nothing
    // in ckpt writes or truncates it while mapped.
    unsafe { Mmap::map(file) }.map_err(|e| Error::Other(format!("mmap of pages file: {e}")))
}

/// Maps several pages files back to back into one read-only mapping (the files of an
/// image chain), each at a 2 MiB aligned offset so its huge folios stay PMD-mapped.
/// Returns the mapping and each file's offset in it (the first at 0); the gaps between
/// files read zero and are never addressed.
pub fn map_chain(files: &[&std::fs::File]) -> Result<(Mmap, Vec<u64>)> {
    const ALIGN: u64 = 2 << 20;
    let mut bases = Vec::with_capacity(files.len());
    let mut lens = Vec::with_capacity(files.len());
    let mut end = 0u64;
    for f in files {
        let len = f
            .metadata()
            .map_err(|e| Error::Other(format!("pages file: {e}")))?
            .len();
        let base = end.next_multiple_of(ALIGN);
        bases.push(base);
        lens.push(len);
        end = base + len.next_multiple_of(4096);
    }
    let mut area = MmapMut::map_anon(end.max(4096) as usize)
        .map_err(|e| Error::Other(format!("mmap of {end} bytes: {e}")))?;
    for ((f, &base), &len) in files.iter().zip(&bases).zip(&lens) {
        if len == 0 {
            continue;
        }
        // SAFETY: the target range [base, base+len) lies inside `area`, which this function
        // owns (MAP_FIXED replaces only its own anonymous pages there); the file is an
        // image file in ckpt's own 0700 directory, mapped read-only and never truncated
        // while mapped.
        let r = unsafe {
            libc::mmap(
                area.as_mut_ptr().add(base as usize).cast(),
                len as usize,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_FIXED,
                f.as_raw_fd(),
                0,
            )
        };
        if r == libc::MAP_FAILED {
            return Err(Error::sys(
                "mmap of a pages file of the chain",
                Errno::last(),
            ));
        }
    }
    let map = area
        .make_read_only()
        .map_err(|e| Error::Other(format!("mprotect of the chain's pages: {e}")))?;
    Ok((map, bases))
}

/// Maps `len` bytes of a file mapping at `offset` in one call (MADV_POPULATE_READ), instead
/// of a page fault per fault-around window when they are first read. Best effort: a
/// kernel without it just faults them in later.
pub fn populate_read(map: &Mmap, offset: usize, len: usize) {
    let _ = map.advise_range(memmap2::Advice::PopulateRead, offset, len);
}

/// Drops ckpt's page-table entries for the whole pages of `[offset, offset + len)` of a
/// read-only file mapping (MADV_DONTNEED): a restore reads its pages file window by window
/// and drops each window behind it, so its RSS stays at a few windows, not the file's size.
/// The bytes stay valid: the next read maps them in again from the page cache.
pub fn release_range(map: &Mmap, offset: usize, len: usize) {
    const PAGE: usize = 4096;
    let start = offset.next_multiple_of(PAGE);
    let end = offset.saturating_add(len).min(map.len());
    // The mapping covers the file's partial last page whole.
    let end = if end == map.len() {
        end.next_multiple_of(PAGE)
    } else {
        end / PAGE * PAGE
    };
    if end > start {
        // SAFETY: `map` is a read-only mapping of a file: nothing can have written to its
        // pages, so dropping them loses nothing, and every later read of the range sees
        // the same file bytes again (faulted back in from the page cache).
        let _ = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
        };
    }
}

/// Signals whose disposition in the calling process is not SIG_DFL: a forked restore seed
/// inherits them (Rust's runtime ignores SIGPIPE and handles SIGSEGV/SIGBUS), so they
/// must be reset where the image does not set them.
pub fn own_non_default_signals() -> Vec<u32> {
    let mut out = Vec::new();
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: a zeroed sigaction is a valid out-parameter; a null new action only
        // queries the current one.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: `old` is a valid, writable sigaction; the new action is null.
        let r = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
        if r == 0 && old.sa_sigaction != libc::SIG_DFL {
            out.push(sig as u32);
        }
    }
    out
}

/// kcmp(2) KCMP_FILE: whether two fds of two processes refer to the same open file
/// description (what dup() and fork() share: offset and status flags).
pub fn same_file_description(pid1: Pid, fd1: i32, pid2: Pid, fd2: i32) -> Result<bool> {
    Ok(file_order(pid1, fd1, pid2, fd2)? == std::cmp::Ordering::Equal)
}

/// kcmp(2) KCMP_FILE as an ordering: the kernel orders open file descriptions
/// consistently (by obfuscated address), so descriptions can be kept sorted and a new one
/// found by binary search.
pub fn file_order(pid1: Pid, fd1: i32, pid2: Pid, fd2: i32) -> Result<std::cmp::Ordering> {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp only compares kernel objects; it takes no pointers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1.as_raw(),
            pid2.as_raw(),
            KCMP_FILE,
            fd1 as libc::c_ulong,
            fd2 as libc::c_ulong,
        )
    };
    let r = Errno::result(r).ctx(|| format!("kcmp(pid {pid1} fd {fd1}, pid {pid2} fd {fd2})"))?;
    // 0 equal, 1 the first is less, 2 greater (3: not comparable, not for files).
    Ok(match r {
        0 => std::cmp::Ordering::Equal,
        1 => std::cmp::Ordering::Less,
        _ => std::cmp::Ordering::Greater,
    })
}

/// kcmp(2) KCMP_VM: whether two processes share one address space (threads, CLONE_VM
/// children) rather than each having its own (a fork child).
pub fn same_mm(pid1: Pid, pid2: Pid) -> Result<bool> {
    const KCMP_VM: libc::c_long = 1;
    // SAFETY: kcmp only compares kernel objects; it takes no pointers.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1.as_raw(), pid2.as_raw(), KCMP_VM, 0, 0) };
    Ok(Errno::result(r).ctx(|| format!("kcmp(pid {pid1}, pid {pid2}, KCMP_VM)"))? == 0)
}

/// What two processes may share since a clone(2) without a new copy: the fd table
/// (CLONE_FILES), the cwd/root/umask (CLONE_FS), the address space (CLONE_VM), the signal
/// handlers (CLONE_SIGHAND). The values are kcmp(2)'s types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    Vm = 1,
    Files = 2,
    Fs = 3,
    Sighand = 4,
}

/// kcmp(2) of one kind of object of two processes, as an order: equal when they share
/// it. The order is the kernel's (pointers, obfuscated) and the same for every call of
/// one boot, so sorting by it puts the sharers of one object side by side.
pub fn kcmp_order(pid1: Pid, pid2: Pid, what: Shared) -> Result<std::cmp::Ordering> {
    // SAFETY: kcmp only compares kernel objects; it takes no pointers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1.as_raw(),
            pid2.as_raw(),
            what as libc::c_long,
            0,
            0,
        )
    };
    match Errno::result(r).ctx(|| format!("kcmp(pid {pid1}, pid {pid2}, {what:?})"))? {
        0 => Ok(std::cmp::Ordering::Equal),
        1 => Ok(std::cmp::Ordering::Less),
        _ => Ok(std::cmp::Ordering::Greater),
    }
}

/// getpriority(2) of another process: its nice value.
pub fn get_nice(pid: Pid) -> Result<i32> {
    Errno::clear();
    // SAFETY: getpriority takes no pointers.
    let r = unsafe { libc::getpriority(libc::PRIO_PROCESS, pid.as_raw() as libc::id_t) };
    if r == -1 && Errno::last_raw() != 0 {
        return Err(Error::sys(format!("getpriority(pid {pid})"), Errno::last()));
    }
    Ok(r)
}

/// ioprio_get(IOPRIO_WHO_PROCESS, tid): a thread's I/O class and level (class << 13 |
/// level; 0 when never set: the class then follows the nice value).
pub fn get_ioprio(tid: Pid) -> Result<u32> {
    // SAFETY: ioprio_get takes no pointers.
    let r = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, tid.as_raw()) };
    Ok(Errno::result(r).ctx(|| format!("ioprio_get(thread {tid})"))? as u32)
}

/// ioprio_set(IOPRIO_WHO_PROCESS, tid, prio) of another thread (root may set any).
pub fn set_ioprio(tid: Pid, prio: u32) -> Result<()> {
    // SAFETY: ioprio_set takes no pointers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            tid.as_raw(),
            prio as libc::c_int,
        )
    };
    Errno::result(r).ctx(|| format!("ioprio_set(thread {tid}, {prio:#x})"))?;
    Ok(())
}

const IOPRIO_WHO_PROCESS: libc::c_int = 1;

/// setpriority(2) on the calling process.
pub fn set_nice(nice: i32) -> Result<()> {
    // SAFETY: setpriority takes no pointers.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    Errno::result(r).ctx(|| format!("setpriority({nice})"))?;
    Ok(())
}

/// sched_getscheduler(2) and the real-time priority of another process.
pub fn get_sched(pid: Pid) -> Result<(u32, u32)> {
    // SAFETY: sched_getscheduler takes no pointers.
    let policy = unsafe { libc::sched_getscheduler(pid.as_raw()) };
    let policy = Errno::result(policy).ctx(|| format!("sched_getscheduler(pid {pid})"))?;
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: the kernel writes one sched_param into `param`.
    let r = unsafe { libc::sched_getparam(pid.as_raw(), &mut param) };
    Errno::result(r).ctx(|| format!("sched_getparam(pid {pid})"))?;
    Ok((policy as u32, param.sched_priority as u32))
}

/// sched_setscheduler(2) on the calling process.
pub fn set_sched(policy: u32, rt_priority: u32) -> Result<()> {
    let param = libc::sched_param {
        sched_priority: rt_priority as i32,
    };
    // SAFETY: the kernel reads one sched_param from `param`.
    let r = unsafe { libc::sched_setscheduler(0, policy as i32, &param) };
    Errno::result(r).ctx(|| format!("sched_setscheduler({policy}, {rt_priority})"))?;
    Ok(())
}

thread_local! {
    /// The pidfd of the process `steal_fd` took an fd from last: a dump takes several of
    /// most processes' fds in a row (two syscalls fewer each time).
    static LAST_PIDFD: std::cell::RefCell<Option<(Pid, std::os::fd::OwnedFd)>> =
        const { std::cell::RefCell::new(None) };
}

/// A duplicate of another process's fd in ours (pidfd_open(2) + pidfd_getfd(2)): the same
/// open file description, to inspect without touching the target. The pidfd is kept for
/// the next call on the same pid (close-on-exec, as every pidfd); one of a process gone
/// since (its pid maybe reused) is opened anew.
pub fn steal_fd(pid: Pid, fd: i32) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let getfd = |pidfd: &std::os::fd::OwnedFd| {
        // SAFETY: pidfd_getfd takes no pointers and returns a new fd we own.
        let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
        Errno::result(r).map(|r| {
            // SAFETY: pidfd_getfd returned a fresh fd that nothing else owns.
            unsafe { std::os::fd::OwnedFd::from_raw_fd(r as i32) }
        })
    };
    let cached = LAST_PIDFD.with(|c| match c.borrow().as_ref() {
        Some((p, pidfd)) if *p == pid => Some(getfd(pidfd)),
        _ => None,
    });
    match cached {
        Some(Ok(f)) => return Ok(f),
        Some(Err(e)) if e != Errno::ESRCH => {
            return Err(Error::sys(format!("pidfd_getfd(pid {pid}, fd {fd})"), e))
        }
        _ => {}
    }
    // SAFETY: pidfd_open takes no pointers and returns a new fd we own.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let pidfd = Errno::result(pidfd).ctx(|| format!("pidfd_open({pid})"))? as i32;
    // SAFETY: pidfd_open returned a fresh fd that nothing else owns.
    let pidfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(pidfd) };
    let r = getfd(&pidfd).ctx(|| format!("pidfd_getfd(pid {pid}, fd {fd})"));
    LAST_PIDFD.with(|c| *c.borrow_mut() = Some((pid, pidfd)));
    r
}

/// process_mrelease(2): frees the memory of a process that is being killed, in the
/// caller's context, in parallel with the dying task's own exit (on 6.18 the kernel's
/// reaper walks the mappings from the top while the exit goes from the bottom): a killed
/// 1 GiB process is gone in ~40-50 ms instead of ~90-95 ms on the reference VM. The
/// process must already have a fatal signal and no memory shared with a live process
/// (EINVAL otherwise); ESRCH means its memory is gone already.
pub fn release_dying_memory(pidfd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: process_mrelease takes a pidfd and flags (0) and passes no memory.
    let r = unsafe { libc::syscall(libc::SYS_process_mrelease, pidfd.as_raw_fd(), 0) };
    match Errno::result(r) {
        Ok(_) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(Error::sys("process_mrelease", e)),
    }
}

/// Ends the calling process with wait status `status` as its parent's wait(2) will see
/// it: `exit(code)` for an exit, death by the signal for a kill (no core file is
/// written: RLIMIT_CORE is set to 0 first, so the core bit is never set). For a restored
/// zombie. Every signal is unblocked and the signal's action reset to SIG_DFL first.
pub fn die_with_status(status: i32) -> ! {
    let sig = status & 0x7f;
    if sig == 0 {
        exit_now((status >> 8) & 0xff);
    }
    let _ = set_rlimit(libc::RLIMIT_CORE, 0, 0);
    if let Ok(s) = nix::sys::signal::Signal::try_from(sig) {
        // SAFETY: SIG_DFL is not a handler: no Rust code runs on the signal; the process
        // is single-threaded and dies on it right below.
        let _ = unsafe { nix::sys::signal::signal(s, nix::sys::signal::SigHandler::SigDfl) };
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    // SAFETY: kill(2) of ourselves with a plain signal number (raise(3) only takes the
    // ones nix names; real-time signals are numbers too).
    unsafe { libc::kill(libc::getpid(), sig) };
    exit_now(128 + sig)
}

/// PR_SET_CHILD_SUBREAPER: orphans among our descendants come to us (to be reaped) rather
/// than to init.
pub fn set_child_subreaper(on: bool) -> Result<()> {
    nix::sys::prctl::set_child_subreaper(on).map_err(|e| Error::sys("PR_SET_CHILD_SUBREAPER", e))
}

/// Waits until child `pid` has exited, without reaping it (waitid with WNOWAIT): it stays a
/// zombie for whoever waits next.
pub fn wait_exited_keep(pid: Pid) -> Result<()> {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys(format!("waitid({pid}, WNOWAIT)"), e)),
        }
    }
}

/// Blocks in pause(2) for ever: a restore seed waiting to be seized.
pub fn pause_forever() -> ! {
    loop {
        nix::unistd::pause();
    }
}

/// fcntl.h: F_SETSIG, F_GETSIG, F_SETOWN_EX, F_GETOWN_EX; struct f_owner_ex.
const F_SETSIG: i32 = 10;
const F_GETSIG: i32 = 11;
const F_SETOWN_EX: i32 = 15;
const F_GETOWN_EX: i32 = 16;
#[repr(C)]
struct OwnerEx {
    type_: i32,
    pid: i32,
}

/// F_GETOWN_EX and F_GETSIG of an open file description (through any fd of it): the
/// owner's type (F_OWNER_TID 0, F_OWNER_PID 1, F_OWNER_PGRP 2) and pid, and the signal.
pub fn async_owner(fd: std::os::fd::BorrowedFd<'_>) -> Result<(i32, i32, i32)> {
    use std::os::fd::AsRawFd;
    let mut o = OwnerEx { type_: 0, pid: 0 };
    // SAFETY: F_GETOWN_EX writes one struct f_owner_ex into `o`.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), F_GETOWN_EX, &mut o) };
    Errno::result(r).ctx(|| "fcntl(F_GETOWN_EX)".into())?;
    // SAFETY: F_GETSIG takes no pointer.
    let sig = unsafe { libc::fcntl(fd.as_raw_fd(), F_GETSIG) };
    let sig = Errno::result(sig).ctx(|| "fcntl(F_GETSIG)".into())?;
    Ok((o.type_, o.pid, sig))
}

/// F_SETOWN_EX and F_SETSIG (the owner must exist).
pub fn set_async_owner(fd: i32, owner_type: i32, pid: i32, sig: i32) -> Result<()> {
    let o = OwnerEx {
        type_: owner_type,
        pid,
    };
    // SAFETY: F_SETOWN_EX reads one struct f_owner_ex from `o`.
    let r = unsafe { libc::fcntl(fd, F_SETOWN_EX, &o) };
    Errno::result(r).ctx(|| format!("fcntl({fd}, F_SETOWN_EX, {pid})"))?;
    // SAFETY: F_SETSIG takes its signal by value.
    let r = unsafe { libc::fcntl(fd, F_SETSIG, sig) };
    Errno::result(r).ctx(|| format!("fcntl({fd}, F_SETSIG, {sig})"))?;
    Ok(())
}

/// Every signal blocked in the calling thread until it is dropped (the mask it found
/// back); a process forked meanwhile starts with them all blocked. For the seeds of a
/// restore: a signal sent to a pid before its process is rebuilt must wait for the
/// process's own handlers, not kill the seed or run one of ckpt's.
pub struct SignalsBlocked(nix::sys::signal::SigSet);

pub fn block_signals() -> Result<SignalsBlocked> {
    let mut old = nix::sys::signal::SigSet::empty();
    nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::all()),
        Some(&mut old),
    )
    .map_err(|e| Error::sys("blocking every signal", e))?;
    Ok(SignalsBlocked(old))
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&self.0),
            None,
        );
    }
}

/// Makes `cmd`'s child die (SIGKILL) when the thread that spawns it exits: a helper
/// that must not outlive its parent's decision (haul serve's `ckpt restore`: a serve
/// killed mid-restore lost its session, the source resumes, and a restore finishing
/// after it would run the workload twice). Not inherited by the child's own forks. A
/// parent that is already gone by the time the child runs (`parent` no longer its
/// parent) makes it exit at once.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = nix::unistd::getpid();
    // SAFETY: between fork and exec the closure only makes two syscalls (prctl,
    // getppid) and possibly _exit, all async-signal-safe; it allocates nothing and takes
    // no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent.as_raw() {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}
