//! The threads of the puppet: per-thread kernel state (for the main thread too), and the
//! other threads, created by clone3 injected into the main thread with their dumped tids.
//!
//! The order (facts: ../shared/notes/threads-facts.md):
//! 1. after memory, mm and sigactions: each thread is cloned with set_tid = its dumped
//!    tid and CLONE_SETTLS = its fs_base, CLONE_CHILD_CLEARTID = its tid address
//!    (PTRACE_O_TRACECLONE attaches it); then, injected into the thread itself through the
//!    shared trampoline, its robust list, sigaltstack, rseq and name;
//! 2. every clone before the credentials: clone3 with set_tid needs
//!    CAP_CHECKPOINT_RESTORE in the caller; credentials are per thread, so each thread
//!    gets them injected too (`thread_creds`);
//! 3. each thread's final registers, FPU state and sigmask are set at its last int3 stop,
//!    while the trampoline still exists; it stays in that ptrace-stop (it never runs the
//!    trampoline again) until every thread is detached, after the main thread's final
//!    munmap of the trampoline.

use super::{Batched, Puppet, R};
use crate::RestoreError;
use ckpt_sys::inject::{Remote, Via};
use ckpt_sys::ptrace::{self, Stop};
use ckpt_sys::Pid;
use nix::errno::Errno;

const SS_ONSTACK: u32 = 1;
const SS_DISABLE: u32 = 2;
const PR_SET_NAME: u64 = 15;
const CLONE_THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM
    | libc::CLONE_SETTLS) as u64;
/// struct clone_args up to cgroup (CLONE_ARGS_SIZE_VER2).
const CLONE_ARGS_SIZE: u64 = 88;
/// Where the clone_args and the set_tid array go in the scratch page.
const OFF_CLONE_ARGS: u64 = 0;
const OFF_SET_TID: u64 = 128;

/// ckpt's own CPU mask while it shares one CPU with the puppet (each injected call is a
/// round trip between the two: about 11 µs on one CPU, 30 µs across two); put back when
/// dropped, with the puppet.
pub(super) struct Pinned {
    own: u64,
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = ckpt_sys::process::set_affinity(Pid::from_raw(0), self.own);
    }
}

/// A created thread: its index in the image's threads and the syscalls run in it.
pub(super) struct Thread {
    pub idx: usize,
    pub remote: Remote,
}

impl Puppet<'_> {
    /// The tids of the created threads (not the main one), for the detach.
    pub fn thread_tids(&self) -> Vec<Pid> {
        self.threads.iter().map(|t| t.remote.pid()).collect()
    }

    /// Runs `f` with the syscalls going to created thread `i` (index in `self.threads`)
    /// instead of the main thread.
    pub(super) fn in_thread<T>(&mut self, i: usize, f: impl FnOnce(&mut Self) -> R<T>) -> R<T> {
        std::mem::swap(&mut self.remote, &mut self.threads[i].remote);
        let out = f(self);
        std::mem::swap(&mut self.remote, &mut self.threads[i].remote);
        out
    }

    /// Per-thread kernel state of image thread `idx`, injected into the thread the calls
    /// go to. The main thread gets all of it: the seed's values point into ckpt's vanished
    /// memory. A new thread has no robust list, altstack or rseq yet, and its tid address
    /// came with CLONE_CHILD_CLEARTID.
    pub(super) fn thread_state(&mut self, idx: usize) -> R<()> {
        // One by one: a batch's stop is recognised by the process's pid, not a thread's.
        for c in self.thread_calls(idx) {
            self.one(&c)?;
        }
        Ok(())
    }

    /// The calls that give thread `idx` its state (`thread_state`; the main thread's go
    /// in a batch).
    pub(super) fn thread_calls(&self, idx: usize) -> Vec<Batched> {
        let t = &self.img.threads[idx];
        let main = idx == 0;
        let tid = t.tid;
        let mut out = Vec::new();
        if main || t.robust_list != 0 {
            let len = if t.robust_list_len == 0 {
                24
            } else {
                t.robust_list_len
            };
            out.push(Batched::new(
                format!("set_robust_list in thread {tid}"),
                libc::SYS_set_robust_list,
                &[t.robust_list, len],
            ));
        }
        if main {
            out.push(Batched::new(
                "set_tid_address",
                libc::SYS_set_tid_address,
                &[t.tid_address],
            ));
        }
        let mut ss = [0u8; 24];
        match &t.altstack {
            Some(a) if a.flags & SS_DISABLE == 0 => {
                ss[0..8].copy_from_slice(&a.sp.to_le_bytes());
                ss[8..12].copy_from_slice(&(a.flags & !SS_ONSTACK).to_le_bytes());
                ss[16..24].copy_from_slice(&a.size.to_le_bytes());
            }
            _ if !main => {}
            _ => ss[8..12].copy_from_slice(&SS_DISABLE.to_le_bytes()),
        }
        if ss != [0u8; 24] {
            out.push(
                Batched::new(
                    format!("sigaltstack in thread {tid}"),
                    libc::SYS_sigaltstack,
                    &[0, 0],
                )
                .with(0, ss.to_vec()),
            );
        }
        if let Some(r) = t.rseq.as_ref().filter(|r| r.ptr != 0) {
            out.push(Batched::new(
                format!("rseq register in thread {tid}"),
                libc::SYS_rseq,
                &[r.ptr, r.len as u64, 0, r.sig as u64],
            ));
        }
        // A new thread has the main thread's name, which the seed set to the process's.
        if !main && t.name != self.img.core.comm {
            let mut name = t.name.as_bytes().to_vec();
            name.push(0);
            out.push(
                Batched::new(
                    format!("prctl(PR_SET_NAME, {:?}) in thread {tid}", t.name),
                    libc::SYS_prctl,
                    &[PR_SET_NAME, 0],
                )
                .with(1, name),
            );
        }
        out
    }

    /// Creates every thread of the image but the main one, each with its own state.
    pub(super) fn create_threads(&mut self) -> R<()> {
        for idx in 1..self.img.threads.len() {
            let tid = self.clone_thread(idx)?;
            let remote = Remote::new(tid, Via::Trampoline(self.tramp))?;
            self.threads.push(Thread { idx, remote });
            let i = self.threads.len() - 1;
            self.in_thread(i, |p| p.thread_state(idx))?;
        }
        Ok(())
    }

    /// Pins ckpt and the puppet to the CPU ckpt runs on, for the many injections to come;
    /// the threads inherit it. Each thread's own mask is set back in `finish_threads`,
    /// the main thread's in `finish` (so only when the image has it).
    pub(super) fn pin(&mut self) -> R<()> {
        let me = Pid::from_raw(0);
        let own = ckpt_sys::process::affinity(me)?;
        let cpu = ckpt_sys::proc::stat(nix::unistd::getpid())?
            .processor
            .unwrap_or(0);
        let one = 1u64.checked_shl(cpu as u32).unwrap_or(0);
        if self.img.core.cpu_affinity == 0 || own & one == 0 {
            return Ok(());
        }
        ckpt_sys::process::set_affinity(me, one)?;
        self.pinned = Some(Pinned { own });
        ckpt_sys::process::set_affinity(self.pid, one)?;
        Ok(())
    }

    /// Gives ckpt its own CPU mask back (the puppet stays pinned); whether it was pinned.
    pub(super) fn unpin(&mut self) -> bool {
        self.pinned.take().is_some()
    }

    /// clone3 injected into the main thread: the parent stops first with
    /// PTRACE_EVENT_CLONE, then at its int3; the new thread, attached by TRACECLONE,
    /// makes its first stop (a SIGSTOP under TRACEME) at the int3 after the `syscall`.
    fn clone_thread(&mut self, idx: usize) -> R<Pid> {
        let t = &self.img.threads[idx];
        let fs_base = t.regs.as_ref().map_or(0, |r| r.fs_base);
        let mut flags = CLONE_THREAD_FLAGS;
        if t.tid_address != 0 {
            flags |= libc::CLONE_CHILD_CLEARTID as u64;
        }
        // Its tid at each level from the innermost (a process in a nested pid namespace
        // has one below the tree's) to the tree's; the kernel refuses a wrong depth.
        let want = t.nested_tids.last().copied().unwrap_or(t.tid);
        let main = self.pid;
        let fail =
            |what: String| RestoreError::Refused(format!("pid {main}: thread {want}: {what}"));
        if t.nested_tids.len() > 31 || t.nested_tids.iter().any(|&n| n <= 0) {
            return Err(fail(format!("nested tids {:?}", t.nested_tids)));
        }
        let levels: Vec<u8> = t
            .nested_tids
            .iter()
            .rev()
            .chain(std::iter::once(&t.tid))
            .flat_map(|n| n.to_le_bytes())
            .collect();
        let set_tid = self.put(OFF_SET_TID, &levels)?;
        let mut args = Vec::with_capacity(CLONE_ARGS_SIZE as usize);
        // flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls,
        // set_tid, set_tid_size, cgroup
        let depth = t.nested_tids.len() as u64 + 1;
        for v in [
            flags,
            0,
            t.tid_address,
            0,
            0,
            0,
            0,
            fs_base,
            set_tid,
            depth,
            0,
        ] {
            args.extend_from_slice(&v.to_le_bytes());
        }
        let at = self.put(OFF_CLONE_ARGS, &args)?;
        let mut r = *self.remote.base_regs();
        r.rax = libc::SYS_clone3 as u64;
        r.rdi = at;
        r.rsi = CLONE_ARGS_SIZE;
        r.orig_rax = u64::MAX;
        r.rip = self.tramp;
        ptrace::set_regs(main, &r)?;
        ptrace::cont(main, None)?;
        self.remote.calls += 1;
        // The new thread's tid as ckpt names it (another than `want` in a new pid
        // namespace): the event's message.
        let mut outer = None;
        loop {
            match ptrace::wait(main)? {
                Stop::Event(libc::PTRACE_EVENT_CLONE) => {
                    outer = Some(ptrace::event_msg(main)? as i32);
                    ptrace::cont(main, None)?
                }
                Stop::Signal(libc::SIGTRAP) => break,
                other => return Err(fail(format!("unexpected stop {other:?} during clone3"))),
            }
        }
        let ret = ptrace::get_regs(main)?.rax as i64;
        if ret < 0 {
            let e = Errno::from_raw(-ret as i32);
            return Err(fail(if e == Errno::EEXIST {
                "its tid is already in use by another task".into()
            } else {
                format!("injected clone3 failed: {e}")
            }));
        }
        if ret != want as i64 {
            return Err(fail(format!("clone3 gave tid {ret}")));
        }
        let tid = Pid::from_raw(outer.unwrap_or(want));
        match ptrace::wait(tid)? {
            Stop::Signal(libc::SIGSTOP) | Stop::EventStop(_) => Ok(tid),
            other => Err(fail(format!("unexpected first stop {other:?}"))),
        }
    }

    /// Each created thread's credentials, its own or the process's (a raw setresuid and
    /// capset change only the calling thread).
    pub(super) fn thread_creds(&mut self) -> R<()> {
        for i in 0..self.threads.len() {
            let t = &self.img.threads[self.threads[i].idx];
            let c = t.creds.clone().or_else(|| self.img.core.creds.clone());
            self.in_thread(i, |p| p.creds(c).map(|_| ()))?;
        }
        Ok(())
    }

    /// Each created thread's pending private signals and the SIGTRAPs sent to it from
    /// outside during the restore, to be queued from the main thread at it: (tid, raw
    /// siginfo).
    pub(super) fn thread_pending(&mut self) -> Vec<(i32, Vec<u8>)> {
        let mut out = Vec::new();
        for th in &mut self.threads {
            let t = &self.img.threads[th.idx];
            out.extend(t.pending.iter().map(|s| (t.tid, s.clone())));
            out.extend(
                th.remote
                    .take_external_traps()
                    .iter()
                    .map(|s| (t.tid, s.to_vec())),
            );
        }
        out
    }

    /// Each created thread's final registers (with the syscall-restart fix-up), FPU state
    /// and sigmask, set at its last int3 stop: it never runs another instruction of ours.
    /// Then its CPU affinity (a pinned puppet's mask was inherited by clone3).
    pub(super) fn finish_threads(&mut self) -> R<()> {
        for th in &self.threads {
            let t = &self.img.threads[th.idx];
            let tid = th.remote.pid();
            let mut regs = crate::regs::from_image(t.regs.as_ref().expect("checked at load"));
            ckpt_sys::regs::fix_syscall_restart(&mut regs);
            ptrace::set_regs(tid, &regs)?;
            ptrace::set_xstate(tid, &t.xsave)?;
            ptrace::set_sigmask(tid, t.sigmask)?;
            let mask = if t.cpu_affinity != 0 {
                t.cpu_affinity
            } else {
                self.img.core.cpu_affinity
            };
            if mask != 0 {
                // Best effort: the machine may have fewer CPUs than the one dumped on.
                let _ = ckpt_sys::process::set_affinity(tid, mask);
            }
            if t.ioprio != 0 {
                ckpt_sys::process::set_ioprio(tid, t.ioprio)?;
            }
        }
        Ok(())
    }
}
