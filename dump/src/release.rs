//! The end of a dump: the task is either killed (the default, like CRIU) or put back
//! exactly as it was and detached (`--leave-running`, and every failed dump).

use crate::seize::{sig_name, Seized};
use crate::DumpError;
use ckpt_sys::inject::{Remote, Via};
use ckpt_sys::ptrace::{self, Stop};
use nix::sys::signal::{kill, Signal};

/// Stops to wade through after SIGKILL before giving up.
const MAX_STOPS_AFTER_KILL: usize = 64;

impl Seized {
    /// Undoes what the dump changed in the task, then detaches. The registers are put
    /// back while the task sits in a ptrace-stop; the detach wakes it with TIF_SIGPENDING,
    /// so the kernel's own syscall-restart logic runs on them (an interrupted nanosleep
    /// carries on with its own restart_block).
    pub(crate) fn undo_and_detach(&mut self) -> Result<(), DumpError> {
        let pid = self.pid;
        let mut first_err: Option<DumpError> = None;
        let mut note = |r: Result<(), DumpError>| {
            if let Err(e) = r {
                tracing::warn!(%pid, "release: {e}");
                first_err.get_or_insert(e);
            }
        };
        if let Some((page, insn)) = self.scratch {
            note(unmap_scratch(self, page, insn));
            self.scratch = None;
        }
        if self.regs_changed {
            note(ptrace::set_regs(pid, &self.regs).map_err(Into::into));
        }
        if self.sigmask_changed {
            note(ptrace::set_sigmask(pid, self.sigmask).map_err(Into::into));
        }
        note(self.undo_threads());
        // Detach even if something above failed: a traced task would hang otherwise.
        let detached = ptrace::detach(pid);
        self.released = true;
        detached?;
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// `--leave-running`: registers and sigmask as found, then detach. The images are
    /// complete: an abort requested now waits until this is done.
    pub fn release_running(mut self) -> Result<(), DumpError> {
        let _finish = ckpt_sys::abort::Shield::new();
        self.undo_and_detach()
    }

    /// Default end of a dump: SIGKILL while still traced, then [`Seized::wait_dead`]
    /// through ptrace until the task is dead (its real parent reaps it). A tree is killed
    /// whole first, then waited for, so its tasks die in parallel.
    pub fn kill_now(&mut self) -> Result<(), DumpError> {
        let pid = self.pid;
        // If even the kill fails, dropping `self` detaches and the task runs on.
        kill(pid, Signal::SIGKILL)
            .map_err(|e| ckpt_sys::Error::sys(format!("kill(pid {pid}, SIGKILL)"), e))?;
        self.released = true;
        Ok(())
    }

    /// After [`Seized::kill_now`]: waits until the task is dead.
    pub fn wait_dead(mut self) -> Result<(), DumpError> {
        let pid = self.pid;
        // The leader is reported only once every other (traced) thread is reaped.
        self.reap_threads()?;
        for _ in 0..MAX_STOPS_AFTER_KILL {
            match ptrace::wait(pid)? {
                Stop::Killed(sig) => {
                    tracing::debug!(%pid, "killed by {}", sig_name(sig));
                    self.gone = true;
                    return Ok(());
                }
                Stop::Exited(code) => {
                    tracing::debug!(%pid, code, "exited");
                    self.gone = true;
                    return Ok(());
                }
                // A stop that was already queued: let it go on to die.
                _ => {
                    let _ = ptrace::cont(pid, None);
                }
            }
        }
        Err(DumpError::Lost(format!(
            "pid {pid} did not die after SIGKILL"
        )))
    }
}

fn unmap_scratch(s: &Seized, page: u64, insn: u64) -> Result<(), DumpError> {
    let mut remote = Remote::new(s.pid, Via::SyscallInsn(insn))?;
    remote.syscall(
        || format!("munmap of the scratch area at {page:#x}"),
        libc::SYS_munmap,
        &[page, crate::remote::SCRATCH_LEN],
    )?;
    Ok(())
}
