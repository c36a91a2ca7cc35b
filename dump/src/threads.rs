//! The other threads of a multi-threaded process: seized and stopped after the leader,
//! checked for per-thread state that restore cannot give back, and asked (by injected
//! syscalls, one thread at a time) what only they can tell: their tid address and
//! sigaltstack.
//!
//! Seizing goes round /proc/PID/task until a listing finds no thread that is not stopped
//! yet: a thread can only be created by a running thread, so once every listed thread is
//! stopped, the list is final. A thread that exits before it stops is simply not part of
//! the dump. Facts: ../shared/notes/threads-facts.md.

use crate::seize::Seized;
use crate::{refuse, DumpError};
use ckpt_images::pb;
use ckpt_sys::inject::{Remote, Via};
use ckpt_sys::ptrace::{self, Options, Stop};
use ckpt_sys::regs::Regs;
use ckpt_sys::{mem, proc, process, Pid};
use nix::errno::Errno;
use nix::sys::signal::Signal;

/// Rounds of listing /proc/PID/task before a process that keeps making threads is
/// given up on.
const MAX_ROUNDS: usize = 64;
/// Signal-delivery stops let through per thread before giving up on its interrupt.
const MAX_SIGNALS: usize = 64;
const PR_GET_TID_ADDRESS: u64 = 40;
const PR_GET_SECUREBITS: u64 = 27;

/// A non-leader thread in ptrace-stop, owned by the dump like the leader in [`Seized`].
pub struct Stopped {
    pub tid: Pid,
    /// As found at the stop (rip moved out of an rseq critical section).
    pub regs: Regs,
    pub xsave: Vec<u8>,
    pub sigmask: u64,
    pub regs_changed: bool,
    pub sigmask_changed: bool,
    /// The thread's own CPU mask while it is pinned to ckpt's CPU for the queries.
    pub affinity_changed: Option<u64>,
    /// Its credentials differ from the leader's (recorded in its ThreadCore).
    pub own_creds: bool,
}

/// ckpt pinned to the CPU it runs on while it drives the threads' queries (each injected
/// call is a round trip between ckpt and the thread: ~11 µs on one CPU, ~30 µs across
/// two); its own mask is put back when dropped.
struct Pinned {
    own: u64,
    one: u64,
}

impl Pinned {
    /// None where the masks do not fit in 64 bits (more CPUs) or anything fails: the
    /// queries then simply run unpinned.
    fn here() -> Option<Pinned> {
        if std::thread::available_parallelism().map_or(true, |n| n.get() > 64) {
            return None;
        }
        let me = Pid::from_raw(0);
        let own = process::affinity(me).ok()?;
        let cpu = proc::stat(nix::unistd::getpid()).ok()?.processor?;
        let one = 1u64.checked_shl(cpu as u32)?;
        if own & one == 0 {
            return None;
        }
        process::set_affinity(me, one).ok()?;
        Some(Pinned { own, one })
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = process::set_affinity(Pid::from_raw(0), self.own);
    }
}

/// What a thread answered to the injected queries.
#[derive(Debug, Default, Clone)]
pub struct Answers {
    pub tid_address: u64,
    pub altstack: pb::SigAltStack,
    /// Asked only of a thread with credentials of its own.
    pub securebits: Option<u32>,
}

/// How a thread ended the wait for its stop.
enum Waited {
    Stopped,
    Gone,
}

pub fn options() -> Options {
    // nix has no name for SUSPEND_SECCOMP: the target's seccomp filters must not judge
    // the syscalls we inject.
    Options::PTRACE_O_TRACESYSGOOD | Options::from_bits_retain(libc::PTRACE_O_SUSPEND_SECCOMP)
}

/// Seizes every thread of `task`'s process but the leader (already stopped), then checks
/// them. On error, the threads stopped so far are in `task` and put back by its drop.
pub fn seize_rest(task: &mut Seized) -> Result<(), DumpError> {
    seize_all(task)?;
    check(task)
}

fn seize_all(task: &mut Seized) -> Result<(), DumpError> {
    let pid = task.pid;
    for _ in 0..MAX_ROUNDS {
        let new: Vec<Pid> = proc::tasks(pid)?
            .into_iter()
            .filter(|&t| t != pid && !task.threads.iter().any(|s| s.tid == t))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let mut seized = Vec::with_capacity(new.len());
        // Seized and interrupted while a v1 freezer held them: only their stops to wait.
        let (pre, new): (Vec<Pid>, Vec<Pid>) =
            new.into_iter().partition(|&t| crate::preseize::take(t));
        for t in new {
            match ptrace::seize(t, options()) {
                Ok(()) => seized.push(t),
                // Exited between the listing and the seize (EPERM: exiting right now).
                Err(e) if e.errno() == Some(Errno::ESRCH) || exited(pid, t) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // All interrupts first: the threads stop in parallel.
        let mut interrupted = pre;
        for t in seized {
            match ptrace::interrupt(t) {
                Ok(()) => interrupted.push(t),
                Err(e) if e.errno() == Some(Errno::ESRCH) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for t in interrupted {
            if let Waited::Stopped = wait_stop(pid, t)? {
                let mut regs = ptrace::get_regs(t)?;
                crate::rseq::fixup(t, &mut regs)?;
                task.threads.push(Stopped {
                    tid: t,
                    regs,
                    xsave: ptrace::get_xstate(t)?,
                    sigmask: ptrace::get_sigmask(t)?,
                    regs_changed: false,
                    sigmask_changed: false,
                    affinity_changed: None,
                    own_creds: false,
                });
            }
        }
    }
    Err(DumpError::Lost(format!(
        "pid {pid} kept creating threads through {MAX_ROUNDS} rounds of seizing"
    )))
}

/// Whether thread `tid` is gone or exiting (a zombie that is not reaped yet).
fn exited(pid: Pid, tid: Pid) -> bool {
    match proc::read_bytes(&format!("/proc/{pid}/task/{tid}/stat")) {
        Err(_) => true,
        Ok(b) => {
            let s = String::from_utf8_lossy(&b);
            let state = s
                .rfind(')')
                .and_then(|i| s[i + 1..].trim_start().chars().next());
            matches!(state, Some('Z' | 'X'))
        }
    }
}

/// Waits for thread `tid`'s PTRACE_EVENT_STOP, passing on a signal that was being
/// delivered. A thread that exits meanwhile is gone from the dump.
fn wait_stop(pid: Pid, tid: Pid) -> Result<Waited, DumpError> {
    for _ in 0..MAX_SIGNALS {
        match ptrace::wait_interruptible(tid)? {
            // A group-stop stops every thread: the leader's records it.
            Stop::EventStop(_) => return Ok(Waited::Stopped),
            Stop::Signal(sig) => ptrace::cont(tid, Signal::try_from(sig).ok())?,
            Stop::Exited(_) | Stop::Killed(_) => {
                tracing::debug!(%pid, %tid, "thread exited while being seized");
                return Ok(Waited::Gone);
            }
            other => {
                return Err(DumpError::Lost(format!(
                    "pid {pid}: thread {tid}: unexpected stop {other:?} while being seized"
                )))
            }
        }
    }
    Err(DumpError::Lost(format!(
        "pid {pid}: thread {tid}: more than {MAX_SIGNALS} signals arrived while being seized"
    )))
}

/// The lines of /proc/PID/task/TID/status that restore gives every thread from the
/// process: a thread whose lines differ from the leader's is refused. The credentials
/// (`CREDS_STATUS`) may differ: such a thread has them recorded and restored as its own.
const SHARED_STATUS: [&str; 9] = [
    "Uid:",
    "Gid:",
    "Groups:",
    "CapInh:",
    "CapPrm:",
    "CapEff:",
    "CapBnd:",
    "CapAmb:",
    "NoNewPrivs:",
];
const CREDS_STATUS: usize = 8;

/// Those lines of one thread's status, read raw (a full parse per thread costs more than
/// the seize itself with hundreds of threads).
fn shared_status(pid: Pid, tid: Pid) -> Result<Vec<String>, DumpError> {
    let text = proc::read_bytes(&format!("/proc/{pid}/task/{tid}/status"))?;
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| SHARED_STATUS.iter().any(|p| l.starts_with(p)))
        .map(str::to_string)
        .collect())
}

/// Per-thread state that restore gives every thread from the process (no_new_privs,
/// scheduling; seccomp is per thread, `seccomp.rs`): refused by name where a thread differs. A thread with
/// credentials of its own is marked to have them recorded.
fn check(task: &mut Seized) -> Result<(), DumpError> {
    let pid = task.pid;
    if task.threads.is_empty() {
        return Ok(());
    }
    let lead = shared_status(pid, pid)?;
    let lead_sched = (process::get_nice(pid)?, process::get_sched(pid)?);
    for t in &mut task.threads {
        let tid = t.tid;
        let mine = shared_status(pid, tid)?;
        for line in mine.iter().filter(|l| !lead.contains(l)) {
            let key = line.split(':').next().unwrap_or("");
            if SHARED_STATUS[..CREDS_STATUS]
                .iter()
                .any(|p| p.strip_suffix(':') == Some(key))
            {
                t.own_creds = true;
                continue;
            }
            let theirs = lead
                .iter()
                .find(|l| l.starts_with(key))
                .map_or("", |l| l.as_str());
            return Err(refuse(format!(
                "pid {pid}: thread {tid} has a {key} of its own ({}; the process: {}); \
                 per-thread {key} is not supported yet",
                squeeze(line),
                squeeze(theirs),
            )));
        }
        let sched = (process::get_nice(tid)?, process::get_sched(tid)?);
        if sched != lead_sched {
            return Err(refuse(format!(
                "pid {pid}: thread {tid} has its own scheduling (nice {}, policy {}, priority {}; \
                 the process: nice {}, policy {}, priority {}); per-thread scheduling is not \
                 supported yet",
                sched.0, sched.1 .0, sched.1 .1, lead_sched.0, lead_sched.1 .0, lead_sched.1 .1
            )));
        }
    }
    Ok(())
}

/// A status line with its tabs as single spaces, for a one-line message.
fn squeeze(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Runs the per-thread queries in every non-leader thread through the `syscall` at
/// `insn`, answers written at `slot` (32 bytes of the scratch page the leader mapped: the
/// memory is shared). Each thread has every signal blocked meanwhile and gets its
/// registers and mask back right after. Returns the answers in thread order and the
/// number of calls.
pub fn query(task: &mut Seized, insn: u64, slot: u64) -> Result<(Vec<Answers>, u64), DumpError> {
    let task_pid = task.pid();
    let mut out = Vec::with_capacity(task.threads.len());
    let mut calls = 0;
    let pinned = if task.threads.is_empty() {
        None
    } else {
        Pinned::here()
    };
    for t in &mut task.threads {
        let tid = t.tid;
        if let Some(p) = &pinned {
            let own = process::affinity(tid)?;
            if own != p.one {
                t.affinity_changed = Some(own);
                process::set_affinity(tid, p.one)?;
            }
        }
        t.sigmask_changed = true;
        ptrace::set_sigmask(tid, !0u64)?;
        let mut remote = Remote::new(tid, Via::SyscallInsn(insn))?;
        t.regs_changed = true;
        remote.syscall(
            || format!("prctl(PR_GET_TID_ADDRESS) in thread {tid}"),
            libc::SYS_prctl,
            &[PR_GET_TID_ADDRESS, slot],
        )?;
        remote.syscall(
            || format!("sigaltstack(NULL, &old) in thread {tid}"),
            libc::SYS_sigaltstack,
            &[0, slot + 8],
        )?;
        let securebits = if t.own_creds {
            Some(remote.syscall(
                || format!("prctl(PR_GET_SECUREBITS) in thread {tid}"),
                libc::SYS_prctl,
                &[PR_GET_SECUREBITS],
            )? as u32)
        } else {
            None
        };
        let numa = remote.syscall_raw(libc::SYS_get_mempolicy, &[slot + 32, 0, 0, 0, 0])?;
        calls += remote.calls;
        let mut b = [0u8; 36];
        mem::read(tid, slot, &mut b)?;
        if numa == 0 {
            let mode = i32::from_le_bytes(b[32..36].try_into().expect("4 bytes"));
            crate::task_state::numa_policy_is_default(
                &format!("pid {} thread {tid}", task_pid),
                mode,
            )?;
        }
        let u = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        out.push(Answers {
            tid_address: u(0),
            altstack: pb::SigAltStack {
                sp: u(8),
                flags: u(16) as u32,
                size: u(24),
            },
            securebits,
        });
        // Back as found, in the syscall-exit stop of the last query: the detach at
        // release runs the kernel's restart logic on them (as for the leader).
        ptrace::set_regs(tid, &t.regs)?;
        t.regs_changed = false;
        ptrace::set_sigmask(tid, t.sigmask)?;
        t.sigmask_changed = false;
        if let Some(own) = t.affinity_changed.take() {
            process::set_affinity(tid, own)?;
        }
    }
    Ok((out, calls))
}

impl Seized {
    /// Puts back what the dump changed in the non-leader threads and detaches them;
    /// returns the first error after trying them all.
    pub(crate) fn undo_threads(&mut self) -> Result<(), DumpError> {
        let mut first: Option<DumpError> = None;
        for t in self.threads.drain(..) {
            let mut step = |r: ckpt_sys::Result<()>| {
                if let Err(e) = r {
                    tracing::warn!(tid = %t.tid, "release: {e}");
                    first.get_or_insert(e.into());
                }
            };
            if t.regs_changed {
                step(ptrace::set_regs(t.tid, &t.regs));
            }
            if t.sigmask_changed {
                step(ptrace::set_sigmask(t.tid, t.sigmask));
            }
            if let Some(own) = t.affinity_changed {
                step(process::set_affinity(t.tid, own));
            }
            step(ptrace::detach(t.tid));
        }
        first.map_or(Ok(()), Err)
    }

    /// After SIGKILL: every traced thread must be reaped (with __WALL) before the leader
    /// is reported at all.
    pub(crate) fn reap_threads(&mut self) -> Result<(), DumpError> {
        // Whichever comes first: the last thread of a pid namespace's init to exit waits
        // (zap_pid_ns_processes) until every other task of the namespace is reaped, its
        // sibling threads included, which stay zombies until ckpt, their tracer, reaps
        // them; waiting for that thread first would wait for ever.
        let mut left: Vec<Pid> = self.threads.drain(..).map(|t| t.tid).collect();
        let mut stops = 0;
        while !left.is_empty() {
            let mut moved = false;
            let mut i = 0;
            while i < left.len() {
                match ptrace::try_wait(left[i]) {
                    Ok(None) => i += 1,
                    Ok(Some(Stop::Exited(_) | Stop::Killed(_))) => {
                        left.swap_remove(i);
                        moved = true;
                    }
                    Ok(Some(_)) => {
                        stops += 1;
                        if stops > MAX_SIGNALS * (left.len() + 1) {
                            return Err(DumpError::Lost(format!(
                                "thread {} keeps stopping after SIGKILL",
                                left[i]
                            )));
                        }
                        let _ = ptrace::cont(left[i], None);
                        moved = true;
                        i += 1;
                    }
                    // Already reaped (ECHILD): nothing left to wait for.
                    Err(e) if e.errno() == Some(Errno::ECHILD) => {
                        left.swap_remove(i);
                        moved = true;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if !moved {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        Ok(())
    }
}
