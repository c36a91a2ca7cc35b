//! Stopping the task: PTRACE_SEIZE + PTRACE_INTERRUPT, and the guard that owns it from
//! then on. Whatever goes wrong after the seize, dropping the guard puts the task back as
//! it was (scratch page unmapped, registers and sigmask restored) and detaches.

use crate::DumpError;
use ckpt_sys::ptrace::{self, Stop};
use ckpt_sys::regs::Regs;
use ckpt_sys::Pid;
use nix::sys::signal::Signal;

/// How many signal-delivery stops we let through before giving up on the interrupt.
const MAX_SIGNALS_AT_SEIZE: usize = 64;

/// A task in ptrace-stop, owned by the dump.
pub struct Seized {
    pub(crate) pid: Pid,
    /// Registers (rip moved out of an rseq critical section, see `rseq`), xsave and
    /// sigmask as found at the stop.
    pub(crate) regs: Regs,
    pub(crate) xsave: Vec<u8>,
    pub(crate) sigmask: u64,
    /// Set once we changed the registers (injection) or the mask.
    pub(crate) regs_changed: bool,
    pub(crate) sigmask_changed: bool,
    /// A scratch page we mapped in the task, with the `syscall` instruction that can
    /// unmap it: (page, insn).
    pub(crate) scratch: Option<(u64, u64)>,
    /// The task died: nothing to undo.
    pub(crate) gone: bool,
    /// The other threads, each stopped (`threads`).
    pub(crate) threads: Vec<crate::threads::Stopped>,
    /// Released (detached or killed) already.
    pub(crate) released: bool,
    /// The signal of the group-stop the task was in when seized (SIGSTOP, SIGTSTP, ...),
    /// or 0: it was running.
    pub(crate) stop_signal: i32,
}

impl Seized {
    /// Seizes and interrupts `pid` and waits for its PTRACE_EVENT_STOP, then does the
    /// same for its other threads (`threads`). A signal that was being delivered at that
    /// moment is passed on as it would have been.
    pub fn seize(pid: Pid) -> Result<Seized, DumpError> {
        // Seized and interrupted already while a v1 freezer held it (`preseize`).
        let pre = crate::preseize::take(pid);
        if !pre {
            ptrace::seize(pid, crate::threads::options())?;
        }
        let mut s = Seized {
            pid,
            regs: zero_regs(),
            xsave: Vec::new(),
            sigmask: 0,
            regs_changed: false,
            sigmask_changed: false,
            scratch: None,
            gone: false,
            released: false,
            threads: Vec::new(),
            stop_signal: 0,
        };
        if !pre {
            ptrace::interrupt(pid)?;
        }
        s.wait_event_stop()?;
        s.regs = ptrace::get_regs(pid)?;
        // Before anything runs in the task: these are the registers dumped and put back.
        crate::rseq::fixup(pid, &mut s.regs)?;
        s.xsave = ptrace::get_xstate(pid)?;
        s.sigmask = ptrace::get_sigmask(pid)?;
        crate::threads::seize_rest(&mut s)?;
        Ok(s)
    }

    fn wait_event_stop(&mut self) -> Result<(), DumpError> {
        let pid = self.pid;
        for _ in 0..MAX_SIGNALS_AT_SEIZE {
            // Interruptible: a task in uninterruptible sleep stops only when it wakes.
            let stop = ptrace::wait_interruptible(pid).inspect_err(|_| {
                // Aborted before it stopped: nothing was changed, and a detach needs a
                // stopped task. It is detached when ckpt exits.
                self.released = true;
            })?;
            match stop {
                Stop::EventStop(sig) if sig == libc::SIGTRAP => return Ok(()),
                // In a group-stop (SIGSTOP, SIGTSTP, ...): recorded, and the task stays
                // stopped once released (ptrace's detach puts it back in the stop).
                Stop::EventStop(sig) => {
                    self.stop_signal = sig;
                    return Ok(());
                }
                Stop::Signal(sig) => {
                    tracing::debug!(%pid, sig, "signal in delivery at seize: passing it on");
                    let signal = Signal::try_from(sig).ok();
                    ptrace::cont(pid, signal)?;
                }
                Stop::Exited(code) => {
                    self.gone = true;
                    return Err(DumpError::Lost(format!(
                        "pid {pid} exited (status {code}) while being seized"
                    )));
                }
                Stop::Killed(sig) => {
                    self.gone = true;
                    return Err(DumpError::Lost(format!(
                        "pid {pid} was killed by {} while being seized",
                        sig_name(sig)
                    )));
                }
                other => {
                    return Err(DumpError::Lost(format!(
                        "pid {pid}: unexpected stop {other:?} while being seized"
                    )))
                }
            }
        }
        Err(DumpError::Lost(format!(
            "pid {pid}: more than {MAX_SIGNALS_AT_SEIZE} signals arrived while being seized"
        )))
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    pub fn xsave(&self) -> &[u8] {
        &self.xsave
    }

    /// Blocks every signal (but SIGKILL/SIGSTOP, which cannot be), so none is delivered
    /// while we run syscalls in the task. [`Seized::unblock_signals`] undoes it as soon as
    /// the injections are done.
    pub fn block_signals(&mut self) -> Result<(), DumpError> {
        self.sigmask_changed = true;
        ptrace::set_sigmask(self.pid, !0u64)?;
        Ok(())
    }

    /// The mask as found at the seize. Put back right after the injections rather than at
    /// release: if ckpt dies later (SIGKILL, a second SIGTERM), the kernel detaches the
    /// task and it must not run on with every signal blocked.
    pub fn unblock_signals(&mut self) -> Result<(), DumpError> {
        ptrace::set_sigmask(self.pid, self.sigmask)?;
        self.sigmask_changed = false;
        Ok(())
    }
}

impl Drop for Seized {
    /// Not released on purpose: an error ended the dump. Leave the task running exactly as
    /// it was.
    fn drop(&mut self) {
        let _finish = ckpt_sys::abort::Shield::new();
        if !self.released && !self.gone {
            if let Err(e) = self.undo_and_detach() {
                tracing::warn!(pid = %self.pid, "could not release the task cleanly: {e}");
            } else {
                tracing::info!(pid = %self.pid, "dump failed: task left running as it was");
            }
        }
    }
}

pub(crate) fn sig_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

fn zero_regs() -> Regs {
    Regs {
        r15: 0,
        r14: 0,
        r13: 0,
        r12: 0,
        rbp: 0,
        rbx: 0,
        r11: 0,
        r10: 0,
        r9: 0,
        r8: 0,
        rax: 0,
        rcx: 0,
        rdx: 0,
        rsi: 0,
        rdi: 0,
        orig_rax: 0,
        rip: 0,
        cs: 0,
        eflags: 0,
        rsp: 0,
        ss: 0,
        fs_base: 0,
        gs_base: 0,
        ds: 0,
        es: 0,
        fs: 0,
        gs: 0,
    }
}
