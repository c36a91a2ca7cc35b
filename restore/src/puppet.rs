//! The puppet phase: ckpt drives the stopped seed over ptrace, syscall by syscall, until
//! it is the dumped process. The order matters and is explained step by step; the facts
//! behind it are in ../shared/notes/restore-facts.md.

mod creds;
mod memory;
mod pages;
mod seccomp;
mod signals;
mod threads;

use crate::fill;
use crate::image::ProcessImage;
use crate::seed::SeedPlan;
use crate::RestoreError;
use ckpt_images::PAGE_SIZE;
use ckpt_sys::inject::{Call, Remote, Via, BATCH_ENTRY};
use ckpt_sys::ptrace::{self, Options, Stop};
use ckpt_sys::{mem, Pid};
use std::time::Instant;
use tracing::debug;

const SIGTRAP: u32 = 5;
const PR_SET_MM: u64 = 35;
const PR_SET_MM_MAP: u64 = 14;
const PR_SET_DUMPABLE: u64 = 4;
const ARCH_SET_CPUID: u64 = 0x1012;

pub struct Puppet<'a> {
    pid: Pid,
    remote: Remote,
    tramp: u64,
    img: &'a ProcessImage,
    plan: &'a SeedPlan,
    pages_path: std::path::PathBuf,
    /// `restore --lazy`: register the anonymous VMAs, copy nothing into them, and leave
    /// the userfaultfd to the pager (`lazy`).
    lazy: bool,
    handoff: Option<crate::lazy::Handoff>,
    progress: &'a dyn ckpt_images::progress::Progress,
    /// The threads created besides the main one (`threads`).
    threads: Vec<threads::Thread>,
    /// ckpt and the puppet share one CPU while the threads are made (`threads`).
    pinned: Option<threads::Pinned>,
    /// Shared memory objects of the tree, made by ckpt: opened by path (`shared.rs`).
    shared: Option<&'a std::collections::HashMap<u64, String>>,
    /// What it keeps of its seed's memory, shared copy-on-write (`sharing.rs`).
    sharing: Option<&'a crate::sharing::Task>,
    /// The runs the fill copies: all of the image's but those `sharing` keeps.
    fill_runs: Option<Vec<ckpt_images::pb::PageRun>>,
    /// The main thread's securebits as the seed left them, asked in the first batch
    /// (`creds` needs them; one stop less than asking on their own).
    seed_securebits: Option<u32>,
}

type R<T> = Result<T, RestoreError>;

/// A call of a batch (`Puppet::batched`), with the bytes one argument points at.
pub(super) struct Batched {
    what: String,
    call: Call,
    /// (argument index, bytes): the argument becomes their address in the scratch page.
    data: Option<(usize, Vec<u8>)>,
    /// (offset, delta): the bytes hold a pointer into themselves at `offset`, written as
    /// their address in the scratch page plus `delta` (a struct followed by what it
    /// points at).
    inner: Option<(usize, u64)>,
}

impl Batched {
    fn new(what: impl Into<String>, nr: i64, args: &[u64]) -> Batched {
        Batched {
            what: what.into(),
            call: Call::new(nr, args),
            data: None,
            inner: None,
        }
    }

    /// With `bytes` passed by address as argument `arg`.
    fn with(mut self, arg: usize, bytes: Vec<u8>) -> Batched {
        self.data = Some((arg, bytes));
        self
    }

    /// With the bytes' own address plus `delta` written into them at `offset`.
    fn pointing(mut self, offset: usize, delta: u64) -> Batched {
        self.inner = Some((offset, delta));
        self
    }
}

impl<'a> Puppet<'a> {
    pub fn new(
        pid: Pid,
        img: &'a ProcessImage,
        plan: &'a SeedPlan,
        pages_path: std::path::PathBuf,
        progress: &'a dyn ckpt_images::progress::Progress,
    ) -> R<Self> {
        let remote = Remote::new(pid, Via::Trampoline(plan.trampoline))?;
        Ok(Puppet {
            pid,
            remote,
            tramp: plan.trampoline,
            img,
            plan,
            pages_path,
            lazy: false,
            handoff: None,
            progress,
            threads: Vec::new(),
            pinned: None,
            shared: None,
            sharing: None,
            fill_runs: None,
            seed_securebits: None,
        })
    }

    /// The tree's shared memory objects (see `shared.rs`).
    pub fn shared(mut self, paths: &'a std::collections::HashMap<u64, String>) -> Self {
        self.shared = Some(paths);
        self
    }

    /// Copy-on-write sharing with its parent and children (see `sharing.rs`).
    pub fn sharing(mut self, task: &'a crate::sharing::Task) -> Self {
        self.sharing = Some(task);
        self
    }

    /// Lazy mode (see `lazy.rs`); after `run`, `take_handoff` gives the userfaultfd.
    pub fn lazy(mut self, on: bool) -> Self {
        self.lazy = on;
        self
    }

    pub fn take_handoff(&mut self) -> Option<crate::lazy::Handoff> {
        self.handoff.take()
    }

    fn scratch(&self) -> u64 {
        self.tramp + PAGE_SIZE as u64
    }

    fn call(&mut self, what: &str, nr: i64, args: &[u64]) -> R<u64> {
        Ok(self.remote.syscall(|| what.to_string(), nr, args)?)
    }

    /// Runs `calls` as batches (`Remote::batch`, the loop the seed put in its trampoline
    /// page, the table in the scratch page): one stop a batch instead of one a call. Each
    /// result must be `want(i, result)`; a failure names the call. The scratch page's
    /// contents are overwritten.
    fn calls(
        &mut self,
        calls: &[(String, Call)],
        want: impl Fn(usize, u64) -> Option<String>,
    ) -> R<()> {
        let with: Vec<Batched> = calls
            .iter()
            .map(|(what, call)| Batched {
                what: what.clone(),
                call: *call,
                data: None,
                inner: None,
            })
            .collect();
        self.batched(&with, want)
    }

    /// `calls` for calls that take a pointer to bytes of their own (`Batched::data`): the
    /// bytes go into the scratch page after the table, as many calls a batch as fit.
    /// Main thread only (a batch's stop is recognised by the process's own pid).
    fn batched(&mut self, calls: &[Batched], want: impl Fn(usize, u64) -> Option<String>) -> R<()> {
        let page = PAGE_SIZE as u64;
        let code = self.tramp + ckpt_sys::process::TRAMPOLINE_BATCH_AT;
        let room = |c: &Batched| {
            c.data
                .as_ref()
                .map_or(0, |(_, b)| b.len().next_multiple_of(8) as u64)
        };
        let mut start = 0;
        while start < calls.len() {
            let (mut end, mut data) = (start, 0);
            while end < calls.len()
                && (end - start + 1) as u64 * BATCH_ENTRY + data + room(&calls[end]) <= page
            {
                data += room(&calls[end]);
                end += 1;
            }
            if end == start {
                return Err(RestoreError::Refused(format!(
                    "pid {}: {}: its data does not fit a page",
                    self.pid, calls[start].what
                )));
            }
            let table = (end - start) as u64 * BATCH_ENTRY;
            let mut blob = Vec::with_capacity(data as usize);
            let mut list = Vec::with_capacity(end - start);
            for c in &calls[start..end] {
                let mut call = c.call;
                if let Some((arg, bytes)) = &c.data {
                    let at = self.scratch() + table + blob.len() as u64;
                    call.args[*arg] = at;
                    let mut bytes = bytes.clone();
                    if let Some((off, delta)) = c.inner {
                        bytes[off..off + 8].copy_from_slice(&(at + delta).to_le_bytes());
                    }
                    blob.extend_from_slice(&bytes);
                    blob.resize(blob.len().next_multiple_of(8), 0);
                }
                list.push(call);
            }
            if !blob.is_empty() {
                mem::write(self.pid, self.scratch() + table, &blob)?;
            }
            let got = self.remote.batch(code, self.scratch(), &list)?;
            for (j, (c, r)) in calls[start..end].iter().zip(got).enumerate() {
                if (-4095..0).contains(&r) {
                    return Err(ckpt_sys::Error::sys(
                        format!("{} (injected into pid {})", c.what, self.pid),
                        nix::errno::Errno::from_raw(-r as i32),
                    )
                    .into());
                }
                if let Some(why) = want(start + j, r as u64) {
                    return Err(RestoreError::Refused(format!("pid {}: {why}", self.pid)));
                }
            }
            start = end;
        }
        Ok(())
    }

    /// One call on its own (through `self.remote`: in a thread's too), its bytes at the
    /// start of the scratch page.
    fn one(&mut self, c: &Batched) -> R<u64> {
        let mut args = c.call.args;
        if let Some((arg, bytes)) = &c.data {
            let mut bytes = bytes.clone();
            if let Some((off, delta)) = c.inner {
                bytes[off..off + 8].copy_from_slice(&(self.scratch() + delta).to_le_bytes());
            }
            args[*arg] = self.put(0, &bytes)?;
        }
        self.call(&c.what, c.call.nr, &args)
    }

    /// Copies `bytes` into the scratch page at `off` and returns their address there.
    fn put(&self, off: u64, bytes: &[u8]) -> R<u64> {
        let at = self.scratch() + off;
        mem::write(self.pid, at, bytes)?;
        Ok(at)
    }

    pub fn run(&mut self, pages: &fill::Source, reset_sigs: &[u32]) -> R<()> {
        let t0 = Instant::now();
        let mut opts = Options::PTRACE_O_EXITKILL | Options::PTRACE_O_TRACESYSGOOD;
        if self.img.threads.len() > 1 {
            // The threads clone3 creates are attached at once (with these options).
            opts |= Options::PTRACE_O_TRACECLONE;
        }
        if self.has_seccomp() {
            // The filters installed below must not judge the calls injected after them.
            opts |= Options::from_bits_retain(libc::PTRACE_O_SUSPEND_SECCOMP);
        }
        ptrace::set_options(self.pid, opts)?;
        // Nothing may be delivered while the puppet is half built; SIGTRAP stays open for
        // the trampoline's int3 (a blocked SIGTRAP would be reset to SIG_DFL by the kernel).
        ptrace::set_sigmask(self.pid, !(1u64 << (SIGTRAP - 1)))?;
        if self.img.threads.len() > 1 {
            // Hundreds of injections to come (thread stacks, the threads themselves).
            self.pin()?;
        }
        self.check_cpu()?;
        self.clear_seed()?;
        let t_map = Instant::now();
        // One batch: the final protections, the mm fields, the seed's helper fds, the
        // sigactions, the main thread's state.
        let mut calls = self.map_vmas(pages)?;
        let t_fill = t_map.elapsed();
        calls.push(self.set_mm());
        calls.push(Batched::new(
            "close_range of the seed's helper fds",
            libc::SYS_close_range,
            &[
                self.plan.helper_base as u64,
                self.plan.helper_end() as u64,
                0,
            ],
        ));
        calls.extend(self.sigactions(reset_sigs, false));
        calls.extend(self.thread_calls(0));
        if self.img.core.cpuid_faulting {
            // Before the threads are made: they inherit it.
            calls.push(Batched::new(
                "arch_prctl(ARCH_SET_CPUID, 0)",
                libc::SYS_arch_prctl,
                &[ARCH_SET_CPUID, 0],
            ));
        }
        // Last: nothing after it in the batch nor before `creds` changes them.
        calls.push(Batched::new(
            "prctl(PR_GET_SECUREBITS)",
            libc::SYS_prctl,
            &[creds::PR_GET_SECUREBITS],
        ));
        let last = calls.len() - 1;
        let bits = std::cell::Cell::new(None);
        self.batched(&calls, |i, r| {
            if i == last {
                bits.set(Some(r as u32));
            }
            None
        })?;
        self.seed_securebits = bits.get();
        self.seccomp_shared()?;
        self.create_threads()?;
        self.itimers()?;
        // POSIX timers (after the threads: one may be directed at a thread), locks and
        // leases (a lease needs CAP_LEASE or the file's owner), prctl and membarrier
        // state: while still root, before the credentials.
        let scratch = self.scratch();
        crate::timers::restore(&mut self.remote, scratch, &self.img.core.posix_timers)?;
        crate::locks::restore(&mut self.remote, scratch, &self.img.fds)?;
        crate::task_state::restore(&mut self.remote, &self.img.core)?;
        self.seccomp_own()?;
        let changed = self.creds(self.img.core.creds.clone())?;
        // The threads were cloned with the seed's credentials, the main thread's until
        // just now: they need theirs unless nothing changed for anyone.
        if changed || self.img.threads.iter().any(|t| t.creds.is_some()) {
            self.thread_creds()?;
        }
        // As the process itself: its own RLIMIT_MEMLOCK and CAP_IPC_LOCK (or lack of it)
        // decide, not ckpt's.
        self.mlock()?;
        // From here no int3 runs: the trampoline's `syscall` is driven to its exit stop.
        self.remote.set_via(Via::SyscallInsn(self.tramp));
        // Pending signals last, with SIGTRAP blocked too: a re-queued SIGTRAP would
        // otherwise be delivered at the next int3 call and swallowed as its trap. One
        // batch: SIGTRAP's action, the pending signals, dumpable.
        ptrace::set_sigmask(self.pid, !0)?;
        let mut calls = self.sigactions(reset_sigs, true);
        calls.extend(self.pending_signals());
        calls.push(Batched::new(
            "prctl(PR_SET_DUMPABLE)",
            libc::SYS_prctl,
            &[PR_SET_DUMPABLE, dumpable_to_set(self.img.core.dumpable)],
        ));
        // After the credentials, which clear it (task_state.rs checked the root's).
        if self.img.core.pdeath_signal != 0 {
            calls.push(Batched::new(
                "prctl(PR_SET_PDEATHSIG)",
                libc::SYS_prctl,
                &[
                    libc::PR_SET_PDEATHSIG as u64,
                    self.img.core.pdeath_signal as u64,
                ],
            ));
        }
        self.batched(&calls, |_, _| None)?;
        // Every thread's last int3 is behind it: its final state goes in now.
        self.finish_threads()?;
        self.finish()?;
        debug!(
            pid = %self.pid,
            threads = self.img.threads.len(),
            injected = self.remote.calls + self.threads.iter().map(|t| t.remote.calls).sum::<u64>(),
            stops = self.remote.stops + self.threads.iter().map(|t| t.remote.stops).sum::<u64>(),
            memory_ms = ckpt_images::units::tenths(t_fill.as_secs_f64() * 1e3),
            total_ms = ckpt_images::units::ms(t0),
            "puppet done"
        );
        Ok(())
    }

    /// The image's FPU/AVX state must fit this CPU's xsave layout, in every thread.
    fn check_cpu(&self) -> R<()> {
        let seed = ptrace::get_xstate(self.pid)?;
        let have = ckpt_sys::process::xsave_features(&seed);
        for t in &self.img.threads {
            let want = ckpt_sys::process::xsave_features(&t.xsave);
            if want & !have != 0 || t.xsave.len() != seed.len() {
                return Err(RestoreError::Refused(format!(
                    "pid {}: the image's CPU state of thread {} (xfeatures {want:#x}, {} bytes) \
                     does not fit this CPU (xfeatures {have:#x}, {} bytes)",
                    self.pid,
                    t.tid,
                    t.xsave.len(),
                    seed.len()
                )));
            }
        }
        Ok(())
    }

    /// brk, arg/env areas, auxv and the exe link, in one PR_SET_MM_MAP (the only form
    /// that works without CAP_SYS_RESOURCE): the struct prctl_mm_map, the auxv after it.
    fn set_mm(&self) -> Batched {
        const AUXV_PTR_AT: usize = 11 * 8;
        const STRUCT_LEN: usize = 13 * 8;
        let mm = &self.img.mm;
        let mut b = Vec::with_capacity(STRUCT_LEN + mm.auxv.len());
        for v in [
            mm.start_code,
            mm.end_code,
            mm.start_data,
            mm.end_data,
            mm.start_brk,
            mm.brk,
            mm.start_stack,
            mm.arg_start,
            mm.arg_end,
            mm.env_start,
            mm.env_end,
            0, // auxv: the address of the bytes after the struct
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&(mm.auxv.len() as u32).to_le_bytes());
        b.extend_from_slice(&(self.plan.exe_fd() as u32).to_le_bytes());
        debug_assert_eq!(b.len(), STRUCT_LEN);
        b.extend_from_slice(&mm.auxv);
        Batched::new(
            "prctl(PR_SET_MM_MAP)",
            libc::SYS_prctl,
            &[PR_SET_MM, PR_SET_MM_MAP, 0, STRUCT_LEN as u64, 0],
        )
        .with(2, b)
        .pointing(AUXV_PTR_AT, STRUCT_LEN as u64)
    }

    /// The last steps: affinity, then the munmap of the trampoline, stopped at its
    /// syscall exit where the final registers, FPU state and sigmask are set, so the task
    /// never runs another instruction of ours.
    fn finish(&mut self) -> R<()> {
        let core = &self.img.core;
        let t = &self.img.threads[0];
        if core.cpu_affinity != 0 {
            // Best effort: the machine may have fewer CPUs than the one dumped on.
            let _ = ckpt_sys::process::set_affinity(self.pid, core.cpu_affinity);
        }
        if t.ioprio != 0 {
            ckpt_sys::process::set_ioprio(self.pid, t.ioprio)?;
        }
        if let Some(f) = core.coredump_filter {
            let path = format!("/proc/{}/coredump_filter", self.pid);
            std::fs::write(&path, format!("{f:#x}"))
                .map_err(|e| RestoreError::Refused(format!("writing {f:#x} to {path}: {e}")))?;
        }
        let r = self.remote.syscall_to_exit(
            libc::SYS_munmap,
            &[self.tramp, 2 * PAGE_SIZE as u64],
            self.tramp,
        )?;
        if r != 0 {
            return Err(RestoreError::Refused(format!(
                "pid {}: final munmap of the trampoline returned {r}",
                self.pid
            )));
        }
        self.stop_in_get_signal()?;
        let mut regs = crate::regs::from_image(t.regs.as_ref().expect("checked at load"));
        ckpt_sys::regs::fix_syscall_restart(&mut regs);
        ptrace::set_regs(self.pid, &regs)?;
        ptrace::set_xstate(self.pid, &t.xsave)?;
        // Only now: an unblocked pending signal must be delivered on top of the final
        // registers, after the detach, not stop an injected call half way.
        ptrace::set_sigmask(self.pid, t.sigmask)?;
        Ok(())
    }

    /// From the munmap's syscall-exit stop to an interrupt's event stop, which is inside
    /// get_signal: the final registers set there pass through the kernel's syscall-restart
    /// rules on the way out (`fix_syscall_restart`). Every signal but SIGKILL and SIGSTOP
    /// is blocked, so nothing else runs meanwhile; a SIGSTOP is passed on and its
    /// group-stop (inside get_signal too) serves as well.
    fn stop_in_get_signal(&mut self) -> R<()> {
        ptrace::interrupt(self.pid)?;
        ptrace::cont(self.pid, None)?;
        loop {
            match ptrace::wait(self.pid)? {
                Stop::EventStop(_) => return Ok(()),
                Stop::Signal(sig) => {
                    ptrace::cont(self.pid, nix::sys::signal::Signal::try_from(sig).ok())?
                }
                other => {
                    return Err(RestoreError::Refused(format!(
                        "pid {}: unexpected stop {other:?} after the final munmap",
                        self.pid
                    )))
                }
            }
        }
    }
}

/// The PR_SET_DUMPABLE value for a dumped one. prctl takes only 0 and 1; 2
/// (SUID_DUMP_ROOT) is set by the kernel alone, when fs.suid_dumpable is 2 and the process
/// changed credentials or exec'd a setuid program. 0 is what keeps its meaning: like 2 it
/// keeps the process's ptrace and /proc files from its own uid (only 1 opens them); only
/// the root-owned core dump is lost.
fn dumpable_to_set(dumped: i32) -> u64 {
    u64::from(dumped == 1)
}
