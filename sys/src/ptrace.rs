//! ptrace(2) for one task at a time. nix covers the common requests; the regsets and
//! queries it lacks are raw calls here.
//!
//! ptrace belongs to the thread that attached: every call for a task must come from the
//! same OS thread.

use crate::error::{Ctx, Error, Result};
use crate::regs::Regs;
use nix::errno::Errno;
use nix::sys::ptrace as np;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

pub use np::Options;

const NT_X86_XSTATE: libc::c_int = 0x202;
const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
/// Largest xsave area we accept (AVX-512 with AMX tiles is ~11 KiB).
pub const XSAVE_MAX: usize = 16384;

/// How a waited-for task stopped (or ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// PTRACE_INTERRUPT or group-stop under SEIZE (PTRACE_EVENT_STOP).
    EventStop(i32),
    /// Another ptrace event (clone, exec, exit...).
    Event(i32),
    /// Syscall entry or exit under PTRACE_O_TRACESYSGOOD.
    Syscall,
    /// Signal-delivery stop with this signal.
    Signal(i32),
    Exited(i32),
    Killed(i32),
}

/// PTRACE_TRACEME, then SIGSTOP to self: a restore seed hands itself to its parent.
pub fn traceme_and_stop() -> Result<()> {
    np::traceme().ctx(|| "ptrace(TRACEME)".to_string())?;
    nix::sys::signal::raise(Signal::SIGSTOP).ctx(|| "raise(SIGSTOP)".to_string())
}

pub fn seize(pid: Pid, opts: Options) -> Result<()> {
    np::seize(pid, opts).ctx(|| format!("ptrace(SEIZE) of pid {pid}"))
}

pub fn interrupt(pid: Pid) -> Result<()> {
    np::interrupt(pid).ctx(|| format!("ptrace(INTERRUPT) of pid {pid}"))
}

pub fn set_options(pid: Pid, opts: Options) -> Result<()> {
    np::setoptions(pid, opts).ctx(|| format!("ptrace(SETOPTIONS) of pid {pid}"))
}

pub fn cont(pid: Pid, sig: Option<Signal>) -> Result<()> {
    np::cont(pid, sig).ctx(|| format!("ptrace(CONT) of pid {pid}"))
}

pub fn syscall(pid: Pid) -> Result<()> {
    np::syscall(pid, None).ctx(|| format!("ptrace(SYSCALL) of pid {pid}"))
}

/// PTRACE_SYSCALL (`sysstep`) or PTRACE_CONT, delivering `sig` if the task sits in a
/// signal-delivery stop.
pub fn resume(pid: Pid, sysstep: bool, sig: Option<Signal>) -> Result<()> {
    if sysstep {
        np::syscall(pid, sig).ctx(|| format!("ptrace(SYSCALL) of pid {pid}"))
    } else {
        cont(pid, sig)
    }
}

/// Whether a task reported stopped with a stop signal is in a group-stop rather than a
/// signal-delivery stop (ptrace(2): PTRACE_GETSIGINFO fails with EINVAL in a group-stop).
/// Only a TRACEME tracee needs this; a seized one reports group-stops as
/// PTRACE_EVENT_STOP.
pub fn in_group_stop(pid: Pid) -> Result<bool> {
    match np::getsiginfo(pid) {
        Ok(_) => Ok(false),
        Err(Errno::EINVAL) => Ok(true),
        Err(e) => Err(Error::sys(format!("ptrace(GETSIGINFO) of pid {pid}"), e)),
    }
}

pub fn detach(pid: Pid) -> Result<()> {
    np::detach(pid, None).ctx(|| format!("ptrace(DETACH) of pid {pid}"))
}

pub fn event_msg(pid: Pid) -> Result<i64> {
    np::getevent(pid).ctx(|| format!("ptrace(GETEVENTMSG) of pid {pid}"))
}

/// Waits for `pid` (any kind of child or tracee) and classifies the stop. Rides over
/// signals: for stops that come promptly (injected syscalls, a kill), and cleanup.
pub fn wait(pid: Pid) -> Result<Stop> {
    wait_inner(pid, false)
}

/// `wait`, but a requested abort ([`crate::abort`]) ends it with an error if the stop has
/// not come within [`ABORT_GRACE`]: for a stop that may never come (a task stuck in
/// uninterruptible sleep does not stop for PTRACE_INTERRUPT). The task is then still
/// running, traced, with nothing changed; it is detached when ckpt exits.
pub fn wait_interruptible(pid: Pid) -> Result<Stop> {
    wait_inner(pid, true)
}

/// How long an aborting `wait_interruptible` still waits for the stop, so that the usual
/// case (the stop is microseconds away) ends with the task stopped and put back cleanly.
pub const ABORT_GRACE: Duration = Duration::from_millis(200);

fn wait_inner(pid: Pid, interruptible: bool) -> Result<Stop> {
    let mut give_up: Option<Instant> = None;
    loop {
        if interruptible && give_up.is_none() && crate::abort::requested().is_some() {
            give_up = Some(Instant::now() + ABORT_GRACE);
        }
        let mut flags = WaitPidFlag::__WALL;
        if give_up.is_some() {
            flags |= WaitPidFlag::WNOHANG;
        }
        match waitpid(pid, Some(flags)) {
            Ok(WaitStatus::StillAlive) => {
                if give_up.is_some_and(|t| Instant::now() >= t) {
                    crate::abort::check()?;
                    // Shielded: wait for real.
                    give_up = None;
                    continue;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys(format!("waitpid({pid})"), e)),
            Ok(st) => return to_stop(pid, st),
        }
    }
}

/// One look without blocking: None while `pid` has nothing to report.
pub fn try_wait(pid: Pid) -> Result<Option<Stop>> {
    loop {
        match waitpid(pid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys(format!("waitpid({pid})"), e)),
            Ok(st) => return to_stop(pid, st).map(Some),
        }
    }
}

fn to_stop(pid: Pid, st: WaitStatus) -> Result<Stop> {
    Ok(match st {
        WaitStatus::PtraceEvent(_, _, ev) if ev == libc::PTRACE_EVENT_STOP => {
            let sig = np::getsiginfo(pid).map(|s| s.si_signo).unwrap_or(0);
            Stop::EventStop(sig)
        }
        WaitStatus::PtraceEvent(_, _, ev) => Stop::Event(ev),
        WaitStatus::PtraceSyscall(_) => Stop::Syscall,
        WaitStatus::Stopped(_, sig) => Stop::Signal(sig as i32),
        WaitStatus::Exited(_, code) => Stop::Exited(code),
        WaitStatus::Signaled(_, sig, _) => Stop::Killed(sig as i32),
        other => {
            return Err(Error::Other(format!(
                "pid {pid}: unexpected wait status {other:?}"
            )))
        }
    })
}

pub fn get_regs(pid: Pid) -> Result<Regs> {
    np::getregs(pid).ctx(|| format!("ptrace(GETREGS) of pid {pid}"))
}

pub fn set_regs(pid: Pid, regs: &Regs) -> Result<()> {
    np::setregs(pid, *regs).ctx(|| format!("ptrace(SETREGS) of pid {pid}"))
}

/// The NT_X86_XSTATE regset: x87, SSE, AVX and later state, as the kernel lays it out.
pub fn get_xstate(pid: Pid) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; XSAVE_MAX];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: PTRACE_GETREGSET writes at most iov_len bytes into the buffer iov points
    // to, which lives until the call returns, and updates iov_len.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGSET,
            pid.as_raw(),
            NT_X86_XSTATE as usize,
            &mut iov as *mut libc::iovec,
        )
    };
    Errno::result(r).ctx(|| format!("ptrace(GETREGSET, NT_X86_XSTATE) of pid {pid}"))?;
    buf.truncate(iov.iov_len);
    Ok(buf)
}

pub fn set_xstate(pid: Pid, xstate: &[u8]) -> Result<()> {
    let mut copy = xstate.to_vec();
    let mut iov = libc::iovec {
        iov_base: copy.as_mut_ptr().cast(),
        iov_len: copy.len(),
    };
    // SAFETY: PTRACE_SETREGSET reads iov_len bytes from the buffer, which outlives the call.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGSET,
            pid.as_raw(),
            NT_X86_XSTATE as usize,
            &mut iov as *mut libc::iovec,
        )
    };
    Errno::result(r).ctx(|| format!("ptrace(SETREGSET, NT_X86_XSTATE) of pid {pid}"))?;
    Ok(())
}

pub fn get_sigmask(pid: Pid) -> Result<u64> {
    let mut mask: u64 = 0;
    // SAFETY: the kernel writes exactly 8 bytes (the size passed) into `mask`.
    let r = unsafe {
        libc::ptrace(
            PTRACE_GETSIGMASK,
            pid.as_raw(),
            8usize,
            &mut mask as *mut u64,
        )
    };
    Errno::result(r).ctx(|| format!("ptrace(GETSIGMASK) of pid {pid}"))?;
    Ok(mask)
}

pub fn set_sigmask(pid: Pid, mask: u64) -> Result<()> {
    // SAFETY: the kernel reads exactly 8 bytes from `mask`.
    let r = unsafe { libc::ptrace(PTRACE_SETSIGMASK, pid.as_raw(), 8usize, &mask as *const u64) };
    Errno::result(r).ctx(|| format!("ptrace(SETSIGMASK) of pid {pid}"))?;
    Ok(())
}

/// rseq registration as the kernel holds it: (pointer, length, flags, signature).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RseqConfig {
    pub ptr: u64,
    pub len: u32,
    pub flags: u32,
    pub sig: u32,
}

pub fn get_rseq(pid: Pid) -> Result<RseqConfig> {
    #[repr(C)]
    #[derive(Default)]
    struct Conf {
        ptr: u64,
        len: u32,
        sig: u32,
        flags: u32,
        pad: u32,
    }
    let mut c = Conf::default();
    // SAFETY: the kernel writes at most `size` (24) bytes of its ptrace_rseq_configuration
    // into `c`, which is 24 bytes and lives until the call returns.
    let r = unsafe {
        libc::ptrace(
            PTRACE_GET_RSEQ_CONFIGURATION,
            pid.as_raw(),
            std::mem::size_of::<Conf>(),
            &mut c as *mut Conf,
        )
    };
    Errno::result(r).ctx(|| format!("ptrace(GET_RSEQ_CONFIGURATION) of pid {pid}"))?;
    Ok(RseqConfig {
        ptr: c.ptr,
        len: c.len,
        flags: c.flags,
        sig: c.sig,
    })
}

/// Pending signals of the private (per-thread) or shared queue, as raw 128-byte siginfo,
/// read without dequeuing them.
pub fn peek_siginfo(pid: Pid, shared: bool) -> Result<Vec<[u8; 128]>> {
    #[repr(C)]
    struct Args {
        off: u64,
        flags: u32,
        nr: i32,
    }
    let mut out = Vec::new();
    let mut buf = vec![[0u8; 128]; 32];
    loop {
        let args = Args {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: buf.len() as i32,
        };
        // SAFETY: the kernel writes at most `nr` 128-byte siginfo structures into `buf`,
        // which has room for exactly `nr` of them.
        let r = unsafe {
            libc::ptrace(
                PTRACE_PEEKSIGINFO,
                pid.as_raw(),
                &args as *const Args,
                buf.as_mut_ptr(),
            )
        };
        let n = Errno::result(r).ctx(|| format!("ptrace(PEEKSIGINFO) of pid {pid}"))? as usize;
        out.extend_from_slice(&buf[..n]);
        if n < buf.len() || out.len() > 1 << 16 {
            return Ok(out);
        }
    }
}

const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
const PTRACE_GET_SECCOMP_METADATA: libc::c_uint = 0x420d;

/// Filter `index` of a stopped tracee's seccomp chain (0: the newest) as the raw classic
/// BPF program (8 bytes an instruction), or None past the oldest. EINVAL: the thread is
/// not in filter mode. Needs CAP_SYS_ADMIN.
pub fn seccomp_filter(pid: Pid, index: u64) -> Result<Option<Vec<u8>>> {
    let what = || format!("ptrace(SECCOMP_GET_FILTER, {index}) of pid {pid}");
    // SAFETY: with a null buffer the kernel only returns the instruction count.
    let n = unsafe {
        libc::ptrace(
            PTRACE_SECCOMP_GET_FILTER,
            pid.as_raw(),
            index,
            std::ptr::null_mut::<u8>(),
        )
    };
    match Errno::result(n) {
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(Error::sys(what(), e)),
        Ok(_) => {}
    }
    let mut buf = vec![0u8; n as usize * 8];
    // SAFETY: the kernel writes the program's instructions, `n` of 8 bytes each (filters
    // are immutable, so the count cannot have grown), into `buf`, which holds n * 8 bytes
    // and lives until the call returns.
    let r = unsafe {
        libc::ptrace(
            PTRACE_SECCOMP_GET_FILTER,
            pid.as_raw(),
            index,
            buf.as_mut_ptr(),
        )
    };
    let got = Errno::result(r).ctx(what)?;
    buf.truncate(got as usize * 8);
    Ok(Some(buf))
}

/// The flags of filter `index` the kernel reports (SECCOMP_FILTER_FLAG_LOG).
pub fn seccomp_flags(pid: Pid, index: u64) -> Result<u64> {
    #[repr(C)]
    struct Meta {
        filter_off: u64,
        flags: u64,
    }
    let mut m = Meta {
        filter_off: index,
        flags: 0,
    };
    // SAFETY: the kernel reads filter_off and writes at most `size` (16) bytes of its
    // seccomp_metadata into `m`, which is 16 bytes and lives until the call returns.
    let r = unsafe {
        libc::ptrace(
            PTRACE_GET_SECCOMP_METADATA,
            pid.as_raw(),
            std::mem::size_of::<Meta>(),
            &mut m as *mut Meta,
        )
    };
    Errno::result(r).ctx(|| format!("ptrace(GET_SECCOMP_METADATA, {index}) of pid {pid}"))?;
    Ok(m.flags)
}
