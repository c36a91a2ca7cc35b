//! x86-64 general registers and the syscall-restart rules that apply to them.

pub use libc::user_regs_struct as Regs;

/// Kernel-internal restart codes a task interrupted in a syscall shows in rax.
pub const ERESTART_RESTARTBLOCK: i64 = 516;

/// Makes the registers of a task that was stopped inside a syscall fit a process the
/// kernel restores them into, which has no restart_block of its own.
///
/// They go in at a stop inside get_signal (an interrupt's event stop, a signal-delivery
/// stop), and from there the kernel applies its own restart rules on the way out, with
/// the signal it delivers next if any: -ERESTARTSYS runs again, or fails with EINTR when
/// a handler without SA_RESTART runs first; -ERESTARTNOHAND (pause, select) fails with
/// EINTR when a handler runs, else runs again; -ERESTARTNOINTR always runs again. Rewinding
/// rip here instead would be wrong the moment a signal is pending at the release: its
/// handler runs, then the call starts over (a pause() that never sees the signal it
/// waited for). Only -ERESTART_RESTARTBLOCK (nanosleep, poll and futex with timeouts)
/// keeps its state where a restore cannot put it back: the caller sees EINTR, which
/// every correct caller handles.
pub fn fix_syscall_restart(r: &mut Regs) {
    if (r.orig_rax as i64) >= 0 && -(r.rax as i64) == ERESTART_RESTARTBLOCK {
        r.rax = (-(libc::EINTR as i64)) as u64;
    }
}
