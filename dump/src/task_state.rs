//! Process-wide kernel state that only the task can tell (injected prctl and membarrier
//! calls) or that /proc shows in a file of its own (loginuid, timer slack): what restore
//! sets again, and the prctl values ckpt cannot restore, checked to be at their default
//! (refused otherwise). The inventory is in `known_state.rs`.

use crate::{refuse, DumpError};
use ckpt_sys::inject::Call;
use ckpt_sys::{proc, Pid};

const PR_GET_PDEATHSIG: u64 = 2;
const PR_GET_TSC: u64 = 25;
const PR_TSC_ENABLE: u32 = 1;
const PR_MCE_KILL_GET: u64 = 34;
const PR_MCE_KILL_DEFAULT: i64 = 2;
const PR_GET_CHILD_SUBREAPER: u64 = 37;
const PR_GET_THP_DISABLE: u64 = 42;
const PR_SCHED_CORE: u64 = 62;
const PR_SCHED_CORE_GET: u64 = 0;
const PR_GET_MDWE: u64 = 66;
const PR_GET_MEMORY_MERGE: u64 = 68;
const PR_FUTEX_HASH: u64 = 78;
const PR_FUTEX_HASH_GET_SLOTS: u64 = 2;
const MEMBARRIER_CMD_GET_REGISTRATIONS: u64 = 1 << 9;
const ARCH_GET_CPUID: u64 = 0x1011;
const KEYCTL_GET_KEYRING_ID: u64 = 0;
const KEY_SPEC_THREAD_KEYRING: i64 = -1;
const KEY_SPEC_PROCESS_KEYRING: i64 = -2;
const EINVAL: i64 = 22;
/// Bytes of the scratch page this module uses (the LDT's first entry at +32).
pub const SCRATCH_LEN: u64 = 48;

/// What restore sets again.
#[derive(Debug, Default, Clone)]
pub struct TaskState {
    pub loginuid: u32,
    pub thp_disable: u32,
    pub child_subreaper: bool,
    pub membarrier_registrations: u32,
    /// /proc/PID/timerslack_ns.
    pub timerslack_ns: u64,
    /// The slots of a single-threaded process's private futex hash (one made when it had
    /// threads, or asked for), or 0. A multi-threaded process's is made again by its
    /// threads' creation.
    pub futex_hash_slots: u32,
    /// CPUID faulting is on (arch_prctl(ARCH_SET_CPUID, 0): a CPUID instruction raises
    /// SIGSEGV, which record-and-replay tools and sandboxes use to emulate it). The main
    /// thread's flag, given to every thread at restore.
    pub cpuid_faulting: bool,
    /// The nice value of the process's autogroup (/proc/PID/autogroup; the scheduler's
    /// group of a session), or None where the kernel has no autogroups.
    pub autogroup_nice: Option<i32>,
    /// PR_GET_PDEATHSIG (0: none). Recorded, not refused: a process of the tree has its
    /// parent back; the root only when restored as ckpt's sibling, which the restore
    /// checks (the dump cannot know how it will be restored).
    pub pdeath_signal: i32,
}

/// /proc/PID/loginuid (4294967295: never set).
pub fn loginuid(pid: Pid) -> Result<u32, DumpError> {
    let path = format!("/proc/{pid}/loginuid");
    let text = proc::read_trimmed(&path)?;
    text.parse()
        .map_err(|e| DumpError::Lost(format!("{path}: {text:?}: {e}")))
}

/// /proc/PID/autogroup reads "/autogroup-N nice K"; the file is missing on a kernel
/// built without autogroups, and reads empty for a task of the default group, whose session
/// was never made by setsid() since boot (pid 1 and what it starts without one, as a CI
/// runner): that group is the root task group, whose nice cannot be set, so there is
/// nothing to carry.
fn autogroup_nice(pid: Pid) -> Result<Option<i32>, DumpError> {
    let path = format!("/proc/{pid}/autogroup");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(DumpError::Lost(format!("{path}: {e}"))),
    };
    parse_autogroup(&text)
        .ok_or_else(|| DumpError::Lost(format!("{path}: {:?}: no nice value", text.trim())))
}

/// The nice of "/autogroup-N nice K"; Some(None) for the empty text of the default group.
fn parse_autogroup(text: &str) -> Option<Option<i32>> {
    if text.trim().is_empty() {
        return Some(None);
    }
    text.split_whitespace()
        .skip_while(|w| *w != "nice")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .map(Some)
}

/// The injected queries, answered in `SCRATCH_LEN` bytes of the task's scratch page at
/// `scratch`; `finish` reads their results, in this order.
pub fn calls(scratch: u64) -> Vec<Call> {
    let prctl = |args: &[u64]| Call::new(libc::SYS_prctl, args);
    vec![
        prctl(&[PR_GET_THP_DISABLE]),
        prctl(&[PR_GET_CHILD_SUBREAPER, scratch]),
        prctl(&[PR_GET_PDEATHSIG, scratch + 4]),
        prctl(&[PR_GET_TSC, scratch + 8]),
        prctl(&[PR_MCE_KILL_GET, 0, 0, 0, 0]),
        prctl(&[PR_GET_MDWE, 0, 0, 0, 0]),
        prctl(&[PR_GET_MEMORY_MERGE, 0, 0, 0, 0]),
        prctl(&[PR_FUTEX_HASH, PR_FUTEX_HASH_GET_SLOTS, 0, 0, 0]),
        // pid 0 (itself), PIDTYPE_PID, the cookie at scratch+16.
        prctl(&[PR_SCHED_CORE, PR_SCHED_CORE_GET, 0, 0, scratch + 16]),
        Call::new(
            libc::SYS_membarrier,
            &[MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0],
        ),
        // The thread's NUMA policy mode at scratch+24 (no nodemask asked).
        Call::new(libc::SYS_get_mempolicy, &[scratch + 24, 0, 0, 0, 0]),
        // 1 when CPUID runs normally, 0 when it faults (on CPUs without CPUID faulting
        // it is always 1).
        Call::new(libc::SYS_arch_prctl, &[ARCH_GET_CPUID, 0]),
        // modify_ldt(0: read) copies the LDT's entries and returns their size; 0 when
        // the process never made one.
        Call::new(libc::SYS_modify_ldt, &[0, scratch + 32, 16]),
        // A keyring's serial, or -ENOKEY: without `create`, asking makes none.
        Call::new(
            libc::SYS_keyctl,
            &[KEYCTL_GET_KEYRING_ID, KEY_SPEC_PROCESS_KEYRING as u64, 0],
        ),
        Call::new(
            libc::SYS_keyctl,
            &[KEYCTL_GET_KEYRING_ID, KEY_SPEC_THREAD_KEYRING as u64, 0],
        ),
    ]
}

/// A thread's NUMA memory policy (set_mempolicy) is not restored: refused unless it is
/// the default. (Mode 0 is MPOL_DEFAULT; the high bits are mode flags.)
pub fn numa_policy_is_default(who: &str, mode: i32) -> Result<(), DumpError> {
    if mode == 0 {
        return Ok(());
    }
    Err(refuse(format!(
        "{who}: its NUMA memory policy (set_mempolicy) is mode {mode:#x}; restoring it is \
         not supported yet (only the default is)"
    )))
}

/// The state, from the raw results of `calls` (a getter this kernel lacks is -EINVAL,
/// taken as "not set") and the `SCRATCH_LEN` bytes they wrote at `scratch`. `threads`:
/// the task's thread count (the futex hash is automatic once a process has threads).
pub fn finish(pid: Pid, results: &[i64], b: &[u8], threads: usize) -> Result<TaskState, DumpError> {
    let mut st = TaskState {
        loginuid: loginuid(pid)?,
        timerslack_ns: {
            let path = format!("/proc/{pid}/timerslack_ns");
            let t = proc::read_trimmed(&path)?;
            t.parse()
                .map_err(|e| DumpError::Lost(format!("{path}: {t:?}: {e}")))?
        },
        autogroup_nice: autogroup_nice(pid)?,
        ..Default::default()
    };
    let &[thp, _subreaper, _pdeathsig, tsc_ok, mce, mdwe, merge, slots, core, regs, mempolicy, cpuid, ldt, process_keyring, thread_keyring] =
        results
    else {
        return Err(DumpError::Lost(format!(
            "pid {pid}: {} task-state results, not 15",
            results.len()
        )));
    };
    if thp < 0 {
        return Err(DumpError::Lost(format!(
            "pid {pid}: injected prctl(PR_GET_THP_DISABLE) failed: errno {}",
            -thp
        )));
    }
    st.thp_disable = thp as u32;
    let tsc_ok = tsc_ok == 0;
    let int = |o: usize| i32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
    st.child_subreaper = int(0) != 0;
    let pdeathsig = int(4);
    let tsc = int(8) as u32;
    let cookie = u64::from_le_bytes(b[16..24].try_into().expect("8 bytes"));
    // ENOSYS: a kernel without NUMA has no policies to lose.
    if mempolicy == 0 {
        numa_policy_is_default(&format!("pid {pid}"), int(24))?;
    }

    let not_default = |what: String| {
        refuse(format!(
            "pid {pid}: {what}; restoring it is not supported yet (only the default is)"
        ))
    };
    if !(0..=64).contains(&pdeathsig) {
        return Err(DumpError::Lost(format!(
            "pid {pid}: PR_GET_PDEATHSIG gave {pdeathsig}, no signal"
        )));
    }
    st.pdeath_signal = pdeathsig;
    if tsc_ok && tsc != PR_TSC_ENABLE {
        return Err(not_default(format!("PR_SET_TSC is {tsc}")));
    }
    if mce >= 0 && mce != PR_MCE_KILL_DEFAULT {
        return Err(not_default(format!("PR_MCE_KILL policy is {mce}")));
    }
    if mdwe > 0 {
        return Err(not_default(format!(
            "memory-deny-write-execute (PR_SET_MDWE) is {mdwe:#x}"
        )));
    }
    if merge > 0 {
        return Err(not_default(
            "KSM merging of the whole process (PR_SET_MEMORY_MERGE) is on".into(),
        ));
    }
    if threads == 1 && slots > 0 {
        st.futex_hash_slots = slots as u32;
    }
    if core != -EINVAL && core >= 0 && cookie != 0 {
        return Err(not_default(format!(
            "it has a core-scheduling cookie ({cookie:#x})"
        )));
    }
    if regs < 0 {
        // Before 6.3 there is no way to ask; registrations would be lost silently.
        return Err(refuse(format!(
            "pid {pid}: membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS) failed (errno {}): \
             this kernel cannot tell ckpt the process's membarrier registrations",
            -regs
        )));
    }
    st.membarrier_registrations = regs as u32;
    // ENODEV: the CPU cannot fault on CPUID, so nothing can have turned it on.
    st.cpuid_faulting = cpuid == 0;
    if ldt > 0 {
        // Segment selectors in the registers may point into it, and restoring the
        // descriptors (modify_ldt write) is not done.
        return Err(not_default(
            "it has a local descriptor table (modify_ldt: Wine, some old runtimes)".into(),
        ));
    }
    for (which, serial) in [("process", process_keyring), ("thread", thread_keyring)] {
        if serial >= 0 {
            return Err(not_default(format!(
                "it has a {which} keyring (key {serial}; keyctl KEY_SPEC_{}_KEYRING) whose \
                 keys would be lost",
                which.to_uppercase()
            )));
        }
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::parse_autogroup;

    #[test]
    fn autogroup_text() {
        assert_eq!(parse_autogroup("/autogroup-14730 nice 7\n"), Some(Some(7)));
        assert_eq!(parse_autogroup("/autogroup-1 nice -3\n"), Some(Some(-3)));
        // The default group (pid 1's session) reads empty: nothing to carry.
        assert_eq!(parse_autogroup(""), Some(None));
        assert_eq!(parse_autogroup("/autogroup-1 nice\n"), None);
    }
}
