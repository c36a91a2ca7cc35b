//! Seccomp state of every thread: its mode (/proc/PID/task/TID/status `Seccomp:`) and,
//! in filter mode, its chain of filters, read with PTRACE_SECCOMP_GET_FILTER (index 0 is
//! the newest) and PTRACE_GET_SECCOMP_METADATA (the LOG flag) while it is stopped.
//!
//! Filters are kept once per process by content: threads whose chains hold the same
//! programs (a TSYNC'd filter, or one installed before the threads were made) list the
//! same entries, and restore installs what they share once, before it makes the threads,
//! so that they share it again (a later TSYNC needs that). The kernel shows no identity of
//! filter objects (kcmp has no seccomp type): two threads that installed equal programs
//! each on its own come back sharing them.
//!
//! A filter that hands syscalls to a user-space supervisor (SECCOMP_RET_USER_NOTIF, a
//! listener made with SECCOMP_FILTER_FLAG_NEW_LISTENER) or whose action is computed at
//! run time cannot be judged, and is refused by name.

use crate::{refuse, DumpError};
use ckpt_images::pb;
use ckpt_sys::{proc, ptrace, Pid};

/// SECCOMP_FILTER_FLAG_LOG: the only flag PTRACE_GET_SECCOMP_METADATA reports.
pub const FLAG_LOG: u64 = 1 << 1;
const RET_ACTION_FULL: u32 = 0xffff_0000;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
/// BPF_RET, and BPF_A as its return value source (include/uapi/linux/bpf_common.h).
const BPF_RET: u16 = 0x06;
const BPF_A: u16 = 0x10;

/// The seccomp state of one process: the filters, each once, and per thread (in the
/// order given) its mode and chain, oldest first.
pub struct Chains {
    pub filters: Vec<pb::SeccompFilter>,
    pub threads: Vec<(u32, Vec<u32>)>,
}

/// Reads the state of `tids` (threads of `pid`, stopped by us).
pub fn collect(pid: Pid, tids: &[Pid]) -> Result<Chains, DumpError> {
    let mut out = Chains {
        filters: Vec::new(),
        threads: Vec::with_capacity(tids.len()),
    };
    for &tid in tids {
        let mode = mode(pid, tid)?;
        let mut chain = Vec::new();
        if mode == 2 {
            let mut index = 0u64;
            while let Some(program) = ptrace::seccomp_filter(tid, index)? {
                let flags = ptrace::seccomp_flags(tid, index)?;
                check(pid, tid, index, &program, flags)?;
                let f = pb::SeccompFilter { program, flags };
                let at = match out.filters.iter().position(|g| *g == f) {
                    Some(i) => i,
                    None => {
                        out.filters.push(f);
                        out.filters.len() - 1
                    }
                };
                chain.push(at as u32);
                index += 1;
            }
            chain.reverse();
        } else if mode != 0 {
            // Strict mode (1) has no filters; anything else is new to us.
            if mode != 1 {
                return Err(refuse(format!(
                    "pid {pid}: thread {tid} is in seccomp mode {mode}, unknown to ckpt"
                )));
            }
        }
        out.threads.push((mode, chain));
    }
    Ok(out)
}

/// `Seccomp:` of the thread's status.
fn mode(pid: Pid, tid: Pid) -> Result<u32, DumpError> {
    let text = proc::read_bytes(&format!("/proc/{pid}/task/{tid}/status"))?;
    let text = String::from_utf8_lossy(&text);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

/// For `ckpt check -t`: what the seccomp filters of `pid`'s threads would refuse at a
/// dump. A filter can only be read from a thread in a ptrace-stop, so each thread that
/// has filters (and only those) is seized, interrupted, read and detached at once, as a
/// dump would: an interrupted syscall restarts, a signal that arrives meanwhile is passed
/// on. A thread that exits meanwhile blocks nothing.
pub fn check_blockers(pid: Pid, out: &mut crate::blockers::Blockers) {
    for tid in proc::tasks(pid).unwrap_or_default() {
        if mode(pid, tid).ok() != Some(2) {
            continue;
        }
        if let Err(e) = peek(pid, tid) {
            let msg = e.to_string();
            let own = format!("pid {pid}: ");
            let why = msg.strip_prefix(&own).unwrap_or(&msg).to_string();
            out.push(pid, "seccomp filter", why);
        }
    }
}

/// Stops `tid` just long enough to judge its filters.
fn peek(pid: Pid, tid: Pid) -> Result<(), DumpError> {
    if ptrace::seize(tid, ptrace::Options::empty()).is_err() {
        // Gone, or traced by someone else (which the check lists by itself).
        return Ok(());
    }
    let judged = ptrace::interrupt(tid)
        .map_err(DumpError::from)
        .and_then(|()| loop {
            match ptrace::wait(tid)? {
                ptrace::Stop::EventStop(_) => break judge(pid, tid),
                ptrace::Stop::Signal(sig) => {
                    ptrace::cont(tid, nix::sys::signal::Signal::try_from(sig).ok())?
                }
                ptrace::Stop::Exited(_) | ptrace::Stop::Killed(_) => return Ok(()),
                _ => ptrace::cont(tid, None)?,
            }
        });
    let _ = ptrace::detach(tid);
    judged
}

/// Every filter of stopped `tid`, judged.
fn judge(pid: Pid, tid: Pid) -> Result<(), DumpError> {
    let mut index = 0u64;
    while let Some(program) = ptrace::seccomp_filter(tid, index)? {
        let flags = ptrace::seccomp_flags(tid, index)?;
        check(pid, tid, index, &program, flags)?;
        index += 1;
    }
    Ok(())
}

/// A filter restore can install as it was: known flags, and every action a constant
/// that is not a supervisor's.
fn check(pid: Pid, tid: Pid, index: u64, program: &[u8], flags: u64) -> Result<(), DumpError> {
    let name = || format!("pid {pid}: thread {tid}: seccomp filter {index} (0 is the newest)");
    if flags & !FLAG_LOG != 0 {
        return Err(refuse(format!(
            "{} has flags {flags:#x} unknown to ckpt; not supported yet",
            name()
        )));
    }
    for insn in program.chunks_exact(8) {
        let code = u16::from_le_bytes([insn[0], insn[1]]);
        let k = u32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
        if code & 0x07 != BPF_RET {
            continue;
        }
        if code & 0x18 == BPF_A {
            return Err(refuse(format!(
                "{} returns an action computed at run time (BPF_RET|BPF_A); not supported yet",
                name()
            )));
        }
        if k & RET_ACTION_FULL == RET_USER_NOTIF {
            return Err(refuse(format!(
                "{} returns SECCOMP_RET_USER_NOTIF (a supervisor answers its syscalls \
                 through a listener, SECCOMP_FILTER_FLAG_NEW_LISTENER); not supported",
                name()
            )));
        }
    }
    Ok(())
}
