//! The end of a lazy restore: the process's own copy of the userfaultfd is closed by a
//! syscall injected through its [vdso] (seize, interrupt, close, registers back, detach).

use super::*;

/// Offset of the first `syscall` instruction in `code`.
pub(super) fn find_syscall_insn(code: &[u8]) -> Option<usize> {
    code.windows(2).position(|w| w == [0x0f, 0x05])
}

/// Seizes the running process, closes its copy of the userfaultfd (if that fd number
/// still is our userfaultfd) with a close injected through its [vdso], puts its
/// registers back and lets it go.
pub(super) fn remove_remote_fd(pid: Pid, fd: i32, ours: i32) -> Result<(), RestoreError> {
    let me = nix::unistd::getpid();
    if !ckpt_sys::process::same_file_description(pid, fd, me, ours).unwrap_or(false) {
        debug!(%pid, fd, "the process no longer has our userfaultfd at that number");
        return Ok(());
    }
    let maps = ckpt_sys::proc::smaps(pid)?;
    let vdso = maps
        .iter()
        .find(|m| m.name == "[vdso]")
        .ok_or_else(|| RestoreError::Refused(format!("pid {pid} has no [vdso]")))?;
    let mut code = vec![0u8; vdso.len() as usize];
    ckpt_sys::mem::read(pid, vdso.start, &mut code)?;
    let insn = vdso.start
        + find_syscall_insn(&code)
            .ok_or_else(|| RestoreError::Refused(format!("no syscall in the [vdso] of {pid}")))?
            as u64;
    // EXITKILL: a pager that dies while the close is injected (registers and mask
    // swapped) must not leave the process to run on with them.
    ptrace::seize(
        pid,
        Options::PTRACE_O_TRACESYSGOOD | Options::PTRACE_O_EXITKILL,
    )?;
    let r = close_seized(pid, fd, insn);
    let d = ptrace::detach(pid);
    r?;
    d?;
    let _ = ours.as_raw_fd();
    Ok(())
}

pub(super) fn close_seized(pid: Pid, fd: i32, insn: u64) -> Result<(), RestoreError> {
    ptrace::interrupt(pid)?;
    loop {
        match ptrace::wait(pid)? {
            Stop::EventStop(_) => break,
            Stop::Signal(sig) => {
                let sig = nix::sys::signal::Signal::try_from(sig).ok();
                ptrace::cont(pid, sig)?;
            }
            Stop::Exited(_) | Stop::Killed(_) => return Ok(()),
            _ => ptrace::cont(pid, None)?,
        }
    }
    let mask = ptrace::get_sigmask(pid)?;
    ptrace::set_sigmask(pid, !0)?;
    let mut remote = Remote::new(pid, Via::SyscallInsn(insn))?;
    let r = remote.syscall(
        || format!("close of the userfaultfd (fd {fd})"),
        libc::SYS_close,
        &[fd as u64],
    );
    remote.restore_regs()?;
    ptrace::set_sigmask(pid, mask)?;
    r?;
    Ok(())
}
