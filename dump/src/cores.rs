//! core-<pid>.img: the ProcessCore (identity, credentials, signal dispositions, limits,
//! timers) and one ThreadCore per thread (registers, masks, per-thread kernel state).

use crate::remote::Injected;
use crate::seize::Seized;
use crate::DumpError;
use ckpt_images::pb;
use ckpt_sys::proc::{self, Stat, Status};
use ckpt_sys::regs::Regs;
use ckpt_sys::{process, ptrace, Pid};
use nix::errno::Errno;

/// RLIMIT_CPU .. RLIMIT_RTTIME.
const RLIMIT_COUNT: u32 = 16;

/// What ptrace and /proc tell about one thread; the injected parts are added later.
pub struct Thread {
    core: pb::ThreadCore,
}

pub fn gp_regs(r: &Regs) -> pb::GpRegs {
    pb::GpRegs {
        r15: r.r15,
        r14: r.r14,
        r13: r.r13,
        r12: r.r12,
        rbp: r.rbp,
        rbx: r.rbx,
        r11: r.r11,
        r10: r.r10,
        r9: r.r9,
        r8: r.r8,
        rax: r.rax,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        orig_rax: r.orig_rax,
        rip: r.rip,
        cs: r.cs,
        eflags: r.eflags,
        rsp: r.rsp,
        ss: r.ss,
        fs_base: r.fs_base,
        gs_base: r.gs_base,
        ds: r.ds,
        es: r.es,
        fs: r.fs,
        gs: r.gs,
    }
}

/// Every thread of the stopped process, the leader first, as `Seized` holds them.
pub fn threads(task: &Seized) -> Result<Vec<Thread>, DumpError> {
    let pid = task.pid;
    let mut out = Vec::with_capacity(1 + task.threads.len());
    out.push(thread(pid, pid, &task.regs, &task.xsave, task.sigmask)?);
    for t in &task.threads {
        out.push(thread(pid, t.tid, &t.regs, &t.xsave, t.sigmask)?);
    }
    Ok(out)
}

fn thread(
    pid: Pid,
    tid: Pid,
    regs: &Regs,
    xsave: &[u8],
    sigmask: u64,
) -> Result<Thread, DumpError> {
    let rseq = match ptrace::get_rseq(tid) {
        Ok(c) if c.ptr != 0 => Some(pb::Rseq {
            ptr: c.ptr,
            len: c.len,
            flags: c.flags,
            sig: c.sig,
        }),
        Ok(_) => None,
        Err(e) if e.errno() == Some(Errno::EINVAL) => None,
        Err(e) => return Err(e.into()),
    };
    let (robust_list, robust_list_len) = process::get_robust_list(tid)?;
    let pending = ptrace::peek_siginfo(tid, false)?
        .into_iter()
        .map(|s| s.to_vec())
        .collect();
    let comm = proc::read_bytes(&format!("/proc/{pid}/task/{tid}/comm"))?;
    let name = String::from_utf8_lossy(comm.strip_suffix(b"\n").unwrap_or(&comm)).into_owned();
    Ok(Thread {
        core: pb::ThreadCore {
            tid: tid.as_raw(),
            regs: Some(gp_regs(regs)),
            xsave: xsave.to_vec(),
            sigmask,
            rseq,
            robust_list,
            robust_list_len,
            pending,
            name,
            cpu_affinity: process::affinity(tid)?,
            ioprio: process::get_ioprio(tid)?,
            ..Default::default()
        },
    })
}

/// The records of core-PID.img after the ProcessCore: the leader's with the leader's
/// injected answers, then each other thread's with its own.
pub fn thread_records(
    threads: Vec<Thread>,
    inj: &Injected,
) -> Result<Vec<pb::ThreadCore>, DumpError> {
    let mut out = Vec::with_capacity(threads.len());
    for (i, t) in threads.into_iter().enumerate() {
        let mut core = t.core;
        if i == 0 {
            core.tid_address = inj.tid_address;
            core.altstack = Some(inj.altstack);
        } else if let Some(a) = inj.threads.get(i - 1) {
            core.tid_address = a.tid_address;
            core.altstack = Some(a.altstack);
            if let Some(bits) = a.securebits {
                let tid = Pid::from_raw(core.tid);
                core.creds = Some(creds(&proc::status(tid)?, bits));
            }
        }
        out.push(core);
    }
    Ok(out)
}

/// Credentials as /proc/PID/status shows them, with the injected securebits.
fn creds(status: &Status, securebits: u32) -> pb::Creds {
    pb::Creds {
        uid: vec![status.ruid, status.euid, status.suid, status.fuid],
        gid: vec![status.rgid, status.egid, status.sgid, status.fgid],
        groups: status.groups.iter().map(|&g| g as u32).collect(),
        cap_inh: status.capinh,
        cap_prm: status.capprm,
        cap_eff: status.capeff,
        cap_bnd: status.capbnd.unwrap_or(0),
        cap_amb: status.capamb.unwrap_or(0),
        securebits,
    }
}

pub fn process(
    pid: Pid,
    stat: &Stat,
    status: &Status,
    inj: &Injected,
    nr_threads: usize,
) -> Result<pb::ProcessCore, DumpError> {
    let creds = creds(status, inj.securebits);
    let mut rlimits = Vec::with_capacity(RLIMIT_COUNT as usize);
    // From /proc: prlimit(2) on a task of another uid needs CAP_SYS_RESOURCE.
    for (resource, &(cur, max)) in proc::limits(pid)?
        .iter()
        .enumerate()
        .take(RLIMIT_COUNT as usize)
    {
        rlimits.push(pb::Rlimit {
            resource: resource as u32,
            cur,
            max,
        });
    }
    let personality_text = proc::read_trimmed(&format!("/proc/{pid}/personality"))?;
    let personality = u32::from_str_radix(&personality_text, 16).map_err(|e| {
        DumpError::Lost(format!(
            "/proc/{pid}/personality: {personality_text:?}: {e}"
        ))
    })?;
    let oom_text = proc::read_trimmed(&format!("/proc/{pid}/oom_score_adj"))?;
    let oom_score_adj = oom_text
        .parse()
        .map_err(|e| DumpError::Lost(format!("/proc/{pid}/oom_score_adj: {oom_text:?}: {e}")))?;
    let sched = process::get_sched(pid)?;
    let cwd = proc::read_link(&format!("/proc/{pid}/cwd"))?
        .to_string_lossy()
        .into_owned();
    let cwd_removed = cwd.ends_with(" (deleted)") && crate::validate::cwd_removed(pid);
    let filter_text = proc::read_trimmed(&format!("/proc/{pid}/coredump_filter"))?;
    let coredump_filter = u32::from_str_radix(&filter_text, 16).map_err(|e| {
        DumpError::Lost(format!("/proc/{pid}/coredump_filter: {filter_text:?}: {e}"))
    })?;
    Ok(pb::ProcessCore {
        pid: pid.as_raw(),
        ppid: stat.ppid,
        pgid: stat.pgrp,
        sid: stat.session,
        comm: stat.comm.clone(),
        creds: Some(creds),
        sigactions: inj.sigactions.clone(),
        umask: status.umask.unwrap_or(0o022),
        cwd: if cwd_removed {
            cwd.trim_end_matches(" (deleted)").to_string()
        } else {
            cwd
        },
        cwd_removed,
        root: proc::read_link(&format!("/proc/{pid}/root"))?
            .to_string_lossy()
            .into_owned(),
        rlimits,
        personality,
        no_new_privs: status.nonewprivs.unwrap_or(0) != 0,
        dumpable: inj.dumpable,
        oom_score_adj,
        itimers: inj.itimers.clone(),
        shared_pending: ptrace::peek_siginfo(pid, true)?
            .into_iter()
            .map(|s| s.to_vec())
            .collect(),
        nr_threads: nr_threads as u32,
        cpu_affinity: process::affinity(pid)?,
        nice: process::get_nice(pid)?,
        sched_policy: sched.0,
        rt_priority: sched.1,
        loginuid: Some(inj.task.loginuid),
        thp_disable: inj.task.thp_disable,
        child_subreaper: inj.task.child_subreaper,
        membarrier_registrations: inj.task.membarrier_registrations,
        posix_timers: inj.posix_timers.clone(),
        timerslack_ns: Some(inj.task.timerslack_ns),
        coredump_filter: Some(coredump_filter),
        // Filled by the caller, which seized the task.
        stop_signal: 0,
        futex_hash_slots: inj.task.futex_hash_slots,
        cpuid_faulting: inj.task.cpuid_faulting,
        autogroup_nice: inj.task.autogroup_nice,
        pdeath_signal: inj.task.pdeath_signal,
        // Filled by the caller (seccomp.rs).
        seccomp_filters: Vec::new(),
    })
}
