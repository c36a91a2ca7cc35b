//! Running syscalls inside a stopped tracee.
//!
//! Two ways in, both measured on this kernel (../shared/notes/restore-facts.md):
//! - `Via::Trampoline`: a `syscall; int3` pair ckpt placed in the task; one call is a
//!   SETREGS, a CONT and the int3's SIGTRAP stop (11-36 µs).
//! - `Via::SyscallInsn`: any existing `syscall` instruction (the vDSO has some), driven
//!   with PTRACE_SYSCALL to the syscall-exit stop. Twice the stops, but nothing is poked
//!   and no int3 runs, so a target's blocked or ignored SIGTRAP is never reset by the
//!   kernel (force_sig resets it to SIG_DFL).
//!
//! Every call runs with orig_rax = -1 so the kernel applies no syscall-restart logic to
//! the registers ckpt sets.

use crate::error::{Error, Result};
use crate::ptrace::{self, Stop};
use crate::regs::Regs;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Address of `0f 05 cc`.
    Trampoline(u64),
    /// Address of an existing `0f 05`.
    SyscallInsn(u64),
}

/// `pid` is in the pid namespace of the calling process (two link reads, no cache: a
/// forked ckpt may be in another one), so its own pid is the one the caller knows.
fn in_callers_pid_ns(pid: Pid) -> bool {
    let link = |path: String| std::fs::read_link(path).ok();
    let own = link("/proc/self/ns/pid".into());
    own.is_some() && link(format!("/proc/{pid}/ns/pid")) == own
}

/// A stopped tracee that ckpt runs syscalls in. Keeps the registers it found, so the
/// task can be put back exactly as it was.
pub struct Remote {
    pid: Pid,
    via: Via,
    base: Regs,
    /// Number of syscalls injected, for the logs.
    pub calls: u64,
    /// Number of times the task was resumed and waited for (each a round trip through
    /// the scheduler: what an injection costs), for the logs.
    pub stops: u64,
    /// The task's pid in its own pid namespace (`batch`), once read.
    own_pid: Option<i32>,
    /// SIGTRAPs someone else sent during the calls (raw 128-byte siginfo): kept out of
    /// the way of the trampoline's own, for the caller to queue again.
    external_traps: Vec<[u8; 128]>,
}

impl Remote {
    pub fn new(pid: Pid, via: Via) -> Result<Self> {
        let base = ptrace::get_regs(pid)?;
        Ok(Remote {
            pid,
            via,
            base,
            calls: 0,
            stops: 0,
            own_pid: None,
            external_traps: Vec::new(),
        })
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    pub fn via(&self) -> Via {
        self.via
    }

    pub fn set_via(&mut self, via: Via) {
        self.via = via;
    }

    /// The registers the task had when this Remote was made.
    pub fn base_regs(&self) -> &Regs {
        &self.base
    }

    /// Runs one syscall and returns the raw result (a negative value is -errno). A
    /// requested abort ([`crate::abort`]) fails it before the task is touched.
    pub fn syscall_raw(&mut self, nr: i64, args: &[u64]) -> Result<i64> {
        self.run(self.via, nr, args)
    }

    /// `syscall_raw` through `via`.
    fn run(&mut self, via: Via, nr: i64, args: &[u64]) -> Result<i64> {
        crate::abort::check()?;
        let mut r = self.base;
        r.rax = nr as u64;
        let a = |i: usize| args.get(i).copied().unwrap_or(0);
        r.rdi = a(0);
        r.rsi = a(1);
        r.rdx = a(2);
        r.r10 = a(3);
        r.r8 = a(4);
        r.r9 = a(5);
        r.orig_rax = u64::MAX;
        self.calls += 1;
        tracing::trace!(pid = %self.pid, nr, "injected");
        match via {
            Via::Trampoline(ip) => {
                self.stops += 1;
                r.rip = ip;
                ptrace::set_regs(self.pid, &r)?;
                ptrace::cont(self.pid, None)?;
                self.wait_for(|s| s == Stop::Signal(libc::SIGTRAP), nr, false)?;
            }
            Via::SyscallInsn(ip) => {
                self.stops += 2;
                r.rip = ip;
                ptrace::set_regs(self.pid, &r)?;
                ptrace::syscall(self.pid)?;
                self.wait_for(|s| s == Stop::Syscall, nr, true)?;
                ptrace::syscall(self.pid)?;
                self.wait_for(|s| s == Stop::Syscall, nr, true)?;
            }
        }
        let out = ptrace::get_regs(self.pid)?;
        Ok(out.rax as i64)
    }

    /// Runs one syscall; a -errno result becomes an error that says `what`.
    pub fn syscall(&mut self, what: impl FnOnce() -> String, nr: i64, args: &[u64]) -> Result<u64> {
        let r = self.syscall_raw(nr, args)?;
        if (-4095..0).contains(&r) {
            return Err(Error::sys(
                format!("{} (injected into pid {})", what(), self.pid),
                Errno::from_raw(-r as i32),
            ));
        }
        Ok(r as u64)
    }

    /// Enters syscall `nr` and stops at its exit, leaving the task in a syscall-exit stop
    /// where its final registers can be set without the task running another instruction
    /// of ours (the last munmap of a trampoline).
    pub fn syscall_to_exit(&mut self, nr: i64, args: &[u64], ip: u64) -> Result<i64> {
        // Driven to its syscall-exit stop, a call through a syscall instruction ends there.
        self.run(Via::SyscallInsn(ip), nr, args)
    }

    /// The SIGTRAPs sent from outside during the calls so far, as raw siginfo, in the
    /// order they came; they were not delivered.
    pub fn take_external_traps(&mut self) -> Vec<[u8; 128]> {
        std::mem::take(&mut self.external_traps)
    }

    fn wait_for(&mut self, want: impl Fn(Stop) -> bool, nr: i64, sysstep: bool) -> Result<()> {
        loop {
            let s = ptrace::wait(self.pid)?;
            // The int3 raises SIGTRAP with si_code SI_KERNEL; a kill() or tgkill() from
            // outside has SI_USER, SI_TKILL, ...: taken for the int3, it would end the call
            // before (or without) its syscall and vanish.
            if s == Stop::Signal(libc::SIGTRAP) {
                let info = siginfo(self.pid)?;
                if i32::from_le_bytes(info[8..12].try_into().expect("4 bytes")) != libc::SI_KERNEL {
                    tracing::info!(
                        pid = %self.pid,
                        "a SIGTRAP sent from outside arrived during an injected syscall: kept for after the restore"
                    );
                    self.external_traps.push(info);
                    ptrace::resume(self.pid, sysstep, None)?;
                    continue;
                }
            }
            if want(s) {
                return Ok(());
            }
            match s {
                Stop::Exited(_) | Stop::Killed(_) => {
                    return Err(Error::Other(format!(
                        "pid {} died during injected syscall {nr} ({s:?})",
                        self.pid
                    )))
                }
                // A group-stop (or a stray interrupt): resume; the stop stays in effect
                // and the task re-enters it when it is detached.
                Stop::EventStop(_) => ptrace::resume(self.pid, sysstep, None)?,
                Stop::Signal(sig) if is_stop_signal(sig) => {
                    if ptrace::in_group_stop(self.pid)? {
                        ptrace::resume(self.pid, sysstep, None)?;
                    } else {
                        // A SIGSTOP cannot be blocked: someone wants the task stopped.
                        // Resuming without it would discard it; resumed with it, the
                        // kernel starts the group-stop (reported next, see above), which
                        // outlives our injections and takes effect at the detach.
                        tracing::info!(
                            pid = %self.pid,
                            "{} arrived during an injected syscall: passed on, the task stops when released",
                            Signal::try_from(sig).map_or("stop signal", |s| s.as_str())
                        );
                        ptrace::resume(self.pid, sysstep, Signal::try_from(sig).ok())?;
                    }
                }
                other => {
                    return Err(Error::Other(format!(
                        "pid {}: unexpected stop {other:?} during injected syscall {nr} at {:?}",
                        self.pid, self.via
                    )))
                }
            }
        }
    }

    /// Puts back the registers the task had when this Remote was made.
    pub fn restore_regs(&self) -> Result<()> {
        ptrace::set_regs(self.pid, &self.base)
    }
}

/// Machine code that runs a table of syscalls and then stops the task (x86-64):
///
/// ```text
///  0: test r13, r13 ; jz 0x37          r12: the table, r13: entries left
///  5: mov rax, [r12] ; mov rdi, [r12+8] ; mov rsi, [r12+16] ; mov rdx, [r12+24]
///     mov r10, [r12+32] ; mov r8, [r12+40] ; mov r9, [r12+48]
/// 27: syscall ; mov [r12+56], rax ; add r12, 64 ; dec r13 ; jmp 0
/// 37: getpid ; mov r14, rax ; gettid ; mov rsi, rax ; mov rdi, r14
/// 4e: mov eax, 234 (tgkill) ; mov edx, 19 (SIGSTOP) ; syscall ; jmp 0x37
/// ```
///
/// The stop is a SIGSTOP the task sends itself (to its own ids as its pid namespace sees
/// them): every other signal is blocked while ckpt injects, and a SIGSTOP cannot be, nor
/// can its handler be changed. An int3 or a fault would be delivered by force_sig, which
/// resets a blocked handler to SIG_DFL. ckpt sees the signal-delivery stop and discards
/// the SIGSTOP (resuming with no signal), so no group-stop follows. Its one side effect:
/// a SIGCONT pending at that moment is dropped, as any SIGSTOP drops it. The init of a
/// pid namespace ignores a SIGSTOP from inside it: `Remote::batch` runs its calls one by
/// one instead.
pub const BATCH_CODE: [u8; 92] = [
    0x4d, 0x85, 0xed, 0x74, 0x32, 0x49, 0x8b, 0x04, 0x24, 0x49, 0x8b, 0x7c, 0x24, 0x08, 0x49, 0x8b,
    0x74, 0x24, 0x10, 0x49, 0x8b, 0x54, 0x24, 0x18, 0x4d, 0x8b, 0x54, 0x24, 0x20, 0x4d, 0x8b, 0x44,
    0x24, 0x28, 0x4d, 0x8b, 0x4c, 0x24, 0x30, 0x0f, 0x05, 0x49, 0x89, 0x44, 0x24, 0x38, 0x49, 0x83,
    0xc4, 0x40, 0x49, 0xff, 0xcd, 0xeb, 0xc9, 0xb8, 0x27, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x49, 0x89,
    0xc6, 0xb8, 0xba, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x48, 0x89, 0xc6, 0x4c, 0x89, 0xf7, 0xb8, 0xea,
    0x00, 0x00, 0x00, 0xba, 0x13, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xdb,
];
/// Where the task stands once `BATCH_CODE` has stopped it: right after its tgkill.
const BATCH_DONE: u64 = 0x5a;
/// Bytes per table entry: nr, six arguments, the result.
pub const BATCH_ENTRY: u64 = 64;

/// One syscall of a batch.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub nr: i64,
    pub args: [u64; 6],
}

impl Call {
    pub fn new(nr: i64, args: &[u64]) -> Call {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        Call { nr, args: a }
    }
}

impl Remote {
    /// Runs `calls` one by one (where a batch cannot), returning each raw result.
    pub fn each(&mut self, calls: &[Call]) -> Result<Vec<i64>> {
        calls
            .iter()
            .map(|c| self.syscall_raw(c.nr, &c.args))
            .collect()
    }

    /// Runs `calls` in one go with `BATCH_CODE` (already written at `code`, in memory
    /// the task may execute), the table at `table` (`calls.len() * BATCH_ENTRY` bytes of
    /// the task's writable memory), and returns each raw result (-errno on failure). One
    /// resume and one stop instead of one or two per call: on a busy machine each stop
    /// waits for the scheduler. The task's signals must all be blocked (see
    /// `BATCH_CODE`).
    /// The task's pid as it sees it itself: in its own, innermost, pid namespace.
    pub fn own_pid(&mut self) -> Result<i32> {
        if let Some(p) = self.own_pid {
            return Ok(p);
        }
        // In ckpt's own pid namespace (a link read) the pid is the one ckpt knows;
        // else the innermost of its status's NSpid (the costlier read).
        let p = if in_callers_pid_ns(self.pid) {
            self.pid.as_raw()
        } else {
            crate::ns::ns_pids(self.pid)?
                .last()
                .copied()
                .unwrap_or(self.pid.as_raw())
        };
        self.own_pid = Some(p);
        Ok(p)
    }

    pub fn batch(&mut self, code: u64, table: u64, calls: &[Call]) -> Result<Vec<i64>> {
        crate::abort::check()?;
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        // The pid the task's own tgkill names (and the siginfo then shows).
        let own = self.own_pid()?;
        if own == 1 {
            // A pid namespace's init ignores the SIGSTOP it sends itself.
            return self.each(calls);
        }
        let mut t = Vec::with_capacity(calls.len() * BATCH_ENTRY as usize);
        for c in calls {
            t.extend_from_slice(&(c.nr as u64).to_le_bytes());
            for a in c.args {
                t.extend_from_slice(&a.to_le_bytes());
            }
            t.extend_from_slice(&u64::MAX.to_le_bytes());
        }
        crate::mem::write(self.pid, table, &t)?;
        let mut r = self.base;
        r.rip = code;
        r.r12 = table;
        r.r13 = calls.len() as u64;
        r.orig_rax = u64::MAX;
        ptrace::set_regs(self.pid, &r)?;
        self.calls += calls.len() as u64;
        self.stops += 1;
        ptrace::cont(self.pid, None)?;
        loop {
            let s = ptrace::wait(self.pid)?;
            match s {
                Stop::Signal(libc::SIGSTOP) => {
                    let info = siginfo(self.pid)?;
                    let code_of = i32::from_le_bytes(info[8..12].try_into().expect("4 bytes"));
                    let from = i32::from_le_bytes(info[16..20].try_into().expect("4 bytes"));
                    let now = ptrace::get_regs(self.pid)?;
                    if code_of == libc::SI_TKILL && from == own && now.rip == code + BATCH_DONE {
                        break;
                    }
                    // Someone else wants the task stopped: passed on, as in `wait_for`.
                    if ptrace::in_group_stop(self.pid)? {
                        ptrace::cont(self.pid, None)?;
                    } else {
                        tracing::info!(
                            pid = %self.pid,
                            "SIGSTOP arrived during injected syscalls: passed on, the task stops when released"
                        );
                        ptrace::cont(self.pid, Some(Signal::SIGSTOP))?;
                    }
                }
                Stop::Signal(sig) if is_stop_signal(sig) => {
                    if ptrace::in_group_stop(self.pid)? {
                        ptrace::cont(self.pid, None)?;
                    } else {
                        ptrace::cont(self.pid, Signal::try_from(sig).ok())?;
                    }
                }
                Stop::Signal(libc::SIGTRAP) => {
                    // No int3 runs in a batch: a SIGTRAP was sent from outside (the
                    // restore's puppet leaves it unblocked). Kept for the caller to
                    // queue again, as in `wait_for`.
                    tracing::info!(
                        pid = %self.pid,
                        "a SIGTRAP sent from outside arrived during injected syscalls: kept for after the restore"
                    );
                    self.external_traps.push(siginfo(self.pid)?);
                    ptrace::cont(self.pid, None)?;
                }
                Stop::EventStop(_) => ptrace::cont(self.pid, None)?,
                Stop::Exited(_) | Stop::Killed(_) => {
                    return Err(Error::Other(format!(
                        "pid {} died during injected syscalls ({s:?})",
                        self.pid
                    )))
                }
                other => {
                    return Err(Error::Other(format!(
                        "pid {}: unexpected stop {other:?} during a batch of injected syscalls",
                        self.pid
                    )))
                }
            }
        }
        crate::mem::read(self.pid, table, &mut t)?;
        Ok((0..calls.len())
            .map(|i| {
                let o = i * BATCH_ENTRY as usize + 56;
                i64::from_le_bytes(t[o..o + 8].try_into().expect("8 bytes"))
            })
            .collect())
    }
}

/// PTRACE_GETSIGINFO of a task in a signal-delivery stop, as the raw 128 bytes that
/// rt_sigqueueinfo takes back.
fn siginfo(pid: Pid) -> Result<[u8; 128]> {
    let mut buf = [0u8; 128];
    // SAFETY: PTRACE_GETSIGINFO writes one siginfo_t (128 bytes on x86-64) to `buf`, which
    // is 128 bytes long.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_GETSIGINFO,
            pid.as_raw(),
            std::ptr::null_mut::<libc::c_void>(),
            buf.as_mut_ptr(),
        )
    };
    Errno::result(r).map_err(|e| Error::sys(format!("ptrace(GETSIGINFO) of pid {pid}"), e))?;
    Ok(buf)
}

fn is_stop_signal(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
    )
}
