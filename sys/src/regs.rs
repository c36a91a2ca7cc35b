//! x86-64 general registers and the syscall-restart rules that apply to them.

pub use libc::user_regs_struct as Regs;

/// Kernel-internal restart codes a task interrupted in a syscall shows in rax.
pub const ERESTARTSYS: i64 = 512;
pub const ERESTARTNOINTR: i64 = 513;
pub const ERESTARTNOHAND: i64 = 514;
pub const ERESTART_RESTARTBLOCK: i64 = 516;

/// Turns the registers of a task that was stopped inside a syscall into registers that
/// resume it correctly in a process the kernel knows nothing about.
///
/// The restart codes only mean something together with the kernel's per-task state;
/// a restored task has none of it. -ERESTARTSYS/-ERESTARTNOINTR/-ERESTARTNOHAND: the
/// call simply runs again (rip back over the 2-byte `syscall`). -ERESTART_RESTARTBLOCK
/// (nanosleep, poll and futex with timeouts) keeps its state in the restart_block, which
/// cannot be recreated: the caller sees EINTR, which every correct caller handles.
/// orig_rax = -1 keeps the kernel from applying its own restart logic on top.
pub fn fix_syscall_restart(r: &mut Regs) {
    if (r.orig_rax as i64) >= 0 {
        match -(r.rax as i64) {
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
                r.rax = r.orig_rax;
                r.rip -= 2;
            }
            ERESTART_RESTARTBLOCK => {
                r.rax = (-(libc::EINTR as i64)) as u64;
            }
            _ => {}
        }
    }
    r.orig_rax = u64::MAX;
}
