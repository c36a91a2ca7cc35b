//! `ckpt check`: what this kernel, with these privileges, lets ckpt do. Every feature is
//! probed by really using it (on a child of our own, on our own memory, on fresh fds), not
//! guessed from the kernel version; nothing outside ckpt is touched.
//!
//! Each probe returns a [`Feature`]: what was found and what it means for the user.
//! [`probe_all`] runs them in a fixed order. Probes that need a process fork one child that
//! only sleeps in pause(2), trace it, and kill and reap it before returning.

use crate::error::{Error, Result};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;

/// How usable a feature is here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Works as ckpt needs it.
    Ok,
    /// Works partly, or works but something ckpt would use with it is absent.
    Limited,
    /// Not available (kernel option off, too old, or not permitted).
    Missing,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Limited => "limited",
            Status::Missing => "missing",
        }
    }
}

/// One probed feature.
#[derive(Debug, Clone)]
pub struct Feature {
    /// Short stable identifier (`ptrace`, `clone3-set-tid`, ...).
    pub name: &'static str,
    pub status: Status,
    /// What the probe found: values, sizes, paths, errnos.
    pub detail: String,
    /// What this means for the user, in one line.
    pub meaning: String,
    /// ckpt cannot dump or restore anything without it.
    pub required: bool,
}

impl Feature {
    fn new(
        name: &'static str,
        status: Status,
        detail: impl Into<String>,
        meaning: impl Into<String>,
    ) -> Self {
        Feature {
            name,
            status,
            detail: detail.into(),
            meaning: meaning.into(),
            required: false,
        }
    }

    fn required(mut self) -> Self {
        self.required = true;
        self
    }
}

/// Capability numbers (linux/capability.h) that matter to ckpt.
pub const CAP_SETGID: u32 = 6;
pub const CAP_SETUID: u32 = 7;
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_RESOURCE: u32 = 24;
pub const CAP_CHECKPOINT_RESTORE: u32 = 40;

/// Size of `struct prctl_mm_map` that restore passes to PR_SET_MM_MAP (x86-64).
pub const PRCTL_MM_MAP_SIZE: u32 = 104;

const PTRACE_O_SUSPEND_SECCOMP: libc::c_int = 1 << 21;

// linux/userfaultfd.h
const UFFD_API: u64 = 0xaa;
/// _IOWR(0xAA, 0x3F, struct uffdio_api), 24 bytes.
const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
const UFFD_FEATURES: &[(u64, &str)] = &[
    (1 << 0, "pagefault_flag_wp"),
    (1 << 1, "event_fork"),
    (1 << 2, "event_remap"),
    (1 << 3, "event_remove"),
    (1 << 4, "missing_hugetlbfs"),
    (1 << 5, "missing_shmem"),
    (1 << 6, "event_unmap"),
    (1 << 7, "sigbus"),
    (1 << 8, "thread_id"),
    (1 << 9, "minor_hugetlbfs"),
    (1 << 10, "minor_shmem"),
    (1 << 11, "exact_address"),
    (1 << 12, "wp_hugetlbfs_shmem"),
    (1 << 13, "wp_unpopulated"),
    (1 << 14, "poison"),
    (1 << 15, "wp_async"),
    (1 << 16, "move"),
];
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
/// What lazy restore (post-copy) needs besides plain MISSING faults.
const UFFD_LAZY_NEEDS: u64 = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6);

// linux/fs.h: PAGEMAP_SCAN = _IOWR('f', 16, struct pm_scan_arg), 96 bytes.
const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;
const PAGE_IS_PRESENT: u64 = 1 << 3;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// Runs every probe. Forks (and reaps) one short-lived child; safe to call from a
/// multi-threaded process, since that child only ever calls pause(2) and _exit(2).
pub fn probe_all() -> Vec<Feature> {
    let mut out = Vec::new();
    out.push(kernel());
    let caps = CapSet::own();
    out.push(capabilities(&caps));

    let (child, clone3) = spawn_probe_child(&caps);
    out.push(clone3);
    match child {
        Ok(child) => {
            let seized = ptrace_probe(&child);
            let ok = seized.status == Status::Ok;
            out.push(seized);
            if ok {
                out.push(suspend_seccomp(&child, &caps));
                out.push(rseq(&child));
                out.push(process_memory(&child));
            }
            out.push(pidfd(&child));
        }
        Err(e) => out.push(
            Feature::new(
                "ptrace",
                Status::Missing,
                format!("could not fork a child to trace: {e}"),
                "dump cannot stop and inspect a process",
            )
            .required(),
        ),
    }

    out.push(prctl_mm_map(&caps));
    out.push(vdso());
    out.push(cgroup_freezer());
    let uffd = userfaultfd();
    let scan = pagemap_scan();
    let soft = soft_dirty(&uffd, &scan);
    let tracking = dirty_tracking(&uffd, &scan, soft.status == Status::Ok);
    out.push(soft);
    out.push(uffd.feature);
    out.push(scan.feature);
    out.push(tracking);
    out.push(tcp_repair());
    out.push(tcp_lock());
    out.push(sock_diag());
    out.push(time_ns());
    out
}

/// True when a required feature is missing: ckpt cannot work on this host.
pub fn unusable(features: &[Feature]) -> bool {
    features
        .iter()
        .any(|f| f.required && f.status == Status::Missing)
}

fn errno_of(e: &Error) -> Option<Errno> {
    e.errno()
}

fn kernel() -> Feature {
    match nix::sys::utsname::uname() {
        Ok(u) => Feature::new(
            "kernel",
            Status::Ok,
            format!(
                "Linux {} {} ({})",
                u.release().to_string_lossy(),
                u.machine().to_string_lossy(),
                u.version().to_string_lossy()
            ),
            "images record this release; restore checks the vDSO, not the version",
        ),
        Err(e) => Feature::new(
            "kernel",
            Status::Limited,
            format!("uname: {e}"),
            "kernel release unknown",
        ),
    }
}

/// The effective capability set of the calling process (CapEff in /proc/self/status).
#[derive(Debug, Clone, Copy, Default)]
pub struct CapSet {
    pub eff: u64,
    pub uid: u32,
}

impl CapSet {
    pub fn own() -> Self {
        let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        Self::parse(&text)
    }

    pub fn parse(status: &str) -> Self {
        let mut c = CapSet::default();
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("CapEff:") {
                c.eff = u64::from_str_radix(v.trim(), 16).unwrap_or(0);
            } else if let Some(v) = line.strip_prefix("Uid:") {
                // real, effective, saved, fs: the effective one decides.
                c.uid = v
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(u32::MAX);
            }
        }
        c
    }

    pub fn has(&self, cap: u32) -> bool {
        cap < 64 && self.eff & (1 << cap) != 0
    }

    /// clone3 set_tid and PR_SET_MM_MAP's exe_fd need one of these.
    pub fn checkpoint_restore(&self) -> bool {
        self.has(CAP_CHECKPOINT_RESTORE) || self.has(CAP_SYS_ADMIN)
    }
}

fn capabilities(c: &CapSet) -> Feature {
    let named = [
        (CAP_CHECKPOINT_RESTORE, "CHECKPOINT_RESTORE"),
        (CAP_SYS_ADMIN, "SYS_ADMIN"),
        (CAP_SYS_PTRACE, "SYS_PTRACE"),
        (CAP_SYS_RESOURCE, "SYS_RESOURCE"),
        (CAP_NET_ADMIN, "NET_ADMIN"),
        (CAP_SETUID, "SETUID"),
        (CAP_SETGID, "SETGID"),
    ];
    let have: Vec<&str> = named
        .iter()
        .filter(|(n, _)| c.has(*n))
        .map(|(_, s)| *s)
        .collect();
    let lack: Vec<&str> = named
        .iter()
        .filter(|(n, _)| !c.has(*n))
        .map(|(_, s)| *s)
        .collect();
    let mut detail = format!("uid {}, CapEff {:#018x}", c.uid, c.eff);
    if !have.is_empty() {
        detail += &format!("; has {}", have.join(" "));
    }
    if !lack.is_empty() {
        detail += &format!("; lacks {}", lack.join(" "));
    }
    let mut notes = Vec::new();
    if !c.has(CAP_SYS_PTRACE) {
        notes.push("only processes of your own uid that are dumpable can be dumped");
    }
    if !c.has(CAP_SYS_RESOURCE) {
        notes.push(
            "rlimits above the current hard limit and a lower oom_score_adj cannot be restored",
        );
    }
    if !c.has(CAP_NET_ADMIN) {
        notes.push("no TCP repair");
    }
    if !c.has(CAP_SETUID) || !c.has(CAP_SETGID) {
        notes.push("processes of other users cannot be restored");
    }
    if !c.checkpoint_restore() {
        Feature::new(
            "capabilities",
            Status::Missing,
            detail,
            "restore needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN (run ckpt as root)",
        )
        .required()
    } else if notes.is_empty() {
        Feature::new(
            "capabilities",
            Status::Ok,
            detail,
            "everything ckpt does is permitted",
        )
    } else {
        Feature::new("capabilities", Status::Limited, detail, notes.join("; "))
    }
}

/// A child of ours that sleeps in pause(2) until killed; killed and reaped on drop.
pub struct ProbeChild {
    pid: Pid,
    /// A pipe end the child inherited (its number is the same in the child).
    pipe_fd: RawFd,
    _pipe: (OwnedFd, OwnedFd),
}

impl ProbeChild {
    pub fn pid(&self) -> Pid {
        self.pid
    }
}

impl Drop for ProbeChild {
    fn drop(&mut self) {
        let _ = kill(self.pid, Signal::SIGKILL);
        loop {
            match waitpid(self.pid, Some(WaitPidFlag::__WALL)) {
                Err(Errno::EINTR) => continue,
                Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
}

/// What the child runs: sleep until killed. Only async-signal-safe calls.
fn park() -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    loop {
        nix::unistd::pause();
    }
}

/// Pids near pid_max are the least likely to be in use.
fn free_pid_candidates() -> Vec<i32> {
    let max: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    (1..200)
        .map(|k| max - k)
        .filter(|p| *p > 300 && !std::path::Path::new(&format!("/proc/{p}")).exists())
        .take(8)
        .collect()
}

/// Forks the probe child, first with clone3 + set_tid (which is itself a probe), else with
/// a plain fork. Returns the child and the clone3 feature.
fn spawn_probe_child(caps: &CapSet) -> (Result<ProbeChild>, Feature) {
    let pipe = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            let f = Feature::new(
                "clone3-set-tid",
                Status::Missing,
                format!("not probed: pipe2: {e}"),
                "restore needs it to give a process its old pid",
            )
            .required();
            return (Err(Error::sys("pipe2", e)), f);
        }
    };
    let pipe_fd = pipe.0.as_raw_fd();
    let mut last_err = None;
    for want in free_pid_candidates() {
        match crate::process::fork_with_pid(Pid::from_raw(want)) {
            Ok(crate::process::Forked::Child) => park(),
            Ok(crate::process::Forked::Parent(pid)) => {
                let child = ProbeChild {
                    pid,
                    pipe_fd,
                    _pipe: pipe,
                };
                let (status, detail) = if pid.as_raw() == want {
                    (
                        Status::Ok,
                        format!("forked a child with pid {want} as asked"),
                    )
                } else {
                    (
                        Status::Limited,
                        format!("asked for pid {want}, the child got {pid}"),
                    )
                };
                let f = Feature::new(
                    "clone3-set-tid",
                    status,
                    detail,
                    "restore can give a process its old pid",
                )
                .required();
                return (Ok(child), f);
            }
            Err(e) if errno_of(&e) == Some(Errno::EEXIST) => {
                last_err = Some(e);
                continue;
            }
            Err(e) => {
                last_err = Some(e);
                break;
            }
        }
    }
    let (status, detail, meaning) = match last_err.as_ref().and_then(errno_of) {
        Some(Errno::EPERM) => (
            Status::Missing,
            format!(
                "clone3 with set_tid: EPERM (CAP_CHECKPOINT_RESTORE {}, CAP_SYS_ADMIN {})",
                yes_no(caps.has(CAP_CHECKPOINT_RESTORE)),
                yes_no(caps.has(CAP_SYS_ADMIN))
            ),
            "restore cannot recreate pids: it needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN",
        ),
        Some(Errno::ENOSYS) | Some(Errno::E2BIG) => (
            Status::Missing,
            "clone3 with set_tid is not supported by this kernel (needs 5.5+)".to_string(),
            "restore cannot recreate pids on this kernel",
        ),
        Some(Errno::EEXIST) => (
            Status::Limited,
            "every pid tried was in use; not confirmed".to_string(),
            "restore gives a process its old pid if the capability allows (untested here)",
        ),
        _ => (
            Status::Missing,
            match &last_err {
                Some(e) => format!("clone3 with set_tid: {e}"),
                None => "no free pid to try".to_string(),
            },
            "restore cannot recreate pids here",
        ),
    };
    let f = Feature::new("clone3-set-tid", status, detail, meaning).required();
    // Fall back to a plain fork so the ptrace probes still run.
    // SAFETY: the child only calls prctl, pause and (when killed) nothing else: all
    // async-signal-safe, so it is sound even if the caller has other threads.
    let child = match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => park(),
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(ProbeChild {
            pid: child,
            pipe_fd,
            _pipe: pipe,
        }),
        Err(e) => Err(Error::sys("fork", e)),
    };
    (child, f)
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "present"
    } else {
        "absent"
    }
}

fn ptrace_scope() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

fn ptrace_probe(child: &ProbeChild) -> Feature {
    let scope = match ptrace_scope() {
        Some(s) => format!("yama ptrace_scope {s}"),
        None => "no yama LSM".to_string(),
    };
    let pid = child.pid();
    let r = crate::ptrace::seize(pid, crate::ptrace::Options::empty())
        .and_then(|_| crate::ptrace::interrupt(pid))
        .and_then(|_| crate::ptrace::wait(pid));
    match r {
        Ok(crate::ptrace::Stop::EventStop(_)) => Feature::new(
            "ptrace",
            Status::Ok,
            format!("PTRACE_SEIZE + PTRACE_INTERRUPT stopped a child; {scope}"),
            "dump can stop a process without signalling it, and restore can drive one",
        )
        .required(),
        Ok(other) => Feature::new(
            "ptrace",
            Status::Limited,
            format!("PTRACE_INTERRUPT gave {other:?}, not an event stop; {scope}"),
            "dump may misread stops on this kernel",
        )
        .required(),
        Err(e) => {
            let why = match (errno_of(&e), ptrace_scope()) {
                (Some(Errno::EPERM), Some(3)) => {
                    "; ptrace_scope 3 forbids all attaching (set at boot only)"
                }
                (Some(Errno::EPERM), Some(2)) => "; ptrace_scope 2 needs CAP_SYS_PTRACE",
                _ => "",
            };
            Feature::new(
                "ptrace",
                Status::Missing,
                format!("{e}; {scope}{why}"),
                "ckpt cannot dump or restore anything here",
            )
            .required()
        }
    }
}

fn suspend_seccomp(child: &ProbeChild, caps: &CapSet) -> Feature {
    let opts = crate::ptrace::Options::from_bits_retain(PTRACE_O_SUSPEND_SECCOMP);
    match crate::ptrace::set_options(child.pid(), opts) {
        Ok(()) => Feature::new(
            "ptrace-suspend-seccomp",
            Status::Ok,
            "PTRACE_O_SUSPEND_SECCOMP accepted",
            "syscalls injected into processes with seccomp filters will not be filtered",
        ),
        Err(e) => Feature::new(
            "ptrace-suspend-seccomp",
            Status::Missing,
            format!(
                "{e} (needs CAP_SYS_ADMIN: {})",
                yes_no(caps.has(CAP_SYS_ADMIN))
            ),
            "processes with seccomp filters cannot be dumped or restored",
        ),
    }
}

fn rseq(child: &ProbeChild) -> Feature {
    match crate::ptrace::get_rseq(child.pid()) {
        Ok(c) if c.ptr != 0 => Feature::new(
            "rseq",
            Status::Ok,
            format!(
                "PTRACE_GET_RSEQ_CONFIGURATION: registered, len {}, sig {:#x}",
                c.len, c.sig
            ),
            "rseq registrations are dumped and re-registered at restore",
        ),
        Ok(_) => Feature::new(
            "rseq",
            Status::Ok,
            "PTRACE_GET_RSEQ_CONFIGURATION works; this libc registered no rseq area",
            "rseq registrations are dumped and re-registered at restore",
        ),
        Err(e) => {
            let (status, meaning) = match errno_of(&e) {
                // An older kernel has no such request: without rseq at all that is harmless.
                Some(Errno::EIO) if !std::path::Path::new("/proc/self/rseq").exists() => (
                    Status::Limited,
                    "the kernel cannot report rseq registrations; a process using rseq may crash after restore",
                ),
                _ => (
                    Status::Missing,
                    "a process using rseq (glibc 2.35+ does) would crash after restore",
                ),
            };
            Feature::new("rseq", status, e.to_string(), meaning)
        }
    }
}

/// Written by the probe into its child's copy of this page.
static PROBE_WORD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static PROBE_MARK: [u8; 16] = *b"ckpt check probe";

fn process_memory(child: &ProbeChild) -> Feature {
    let pid = child.pid();
    let mut got = [0u8; 16];
    let read = crate::mem::read(pid, PROBE_MARK.as_ptr() as u64, &mut got);
    let word = &PROBE_WORD as *const _ as u64;
    let val = 0x636b_7074_u64.to_le_bytes();
    let wrote = crate::mem::write(pid, word, &val).and_then(|_| {
        let mut back = [0u8; 8];
        crate::mem::read(pid, word, &mut back).map(|_| back)
    });
    match (read, wrote) {
        (Ok(()), Ok(back)) if got == PROBE_MARK && back == val => Feature::new(
            "process-vm",
            Status::Ok,
            "process_vm_readv and process_vm_writev on a traced child",
            "memory is copied out at dump and in at restore in large batches",
        )
        .required(),
        (Err(e), _) | (_, Err(e)) => Feature::new(
            "process-vm",
            Status::Missing,
            e.to_string(),
            "ckpt cannot read or write another process's memory here",
        )
        .required(),
        _ => Feature::new(
            "process-vm",
            Status::Limited,
            "process_vm_readv/writev returned other bytes than the child holds",
            "memory copies cannot be trusted here",
        )
        .required(),
    }
}

/// pidfd_open(2).
pub fn pidfd_open(pid: Pid) -> Result<OwnedFd> {
    pidfd_open_with(pid, 0)
}

/// pidfd_open(2) with `flags` (PIDFD_NONBLOCK, PIDFD_THREAD).
pub fn pidfd_open_with(pid: Pid, flags: u32) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd; no memory is passed.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), flags) };
    let fd = Errno::result(r).map_err(|e| Error::sys(format!("pidfd_open({pid})"), e))?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// pidfd_getfd(2): a duplicate of fd `target` of the process behind `pidfd`.
pub fn pidfd_getfd(pidfd: &OwnedFd, target: RawFd) -> Result<OwnedFd> {
    // SAFETY: pidfd_getfd takes two fds and flags and returns a new fd; no memory is passed.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
    let fd = Errno::result(r).map_err(|e| Error::sys(format!("pidfd_getfd(fd {target})"), e))?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn pidfd(child: &ProbeChild) -> Feature {
    let pidfd =
        match pidfd_open(child.pid()) {
            Ok(p) => p,
            Err(e) => return Feature::new(
                "pidfd",
                Status::Missing,
                e.to_string(),
                "pipes, sockets and eventfds cannot be inspected without disturbing the process",
            ),
        };
    match pidfd_getfd(&pidfd, child.pipe_fd) {
        Ok(_dup) => Feature::new(
            "pidfd",
            Status::Ok,
            "pidfd_open and pidfd_getfd on a child",
            "fds behind pipes, sockets and eventfds can be taken and inspected from outside",
        ),
        Err(e) => Feature::new(
            "pidfd",
            Status::Limited,
            format!("pidfd_open works; {e}"),
            "fds behind pipes, sockets and eventfds cannot be taken from outside (needs 5.6+)",
        ),
    }
}

/// prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE): the size of struct prctl_mm_map the kernel expects.
pub fn prctl_mm_map_size() -> Result<u32> {
    let mut size: libc::c_uint = 0;
    // SAFETY: PR_SET_MM_MAP_SIZE only writes one unsigned int to the address passed, which
    // is `size`, live for the call.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_MM,
            libc::PR_SET_MM_MAP_SIZE as libc::c_ulong,
            &mut size as *mut libc::c_uint as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    Errno::result(r).map_err(|e| Error::sys("prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE)", e))?;
    Ok(size)
}

fn prctl_mm_map(caps: &CapSet) -> Feature {
    match prctl_mm_map_size() {
        Ok(PRCTL_MM_MAP_SIZE) if caps.checkpoint_restore() => Feature::new(
            "prctl-mm-map",
            Status::Ok,
            format!("PR_SET_MM_MAP_SIZE = {PRCTL_MM_MAP_SIZE}"),
            "restore can set brk, arg/env areas, auxv and /proc/PID/exe in one call",
        )
        .required(),
        Ok(PRCTL_MM_MAP_SIZE) => Feature::new(
            "prctl-mm-map",
            Status::Limited,
            format!("PR_SET_MM_MAP_SIZE = {PRCTL_MM_MAP_SIZE}, but no CAP_CHECKPOINT_RESTORE"),
            "restore cannot set /proc/PID/exe of the restored process",
        )
        .required(),
        Ok(n) => Feature::new(
            "prctl-mm-map",
            Status::Missing,
            format!("PR_SET_MM_MAP_SIZE = {n}, ckpt passes {PRCTL_MM_MAP_SIZE}"),
            "the kernel's prctl_mm_map differs: restore's PR_SET_MM_MAP would be refused",
        )
        .required(),
        Err(e) => Feature::new(
            "prctl-mm-map",
            Status::Missing,
            format!("{e} (kernel without CONFIG_CHECKPOINT_RESTORE?)"),
            "restore cannot set brk, arg/env areas, auxv and /proc/PID/exe",
        )
        .required(),
    }
}

/// The special mappings of the calling process, in address order: (name, start, end).
pub fn own_special_mappings() -> Vec<(String, u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    parse_special_mappings(&text)
}

pub fn parse_special_mappings(maps: &str) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut it = line.split_whitespace();
        let Some(range) = it.next() else { continue };
        let name = it.nth(4).unwrap_or("");
        if !(name.starts_with('[') && name.ends_with(']')) {
            continue;
        }
        if !matches!(name, "[vvar]" | "[vvar_vclock]" | "[vdso]" | "[vsyscall]") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
            out.push((name.to_string(), a, b));
        }
    }
    out
}

fn kib(n: u64) -> String {
    format!("{} KiB", n / 1024)
}

fn vdso() -> Feature {
    let parts = own_special_mappings();
    let vdso_parts: Vec<&(String, u64, u64)> =
        parts.iter().filter(|p| p.0 != "[vsyscall]").collect();
    let desc: Vec<String> = parts
        .iter()
        .map(|(n, a, b)| format!("{n} {}", kib(b.saturating_sub(*a))))
        .collect();
    let contiguous = vdso_parts.windows(2).all(|w| w[0].2 == w[1].1);
    let has_vdso = vdso_parts.iter().any(|p| p.0 == "[vdso]");
    if !has_vdso {
        return Feature::new(
            "vdso",
            Status::Missing,
            if desc.is_empty() {
                "no [vdso] in /proc/self/maps (booted with vdso=0?)".to_string()
            } else {
                format!("{}; no [vdso]", desc.join(", "))
            },
            "dump injects syscalls through the vDSO's syscall instruction: nothing can be dumped",
        )
        .required();
    }
    let layout = if contiguous {
        "one block"
    } else {
        "not contiguous"
    };
    Feature::new(
        "vdso",
        if contiguous {
            Status::Ok
        } else {
            Status::Limited
        },
        format!("{} ({layout})", desc.join(", ")),
        if contiguous {
            "images restore on this exact kernel build (the vDSO is compared byte for byte)"
        } else {
            "the vDSO parts are apart: restore places them as one block and may refuse"
        },
    )
}

/// A mount from /proc/self/mountinfo: (mount point, fs type, super options).
fn mounts() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    parse_mountinfo(&text)
}

pub fn parse_mountinfo(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mnt) = left.split_whitespace().nth(4) else {
            continue;
        };
        let mut r = right.split_whitespace();
        let fstype = r.next().unwrap_or("");
        let _source = r.next();
        let opts = r.next().unwrap_or("");
        out.push((unescape_octal(mnt), fstype.to_string(), opts.to_string()));
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
pub(crate) fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// First non-root cgroup (up to two levels down) holding a `cgroup.freeze` file.
fn find_freeze_file(root: &str) -> Option<std::path::PathBuf> {
    let mut dirs = vec![(std::path::PathBuf::from(root), 0)];
    while let Some((d, depth)) = dirs.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let p = e.path();
            if p.join("cgroup.freeze").exists() {
                return Some(p.join("cgroup.freeze"));
            }
            if depth < 1 {
                dirs.push((p, depth + 1));
            }
        }
    }
    None
}

fn cgroup_freezer() -> Feature {
    let all = mounts();
    let v1 = all
        .iter()
        .find(|(_, t, o)| t == "cgroup" && o.split(',').any(|x| x == "freezer"))
        .map(|(m, _, _)| m.clone());
    let v2 = all
        .iter()
        .find(|(_, t, _)| t == "cgroup2")
        .map(|(m, _, _)| m.clone());
    let mut parts = Vec::new();
    if let Some(m) = &v1 {
        parts.push(format!("v1 freezer at {m}"));
    }
    let mut v2_freeze = false;
    if let Some(m) = &v2 {
        match find_freeze_file(m) {
            Some(p) => {
                v2_freeze = true;
                parts.push(format!("v2 at {m} ({} exists)", p.display()))
            }
            None => parts.push(format!(
                "v2 mounted at {m} (no child cgroup to confirm cgroup.freeze)"
            )),
        }
    }
    let meaning = "a dump can freeze a whole cgroup so no task escapes by forking (used once \
                   process trees are supported)";
    if v1.is_some() || v2_freeze {
        Feature::new("cgroup-freezer", Status::Ok, parts.join("; "), meaning)
    } else if v2.is_some() {
        Feature::new("cgroup-freezer", Status::Limited, parts.join("; "), meaning)
    } else {
        Feature::new(
            "cgroup-freezer",
            Status::Missing,
            "no v1 freezer and no cgroup2 mount",
            "trees can only be stopped task by task with ptrace (a forking tree may race)",
        )
    }
}

/// CONFIG_X from /proc/config.gz if the kernel exposes it: Some(true/false), None = unknown.
fn kernel_config(name: &str) -> Option<bool> {
    // /proc/config.gz is gzip; decompressing needs a crate we do not carry. /boot/config-*
    // is plain text where distributions install it.
    let rel = nix::sys::utsname::uname().ok()?;
    let path = format!("/boot/config-{}", rel.release().to_string_lossy());
    let text = std::fs::read_to_string(path).ok()?;
    let set = format!("{name}=y");
    let unset = format!("# {name} is not set");
    for line in text.lines() {
        if line == set {
            return Some(true);
        }
        if line == unset {
            return Some(false);
        }
    }
    None
}

/// Whether a page this process just wrote reads as soft-dirty (bit 55 of its pagemap
/// entry). A new or written page is always soft-dirty when CONFIG_MEM_SOFT_DIRTY is on;
/// the bit is never set when it is off. Reading pagemap changes nothing.
pub fn soft_dirty_works() -> Result<Option<bool>> {
    let buf = std::hint::black_box(vec![0x5au8; 3 * 4096]);
    let addr = buf.as_ptr() as u64;
    let page = (addr + 4095) & !4095;
    let f = std::fs::File::open("/proc/self/pagemap")
        .map_err(|e| Error::io("/proc/self/pagemap", e))?;
    let mut e = [0u8; 8];
    f.read_exact_at(&mut e, page / 4096 * 8)
        .map_err(|e| Error::io("/proc/self/pagemap", e))?;
    drop(buf);
    let entry = u64::from_le_bytes(e);
    if entry & (1 << 63) == 0 {
        return Ok(None);
    }
    Ok(Some(entry & (1 << 55) != 0))
}

fn soft_dirty(uffd: &Uffd, scan: &Scan) -> Feature {
    let alt = if uffd.wp_async && scan.works {
        "pre-copy dirty tracking will use userfaultfd write-protect (async) + PAGEMAP_SCAN instead"
    } else {
        "and no userfaultfd WP-async + PAGEMAP_SCAN either: live migration can only stop-and-copy"
    };
    let config = match kernel_config("CONFIG_MEM_SOFT_DIRTY") {
        Some(true) => "; kernel config says CONFIG_MEM_SOFT_DIRTY=y",
        Some(false) => "; kernel config says CONFIG_MEM_SOFT_DIRTY is not set",
        None => "",
    };
    match soft_dirty_works() {
        Ok(Some(true)) => Feature::new(
            "soft-dirty",
            Status::Ok,
            format!("a freshly written page has pagemap bit 55 set{config}"),
            "pre-copy migration can track written pages with soft-dirty bits",
        ),
        Ok(Some(false)) => Feature::new(
            "soft-dirty",
            Status::Missing,
            format!(
                "a freshly written page has pagemap bit 55 clear (CONFIG_MEM_SOFT_DIRTY off){config}"
            ),
            alt,
        ),
        Ok(None) => Feature::new(
            "soft-dirty",
            Status::Limited,
            format!("the probe page was not present in pagemap; not determined{config}"),
            alt,
        ),
        Err(e) => Feature::new("soft-dirty", Status::Missing, e.to_string(), alt),
    }
}

struct Uffd {
    feature: Feature,
    wp_async: bool,
}

/// Which way `dump --pre-dump` / `--prev-images-dir` would track writes here.
fn dirty_tracking(uffd: &Uffd, scan: &Scan, soft_dirty: bool) -> Feature {
    if uffd.wp_async && scan.works {
        return Feature::new(
            "dirty-tracking",
            Status::Ok,
            "userfaultfd write-protect (async) + PAGEMAP_SCAN",
            "dump --pre-dump and --prev-images-dir (incremental dumps) work",
        );
    }
    Feature::new(
        "dirty-tracking",
        Status::Missing,
        if soft_dirty {
            "soft-dirty only: ckpt tracks writes with userfaultfd WP-async + PAGEMAP_SCAN (6.7+)"
        } else {
            "neither soft-dirty nor userfaultfd WP-async + PAGEMAP_SCAN"
        },
        "dump --pre-dump and --prev-images-dir are refused; dumps copy everything while stopped",
    )
}

#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

/// userfaultfd(2) + UFFDIO_API with no feature requested: the kernel answers with every
/// feature it supports.
pub fn userfaultfd_features() -> Result<u64> {
    // SAFETY: userfaultfd takes flags only and returns a new fd; no memory is passed.
    let r = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    let fd = Errno::result(r).map_err(|e| Error::sys("userfaultfd(O_CLOEXEC|O_NONBLOCK)", e))?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let mut api = UffdioApi {
        api: UFFD_API,
        ..Default::default()
    };
    // SAFETY: UFFDIO_API reads and writes one struct uffdio_api (24 bytes, matching
    // UffdioApi's repr(C) layout) at the pointer, which is live for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API, &mut api as *mut UffdioApi) };
    Errno::result(r).map_err(|e| Error::sys("ioctl(UFFDIO_API)", e))?;
    Ok(api.features)
}

fn userfaultfd() -> Uffd {
    match userfaultfd_features() {
        Ok(f) => {
            let names: Vec<&str> = UFFD_FEATURES
                .iter()
                .filter(|(b, _)| f & b != 0)
                .map(|(_, n)| *n)
                .collect();
            let wp_async = f & UFFD_FEATURE_WP_ASYNC != 0;
            let lazy = f & UFFD_LAZY_NEEDS == UFFD_LAZY_NEEDS;
            let detail = format!("features {f:#x}: {}", names.join(" "));
            let (status, meaning) = match (wp_async, lazy) {
                (true, true) => (
                    Status::Ok,
                    "lazy restore (post-copy) and write-protect dirty tracking (WP async) are possible",
                ),
                (false, true) => (
                    Status::Limited,
                    "lazy restore is possible; no WP async, so no userfaultfd dirty tracking (needs 6.7+)",
                ),
                (_, false) => (
                    Status::Limited,
                    "fork/remap/remove/unmap events missing: lazy restore is not possible",
                ),
            };
            Uffd {
                feature: Feature::new("userfaultfd", status, detail, meaning),
                wp_async,
            }
        }
        Err(e) => {
            let hint = if errno_of(&e) == Some(Errno::EPERM) {
                " (vm.unprivileged_userfaultfd is 0 and CAP_SYS_PTRACE is absent)"
            } else {
                ""
            };
            Uffd {
                feature: Feature::new(
                    "userfaultfd",
                    Status::Missing,
                    format!("{e}{hint}"),
                    "no lazy restore and no userfaultfd dirty tracking",
                ),
                wp_async: false,
            }
        }
    }
}

struct Scan {
    feature: Feature,
    works: bool,
}

use crate::proc::PmScanArg;

/// The PAGEMAP_SCAN ioctl on /proc/self/pagemap over an empty range: Ok if the kernel
/// knows the ioctl (6.7+), ENOTTY if not. Nothing is scanned or changed.
pub fn pagemap_scan_empty() -> Result<()> {
    let f = std::fs::File::open("/proc/self/pagemap")
        .map_err(|e| Error::io("/proc/self/pagemap", e))?;
    let mut arg = PmScanArg {
        size: std::mem::size_of::<PmScanArg>() as u64,
        return_mask: PAGE_IS_PRESENT,
        ..Default::default()
    };
    // SAFETY: PAGEMAP_SCAN reads one struct pm_scan_arg (96 bytes, PmScanArg's repr(C)
    // layout) and writes its walk_end; vec is null with vec_len 0, and the range is empty,
    // so the kernel writes nothing else.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), PAGEMAP_SCAN, &mut arg as *mut PmScanArg) };
    Errno::result(r).map_err(|e| Error::sys("ioctl(PAGEMAP_SCAN) on /proc/self/pagemap", e))?;
    Ok(())
}

fn pagemap_scan() -> Scan {
    match pagemap_scan_empty() {
        Ok(()) => Scan {
            feature: Feature::new(
                "pagemap-scan",
                Status::Ok,
                "PAGEMAP_SCAN ioctl on /proc/self/pagemap (empty range)",
                "written pages can be found in one call per scan instead of reading pagemap",
            ),
            works: true,
        },
        Err(e) => Scan {
            feature: Feature::new(
                "pagemap-scan",
                Status::Missing,
                if errno_of(&e) == Some(Errno::ENOTTY) {
                    format!("{e} (kernel before 6.7)")
                } else {
                    e.to_string()
                },
                "dirty pages must be found by reading pagemap entry by entry",
            ),
            works: false,
        },
    }
}

fn tcp_repair() -> Feature {
    use nix::sys::socket::{setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType};
    let s = match socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) {
        Ok(s) => s,
        Err(e) => {
            return Feature::new(
                "tcp-repair",
                Status::Missing,
                format!("socket(AF_INET, SOCK_STREAM): {e}"),
                "no IPv4 TCP here",
            )
        }
    };
    match setsockopt(&s, sockopt::TcpRepair, &1) {
        Ok(()) => Feature::new(
            "tcp-repair",
            Status::Ok,
            "TCP_REPAIR on a fresh socket",
            "established TCP connections can be checkpointed (dump --tcp-established)",
        ),
        Err(Errno::EPERM) => Feature::new(
            "tcp-repair",
            Status::Missing,
            "TCP_REPAIR: EPERM (needs CAP_NET_ADMIN)",
            "established TCP connections cannot be checkpointed",
        ),
        Err(e) => Feature::new(
            "tcp-repair",
            Status::Missing,
            format!("TCP_REPAIR: {e}"),
            "established TCP connections cannot be checkpointed",
        ),
    }
}

/// nf_tables, which locks connections during a `--tcp-established` dump (netlink
/// messages of ckpt's own, `nft.rs`): the inet tables listed; nothing is changed.
fn tcp_lock() -> Feature {
    match crate::nft::available() {
        Ok(()) => Feature::new(
            "tcp-lock",
            Status::Ok,
            "nf_tables listed its inet tables (NETLINK_NETFILTER)",
            "connections are locked with an nftables table while they are checkpointed",
        ),
        Err(e) => Feature::new(
            "tcp-lock",
            Status::Missing,
            format!("{e} (no nf_tables, or no CAP_NET_ADMIN)"),
            "dump --tcp-established cannot lock connections, so it fails",
        ),
    }
}

/// Sends one SOCK_DIAG_BY_FAMILY dump request matching no socket (states = 0) and reads
/// the answer: Ok if the family's diag module answered, its errno if not.
fn sock_diag_query(sock: &OwnedFd, family: u8, protocol: u8) -> std::result::Result<(), Errno> {
    use nix::sys::socket::{recv, sendto, MsgFlags, NetlinkAddr};
    let payload: Vec<u8> = if family == libc::AF_UNIX as u8 {
        // struct unix_diag_req: family, protocol, pad, states, ino, show, cookie[2]
        let mut p = vec![0u8; 24];
        p[0] = family;
        p
    } else {
        // struct inet_diag_req_v2: family, protocol, ext, pad, states, inet_diag_sockid (48)
        let mut p = vec![0u8; 56];
        p[0] = family;
        p[1] = protocol;
        p
    };
    let msg = crate::unix::diag_request(&payload);
    sendto(
        sock.as_raw_fd(),
        &msg,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut buf = vec![0u8; 16384];
    let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())?;
    if n < 16 {
        return Err(Errno::EBADMSG);
    }
    let ty = u16::from_ne_bytes([buf[4], buf[5]]);
    match ty {
        NLMSG_DONE | SOCK_DIAG_BY_FAMILY => Ok(()),
        NLMSG_ERROR if n >= 20 => {
            let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            if err == 0 {
                Ok(())
            } else {
                Err(Errno::from_raw(-err))
            }
        }
        _ => Err(Errno::EBADMSG),
    }
}

fn sock_diag() -> Feature {
    use nix::sys::socket::{setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType};
    let open = || {
        let s = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            nix::sys::socket::SockProtocol::NetlinkSockDiag,
        )?;
        setsockopt(
            &s,
            sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(1, 0),
        )?;
        Ok::<_, Errno>(s)
    };
    let s = match open() {
        Ok(s) => s,
        Err(e) => {
            return Feature::new(
                "sock-diag",
                Status::Missing,
                format!("socket(AF_NETLINK, NETLINK_SOCK_DIAG): {e}"),
                "sockets cannot be identified or dumped",
            )
        }
    };
    let families = [
        ("unix", libc::AF_UNIX as u8, 0u8),
        ("tcp", libc::AF_INET as u8, libc::IPPROTO_TCP as u8),
        ("udp", libc::AF_INET as u8, libc::IPPROTO_UDP as u8),
    ];
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for (name, fam, proto) in families {
        match sock_diag_query(&s, fam, proto) {
            Ok(()) => ok.push(name.to_string()),
            Err(e) => bad.push(format!("{name}: {e}")),
        }
    }
    let detail = if bad.is_empty() {
        format!("NETLINK_SOCK_DIAG answers for {}", ok.join(", "))
    } else {
        format!(
            "NETLINK_SOCK_DIAG answers for {}; not for {}",
            if ok.is_empty() {
                "none".into()
            } else {
                ok.join(", ")
            },
            bad.join(", ")
        )
    };
    let status = if bad.is_empty() {
        Status::Ok
    } else if ok.is_empty() {
        Status::Missing
    } else {
        Status::Limited
    };
    Feature::new(
        "sock-diag",
        status,
        detail,
        "sockets can be identified and their peers matched (when ckpt supports sockets)",
    )
}

fn time_ns() -> Feature {
    if std::path::Path::new("/proc/self/ns/time").exists() {
        Feature::new(
            "time-ns",
            Status::Ok,
            "/proc/self/ns/time exists",
            "a restored container can keep its monotonic and boot clocks (when ckpt supports namespaces)",
        )
    } else {
        Feature::new(
            "time-ns",
            Status::Missing,
            "no /proc/self/ns/time (kernel before 5.6 or CONFIG_TIME_NS off)",
            "CLOCK_MONOTONIC jumps for a process restored after a reboot or on another host",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_parse() {
        let c = CapSet::parse("Uid:\t0\t0\t0\t0\nCapEff:\t000001fffeffffff\n");
        assert_eq!(c.uid, 0);
        assert!(c.has(CAP_CHECKPOINT_RESTORE));
        assert!(c.has(CAP_SYS_ADMIN));
        assert!(!c.has(CAP_SYS_RESOURCE));
        assert!(!c.has(64));
    }

    #[test]
    fn special_mappings_parse() {
        let maps = "7ffd1000-7ffd5000 r--p 00000000 00:00 0                          [vvar]\n\
                    7ffd5000-7ffd7000 r--p 00000000 00:00 0                          [vvar_vclock]\n\
                    7ffd7000-7ffd9000 r-xp 00000000 00:00 0                          [vdso]\n\
                    55d0-55e0 rw-p 00000000 00:00 0 [heap]\n";
        let v = parse_special_mappings(maps);
        assert_eq!(v.len(), 3);
        assert_eq!(v[2], ("[vdso]".to_string(), 0x7ffd7000, 0x7ffd9000));
    }

    #[test]
    fn mountinfo_parse() {
        let t = "35 25 0:30 / /sys/fs/cgroup/freezer rw,nosuid - cgroup cgroup rw,freezer\n\
                 40 25 0:35 / /sys/fs/cgroup/my\\040dir rw - cgroup2 cgroup2 rw\n";
        let m = parse_mountinfo(t);
        assert_eq!(m[0].0, "/sys/fs/cgroup/freezer");
        assert_eq!(m[0].2, "rw,freezer");
        assert_eq!(m[1].0, "/sys/fs/cgroup/my dir");
        assert_eq!(m[1].1, "cgroup2");
    }

    #[test]
    fn side_effect_free_probes_run() {
        // These need no privilege beyond what the test runner has; they must not panic.
        let _ = soft_dirty_works();
        let _ = pagemap_scan_empty();
        let _ = prctl_mm_map_size();
        let _ = own_special_mappings();
    }
}
