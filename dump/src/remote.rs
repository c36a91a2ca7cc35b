//! What only the task itself can tell, asked by syscalls injected into it: sigactions,
//! itimers, sigaltstack, tid address, brk, securebits, dumpable (and, from each other
//! thread, its tid address and sigaltstack: `threads::query`).
//!
//! The first and last syscalls (mmap and munmap of a scratch area) run through an
//! existing `syscall` (`0f 05`) of the task's [vdso], driven by PTRACE_SYSCALL: nothing
//! of the task's is poked, and no int3 resets a blocked SIGTRAP. The scratch area (four
//! pages in the middle of the largest free gap, so it never merges with a neighbour)
//! holds a small loop (`ckpt_sys::inject::BATCH_CODE`), a page of answers and a table of
//! calls: the bulk of the queries run as one batch, one stop for all of them instead of
//! two per call (each stop waits for the scheduler: on a loaded machine that was ~9 ms a
//! process). Where the task may not have executable anonymous memory, the batch's calls
//! run one by one through the vDSO instead. The area is unmapped at the end and was
//! never among the mappings dumped.

use crate::mm::Vdso;
use crate::seize::Seized;
use crate::{refuse, DumpError};
use ckpt_images::pb;
use ckpt_sys::inject::{Call, Remote, Via, BATCH_CODE, BATCH_ENTRY};
use ckpt_sys::mem;
use ckpt_sys::proc::Mapping;
use ckpt_sys::Pid;

const PAGE: u64 = 4096;
/// The scratch area: the batch code, a page of answers, two pages of call table.
pub const SCRATCH_LEN: u64 = 4 * PAGE;
const DATA: u64 = PAGE;
const TABLE: u64 = 2 * PAGE;
const TABLE_ENTRIES: usize = (2 * PAGE / BATCH_ENTRY) as usize;
/// Lowest address mmap may use (vm.mmap_min_addr's default) and the top of user space.
const LOW: u64 = 0x10000;
const TASK_SIZE: u64 = 0x7fff_ffff_f000;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
const PR_GET_DUMPABLE: u64 = 3;
const PR_GET_SECUREBITS: u64 = 27;
const PR_GET_TID_ADDRESS: u64 = 40;
const MCL_FUTURE: u32 = 2;
const MCL_ONFAULT: u32 = 4;
const SIGKILL: u32 = 9;
const SIGSTOP: u32 = 19;

/// Layout of the answers page (at DATA in the scratch area).
const OFF_SIGACTION: u64 = 0; // 64 x struct sigaction (32 bytes): 2048
const SIGACTION_LEN: u64 = 32;
const OFF_TID_ADDRESS: u64 = 2048; // u64
const OFF_ALTSTACK: u64 = 2056; // stack_t: 24 bytes
const OFF_ITIMERS: u64 = 2080; // 3 x struct itimerval (32 bytes)
const OFF_TASK_STATE: u64 = 2176; // task_state::SCRATCH_LEN bytes
const OFF_TIMERS: u64 = 2304; // the rest: struct itimerspec per POSIX timer
                              // The other threads' answers (36 bytes), read back after each thread: the timers'
                              // results were read before.
const OFF_THREAD: u64 = 3072;
/// The mappings' NUMA policy modes (4 bytes each) when they fit in the main batch (read
/// back before the timers' calls, which may write over them).
const OFF_NUMA: u64 = 3200;

/// The answers, and how many syscalls it took.
#[derive(Debug, Default)]
pub struct Injected {
    pub brk: u64,
    pub tid_address: u64,
    pub altstack: pb::SigAltStack,
    pub securebits: u32,
    pub dumpable: i32,
    /// mlockall() flags in force for future mappings (MCL_FUTURE, MCL_ONFAULT), or 0.
    pub mlockall: u32,
    pub itimers: Vec<pb::Itimer>,
    pub sigactions: Vec<pb::SigAction>,
    /// The other threads' tid addresses and sigaltstacks, in `Seized::threads` order.
    pub threads: Vec<crate::threads::Answers>,
    /// prctl and membarrier state, loginuid (task_state.rs).
    pub task: crate::task_state::TaskState,
    pub posix_timers: Vec<pb::PosixTimer>,
    /// The write tracker's fd, when one was asked for (`track.rs`).
    pub tracker_fd: Option<i32>,
    pub calls: u64,
}

/// Offset of the first `syscall` instruction in `code`.
pub fn find_syscall_insn(code: &[u8]) -> Option<usize> {
    code.windows(2).position(|w| w == [0x0f, 0x05])
}

/// A page-aligned address for `len` bytes in the middle of the largest free gap of user
/// space, with at least one free page on each side. `maps` must be sorted by address.
pub fn pick_scratch(maps: &[Mapping], len: u64) -> Option<u64> {
    let mut best: Option<(u64, u64)> = None;
    let mut prev_end = LOW;
    let mut consider = |lo: u64, hi: u64| {
        if hi > lo && hi - lo >= len + 2 * PAGE && best.is_none_or(|(a, b)| hi - lo > b - a) {
            best = Some((lo, hi));
        }
    };
    for m in maps {
        if m.start >= TASK_SIZE {
            break;
        }
        consider(prev_end, m.start);
        prev_end = prev_end.max(m.end);
    }
    consider(prev_end, TASK_SIZE);
    best.map(|(lo, hi)| (lo + (hi - lo - len) / 2) & !(PAGE - 1))
}

fn u64_at(page: &[u8], off: u64) -> u64 {
    let o = off as usize;
    u64::from_le_bytes(page[o..o + 8].try_into().expect("8 bytes"))
}

/// Runs every query. `maps` is the task's layout (read before the scratch page exists),
/// `wanted_sigs` the SigIgn|SigCgt mask: only those actions differ from SIG_DFL, and
/// `locked_kb` its VmLck (both from the status the caller read of the stopped task: not
/// read again here).
pub fn collect(
    task: &mut Seized,
    maps: &[Mapping],
    vdso: &Vdso,
    (wanted_sigs, locked_kb): (u64, u64),
    tracker: bool,
) -> Result<Injected, DumpError> {
    let pid = task.pid();
    let (vdso_start, code) = vdso
        .code
        .as_ref()
        .ok_or_else(|| refuse(format!("pid {pid} has no [vdso]; not supported yet")))?;
    let insn = vdso_start
        + find_syscall_insn(code).ok_or_else(|| {
            refuse(format!(
                "pid {pid}: no syscall instruction in its [vdso] to inject through"
            ))
        })? as u64;
    let scratch = pick_scratch(maps, SCRATCH_LEN).ok_or_else(|| {
        refuse(format!(
            "pid {pid}: no free address range for a scratch page"
        ))
    })?;

    task.block_signals()?;
    let mut remote = Remote::new(pid, Via::SyscallInsn(insn))?;
    task.regs_changed = true;
    // Executable for the batch code; a task that may not have writable and executable
    // memory gets the batch's calls one by one instead.
    let rwx = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64 | MAP_FIXED_NOREPLACE;
    let mut batch = true;
    let mut got = remote.syscall_raw(
        libc::SYS_mmap,
        &[scratch, SCRATCH_LEN, rwx, flags, u64::MAX, 0],
    )?;
    if got == -(libc::EACCES as i64) || got == -(libc::EPERM as i64) {
        batch = false;
        got = remote.syscall_raw(
            libc::SYS_mmap,
            &[
                scratch,
                SCRATCH_LEN,
                rwx & !(libc::PROT_EXEC as u64),
                flags,
                u64::MAX,
                0,
            ],
        )?;
    }
    if (-4095..0).contains(&got) {
        return Err(ckpt_sys::Error::sys(
            format!("mmap of a scratch area at {scratch:#x} (injected into pid {pid})"),
            nix::errno::Errno::from_raw(-got as i32),
        )
        .into());
    }
    let got = got as u64;
    if got != scratch {
        // An old kernel ignoring MAP_FIXED_NOREPLACE would put it elsewhere: undo.
        task.scratch = Some((got, insn));
        return Err(DumpError::Lost(format!(
            "pid {pid}: scratch area landed at {got:#x}, not {scratch:#x}"
        )));
    }
    task.scratch = Some((scratch, insn));

    let mut inj = Injected::default();
    // mlockall(MCL_FUTURE) shows only in new mappings, and the scratch area is one: it
    // was locked if VmLck grew, and populated at once unless MCL_ONFAULT (looked at
    // before anything is written into it).
    if ckpt_sys::proc::status(pid)?.vmlck.unwrap_or(0) > locked_kb {
        let mut e = Vec::new();
        ckpt_sys::proc::Pagemap::open(pid)?.read(scratch, scratch + PAGE, &mut e)?;
        let present = e
            .first()
            .is_some_and(|&e| e & ckpt_sys::proc::PM_PRESENT != 0);
        inj.mlockall = MCL_FUTURE | if present { 0 } else { MCL_ONFAULT };
    }
    let data = scratch + DATA;
    let sigs: Vec<u32> = (1..=64u32)
        .filter(|&s| s != SIGKILL && s != SIGSTOP && wanted_sigs & (1u64 << (s - 1)) != 0)
        .collect();
    // The calls whose failure is an error, each with what it was; then task_state's,
    // whose raw results it judges itself.
    let mut named: Vec<(String, Call)> = vec![
        ("brk(0)".into(), Call::new(libc::SYS_brk, &[0])),
        (
            "prctl(PR_GET_SECUREBITS)".into(),
            Call::new(libc::SYS_prctl, &[PR_GET_SECUREBITS]),
        ),
        (
            "prctl(PR_GET_DUMPABLE)".into(),
            Call::new(libc::SYS_prctl, &[PR_GET_DUMPABLE]),
        ),
        (
            "prctl(PR_GET_TID_ADDRESS)".into(),
            Call::new(
                libc::SYS_prctl,
                &[PR_GET_TID_ADDRESS, data + OFF_TID_ADDRESS],
            ),
        ),
        (
            "sigaltstack(NULL, &old)".into(),
            Call::new(libc::SYS_sigaltstack, &[0, data + OFF_ALTSTACK]),
        ),
    ];
    for which in 0..3u64 {
        named.push((
            format!("getitimer({which})"),
            Call::new(
                libc::SYS_getitimer,
                &[which, data + OFF_ITIMERS + which * 32],
            ),
        ));
    }
    for &sig in &sigs {
        named.push((
            format!("rt_sigaction({sig}, NULL, &old)"),
            Call::new(
                libc::SYS_rt_sigaction,
                &[
                    sig as u64,
                    0,
                    data + OFF_SIGACTION + (sig as u64 - 1) * SIGACTION_LEN,
                    8,
                ],
            ),
        ));
    }
    let mut calls: Vec<Call> = named.iter().map(|(_, c)| *c).collect();
    calls.extend(crate::task_state::calls(data + OFF_TASK_STATE));
    let task_state_end = calls.len();
    // The mappings' NUMA policies ride along when they fit (one stop less).
    let user = user_mappings(maps);
    let numa_inline = batch
        && user.len() <= ((PAGE - OFF_NUMA) / 4) as usize
        && calls.len() + user.len() <= TABLE_ENTRIES;
    if numa_inline {
        calls.extend(numa_calls(&user, data + OFF_NUMA));
    }
    let results = if batch {
        remote.batch(scratch, scratch + TABLE, &{
            mem::write(pid, scratch, &BATCH_CODE)?;
            debug_assert!(calls.len() <= TABLE_ENTRIES);
            calls.clone()
        })?
    } else {
        remote.each(&calls)?
    };
    for ((what, _), &r) in named.iter().zip(&results) {
        if (-4095..0).contains(&r) {
            return Err(ckpt_sys::Error::sys(
                format!("{what} (injected into pid {pid})"),
                nix::errno::Errno::from_raw(-r as i32),
            )
            .into());
        }
    }
    inj.brk = results[0] as u64;
    inj.securebits = results[1] as u32;
    inj.dumpable = results[2] as i32;

    let mut page = vec![0u8; PAGE as usize];
    mem::read(pid, data, &mut page)?;
    // Every thread is stopped (none can be created): the ones seized are all there are.
    let threads = 1 + task.threads.len();
    let ts = OFF_TASK_STATE as usize;
    if numa_inline {
        let at = OFF_NUMA as usize;
        check_numa(
            pid,
            &user,
            &results[task_state_end..],
            &page[at..at + 4 * user.len()],
        )?;
    }
    inj.task = crate::task_state::finish(
        pid,
        &results[named.len()..task_state_end],
        &page[ts..ts + crate::task_state::SCRATCH_LEN as usize],
        threads,
    )?;
    inj.posix_timers = crate::timers::collect(&mut remote, data + OFF_TIMERS, PAGE - OFF_TIMERS)?;

    inj.tid_address = u64_at(&page, OFF_TID_ADDRESS);
    inj.altstack = pb::SigAltStack {
        sp: u64_at(&page, OFF_ALTSTACK),
        flags: u64_at(&page, OFF_ALTSTACK + 8) as u32,
        size: u64_at(&page, OFF_ALTSTACK + 16),
    };
    for which in 0..3u64 {
        let o = OFF_ITIMERS + which * 32;
        let us = |sec: u64, usec: u64| sec.wrapping_mul(1_000_000).wrapping_add(usec);
        let it = pb::Itimer {
            which: which as u32,
            interval_us: us(u64_at(&page, o), u64_at(&page, o + 8)),
            value_us: us(u64_at(&page, o + 16), u64_at(&page, o + 24)),
        };
        if it.interval_us != 0 || it.value_us != 0 {
            inj.itimers.push(it);
        }
    }
    for &sig in &sigs {
        let o = OFF_SIGACTION + (sig as u64 - 1) * SIGACTION_LEN;
        inj.sigactions.push(pb::SigAction {
            signo: sig,
            handler: u64_at(&page, o),
            flags: u64_at(&page, o + 8),
            restorer: u64_at(&page, o + 16),
            mask: u64_at(&page, o + 24),
        });
    }

    if tracker {
        inj.tracker_fd = Some(inject_tracker(&mut remote)?);
    }
    if !numa_inline {
        vma_numa_policies(&mut remote, batch.then_some(scratch), data, &user)?;
    }

    let (threads, thread_calls) = crate::threads::query(task, insn, data + OFF_THREAD)?;
    inj.threads = threads;

    remote.syscall(
        || format!("munmap of the scratch area at {scratch:#x}"),
        libc::SYS_munmap,
        &[scratch, SCRATCH_LEN],
    )?;
    task.scratch = None;
    // Back to the registers of the seize (with the rseq fix-up), while the task sits in
    // the syscall-exit stop of the munmap: the detach at release then runs the kernel's
    // restart logic on them.
    ckpt_sys::ptrace::set_regs(pid, &task.regs)?;
    task.unblock_signals()?;
    inj.calls = remote.calls + thread_calls;
    Ok(inj)
}

/// A NUMA policy set on a range (mbind, or on shared memory) is not restored: every
/// mapping is asked (get_mempolicy with MPOL_F_ADDR, in the main batch when they fit,
/// else in batches whose answers fill the data page), and one whose policy is not the
/// default is refused. The task's own policy, which an address without one of its own
/// reports, was checked to be the default first (`task_state`).
fn user_mappings(maps: &[Mapping]) -> Vec<&Mapping> {
    maps.iter().filter(|m| m.start < TASK_SIZE).collect()
}

/// get_mempolicy(&mode, NULL, 0, start, MPOL_F_ADDR) of each mapping, the modes at `at`.
fn numa_calls(maps: &[&Mapping], at: u64) -> Vec<Call> {
    const MPOL_F_ADDR: u64 = 2;
    maps.iter()
        .enumerate()
        .map(|(i, m)| {
            Call::new(
                libc::SYS_get_mempolicy,
                &[at + 4 * i as u64, 0, 0, m.start, MPOL_F_ADDR],
            )
        })
        .collect()
}

fn check_numa(pid: Pid, maps: &[&Mapping], results: &[i64], modes: &[u8]) -> Result<(), DumpError> {
    for ((m, &r), mode) in maps.iter().zip(results).zip(modes.chunks_exact(4)) {
        let mode = i32::from_le_bytes(mode.try_into().expect("4 bytes"));
        if r == 0 && mode != 0 {
            return Err(refuse(format!(
                "pid {pid}: mapping {:#x}-{:#x} {} has a NUMA memory policy of its own \
                 (mbind) of mode {mode:#x}; restoring it is not supported yet",
                m.start, m.end, m.name
            )));
        }
    }
    Ok(())
}

fn vma_numa_policies(
    remote: &mut Remote,
    code: Option<u64>,
    data: u64,
    user: &[&Mapping],
) -> Result<(), DumpError> {
    let pid = remote.pid();
    for chunk in user.chunks(TABLE_ENTRIES.min((PAGE / 4) as usize)) {
        let calls = numa_calls(chunk, data);
        let results = match code {
            Some(code) => remote.batch(code, code + TABLE, &calls)?,
            None => remote.each(&calls)?,
        };
        let mut modes = vec![0u8; 4 * chunk.len()];
        mem::read(pid, data, &mut modes)?;
        check_numa(pid, chunk, &results, &modes)?;
    }
    Ok(())
}

/// A userfaultfd created in the task (it binds to the caller's address space), moved high
/// (lowest free fd at or above its soft RLIMIT_NOFILE minus 64), close-on-exec, non-blocking.
fn inject_tracker(remote: &mut Remote) -> Result<i32, DumpError> {
    let pid = remote.pid();
    let soft = ckpt_sys::proc::limits(pid)?
        .get(libc::RLIMIT_NOFILE as usize)
        .map_or(1024, |l| l.0)
        .min(1 << 20);
    let low = soft.saturating_sub(64).max(3);
    let fd = remote.syscall(
        || "userfaultfd(O_CLOEXEC|O_NONBLOCK)".into(),
        libc::SYS_userfaultfd,
        &[(libc::O_CLOEXEC | libc::O_NONBLOCK) as u64],
    )?;
    let high = remote.syscall(
        || format!("fcntl(F_DUPFD_CLOEXEC, {low}) of the userfaultfd"),
        libc::SYS_fcntl,
        &[fd, libc::F_DUPFD_CLOEXEC as u64, low],
    );
    remote.syscall(|| "close of the userfaultfd".into(), libc::SYS_close, &[fd])?;
    Ok(high? as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_syscall() {
        assert_eq!(find_syscall_insn(&[0x90, 0x0f, 0x05, 0xc3]), Some(1));
        assert_eq!(find_syscall_insn(&[0x0f, 0x90, 0x05, 0x0f]), None);
        assert_eq!(find_syscall_insn(&[]), None);
    }

    #[test]
    fn syscall_in_our_own_vdso() {
        let maps = ckpt_sys::proc::smaps(nix::unistd::getpid()).unwrap();
        let v = maps.iter().find(|m| m.name == "[vdso]").unwrap();
        let code = ckpt_sys::process::read_own(v.start, v.len() as usize).unwrap();
        let at = find_syscall_insn(&code).expect("a syscall in the vDSO");
        assert_eq!(&code[at..at + 2], &[0x0f, 0x05]);
    }

    fn m(start: u64, end: u64) -> Mapping {
        Mapping {
            start,
            end,
            ..Default::default()
        }
    }

    #[test]
    fn scratch_lands_in_the_largest_gap_away_from_neighbours() {
        let maps = [
            m(0x40_0000, 0x50_0000),
            m(0x50_1000, 0x60_0000),
            m(0x7fff_0000_0000, 0x7fff_ffff_0000),
        ];
        let a = pick_scratch(&maps, PAGE).unwrap();
        assert_eq!(a % PAGE, 0);
        assert!(a >= 0x60_0000 + PAGE && a + 2 * PAGE <= 0x7fff_0000_0000);
        // Only a 3-page gap: the page sits in its middle.
        let maps = [m(LOW, 0x20_0000), m(0x20_3000, TASK_SIZE)];
        assert_eq!(pick_scratch(&maps, PAGE), Some(0x20_1000));
        let maps = [m(LOW, 0x20_0000), m(0x20_2000, TASK_SIZE)];
        assert_eq!(pick_scratch(&maps, PAGE), None);
        // Four pages in a six-page gap: one free page on each side.
        let maps = [m(LOW, 0x20_0000), m(0x20_6000, TASK_SIZE)];
        assert_eq!(pick_scratch(&maps, 4 * PAGE), Some(0x20_1000));
    }
}
