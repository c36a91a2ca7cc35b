//! The inventory of per-task kernel state this ckpt knows, and the checks that make it
//! the only state a dump can carry: every /proc/PID/status field and every smaps VmFlags
//! letter is listed here with what ckpt does about it; one it has never heard of (a newer
//! kernel's) is refused, naming it and the `--allow-unknown-state NAME` override, never
//! silently dropped.
//!
//! What each treatment means:
//! - `Restored`: dumped and restored, and compared again by restore's verification;
//! - `Derived`: not state the process set (counters, sizes, ids that follow from what
//!   is restored, or checked elsewhere with its own message): not dumped;
//! - `SameAsCkpt`: restore cannot set it; the restored process inherits ckpt's own
//!   value, so the dump refuses unless the task's value equals ckpt's;
//! - `Expect(v)`: only the default `v` is supported; anything else is refused;
//! - `PerLevel`: a per-pid-namespace list (ckpt's namespace, a dumped container's,
//!   nested ones below the tree's); the namespaces are judged by `ns.rs` and `pidns.rs`;
//! - `Refused(why)`: present (a VmFlags letter set) means refused.
//!
//! Other state, outside these two files (all checked by the dump, see the modules):
//! - prctl values read by injected calls: PR_GET_DUMPABLE, PR_GET_SECUREBITS (keep-caps),
//!   PR_GET_TID_ADDRESS, PR_GET_THP_DISABLE, PR_GET_CHILD_SUBREAPER, PR_GET_PDEATHSIG
//!   (restored; the root's only as a sibling of ckpt); PR_GET_TSC (PR_TSC_ENABLE), PR_MCE_KILL_GET (default),
//!   PR_GET_MDWE (0), PR_GET_MEMORY_MERGE (0), PR_FUTEX_HASH_GET_SLOTS (0 for a
//!   single-threaded process), PR_SCHED_CORE_GET (no cookie, where the kernel has core
//!   scheduling): checked at their default, refused otherwise (`task_state.rs`); the
//!   timer slack (/proc/PID/timerslack_ns) is restored; membarrier registrations
//!   (MEMBARRIER_CMD_GET_REGISTRATIONS) are restored; the audit loginuid is restored.
//! - Other injected queries: arch_prctl(ARCH_GET_CPUID) (CPUID faulting, restored: the
//!   main thread's flag, for every thread), modify_ldt read (an LDT: refused), keyctl
//!   KEY_SPEC_PROCESS_KEYRING and the main thread's KEY_SPEC_THREAD_KEYRING (refused
//!   when they exist). The session keyring is not dumped: the restored process has the
//!   one it inherits from ckpt (runc's per-container `_ses.ID` keyring is lost, as with
//!   CRIU); its keys are not part of the process's memory.
//! - /proc/PID/autogroup: the nice value of the session's autogroup is restored by a
//!   session leader the restore makes (a new session is a new autogroup).
//! - prctl state ckpt cannot read and so does not check: PR_SET_PTRACER (Yama's ptracer
//!   exception: no getter), PR_SET_SYSCALL_USER_DISPATCH (no prctl getter; ptrace has
//!   one ckpt does not call yet), PR_SET_IO_FLUSHER (its getter needs CAP_SYS_RESOURCE,
//!   which root lacks here), PR_SET_TIMING (obsolete, no effect). The arch-specific ones of
//!   other architectures (FP mode, tagged addresses, shadow stack status, PAC keys,
//!   endianness, unaligned access) do not exist on x86-64.
//! - fdinfo: `pos`, `flags` (with O_CLOEXEC) restored; `mnt_id`, `ino` derived (checked
//!   through the path); `lock:` lines restored (`locks.rs`): FLOCK, POSIX, OFDLCK (all
//!   ADVISORY) and ACTIVE LEASEs; anything else refused. Locks listed in /proc/locks
//!   under the task's pid but held through no fd (e.g. flock through a mapping only) are
//!   refused. The F_SETSIG of a description holding a lease (its break signal) is
//!   restored; so are F_SETOWN and F_SETSIG of an O_ASYNC fd and of any socket (its
//!   owner gets SIGURG) (files.rs); those of other fds (no signal goes to them) are not
//!   dumped.
//! - /proc/PID/timers: every POSIX timer restored with its id, clock, notification and
//!   remaining time (`timers.rs`); one directed at another thread, or on a clock of
//!   another process, is refused. Its overrun count is recorded but cannot be set back.
//! - /proc/PID/sessionid (the audit session) cannot be set: a restored process gets a new
//!   one when its loginuid is written (documented, not refused).

use crate::{refuse, DumpError};
use ckpt_sys::proc::Mapping;
use ckpt_sys::Pid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    Restored,
    Derived,
    SameAsCkpt,
    Expect(&'static str),
    PerLevel,
    Refused(&'static str),
}

use Treatment::*;

/// Every /proc/PID/status field of Linux 6.18 (x86-64 and the config-dependent ones).
pub const STATUS_FIELDS: &[(&str, Treatment)] = &[
    ("Name", Restored),
    ("Umask", Restored),
    ("State", Derived),
    ("Tgid", Restored),
    ("Ngid", Derived),
    ("Pid", Restored),
    // Becomes ckpt's pid (documented in the README).
    ("PPid", Derived),
    // Refused by validate when non-zero.
    ("TracerPid", Derived),
    ("Uid", Restored),
    ("Gid", Restored),
    ("FDSize", Derived),
    ("Groups", Restored),
    ("NStgid", PerLevel),
    ("NSpid", PerLevel),
    ("NSpgid", PerLevel),
    ("NSsid", PerLevel),
    ("Kthread", Expect("0")),
    ("VmPeak", Derived),
    ("VmSize", Derived),
    // Restored through the mlock state of each VMA.
    ("VmLck", Derived),
    // Pinned pages (RDMA, io_uring buffers): only a driver or io_uring pins them.
    ("VmPin", Expect("0 kB")),
    ("VmHWM", Derived),
    ("VmRSS", Derived),
    ("RssAnon", Derived),
    ("RssFile", Derived),
    ("RssShmem", Derived),
    ("VmData", Derived),
    ("VmStk", Derived),
    ("VmExe", Derived),
    ("VmLib", Derived),
    ("VmPTE", Derived),
    ("VmSwap", Derived),
    // hugetlb mappings are refused by their VmFlags (`ht`).
    ("HugetlbPages", Derived),
    ("CoreDumping", Expect("0")),
    ("THP_enabled", Restored),
    // Linear address masking (ARCH_ENABLE_TAGGED_ADDR): no way to set it back here.
    ("untag_mask", SameAsCkpt),
    // Refused by validate when more than one.
    ("Threads", Derived),
    ("SigQ", Derived),
    ("SigPnd", Restored),
    ("ShdPnd", Restored),
    ("SigBlk", Restored),
    ("SigIgn", Restored),
    ("SigCgt", Restored),
    ("CapInh", Restored),
    ("CapPrm", Restored),
    ("CapEff", Restored),
    ("CapBnd", Restored),
    ("CapAmb", Restored),
    ("NoNewPrivs", Restored),
    // Per thread, with the filters (seccomp.rs).
    ("Seccomp", Restored),
    ("Seccomp_filters", Restored),
    // PR_SET_SPECULATION_CTRL: no restore yet; the process inherits ckpt's.
    ("Speculation_Store_Bypass", SameAsCkpt),
    ("SpeculationIndirectBranch", SameAsCkpt),
    ("Cpus_allowed", Restored),
    ("Cpus_allowed_list", Restored),
    // The cpuset's memory nodes: the restored process lives in ckpt's cpuset.
    ("Mems_allowed", SameAsCkpt),
    ("Mems_allowed_list", SameAsCkpt),
    ("voluntary_ctxt_switches", Derived),
    ("nonvoluntary_ctxt_switches", Derived),
    // x86 user shadow stack (CONFIG_X86_USER_SHADOW_STACK): not restored.
    ("x86_Thread_features", SameAsCkpt),
    ("x86_Thread_features_locked", SameAsCkpt),
];

/// Every VmFlags letter of Linux 6.18 (fs/proc/task_mmu.c, show_smap_vma_flags).
pub const VM_FLAGS: &[(&str, Treatment)] = &[
    ("rd", Restored),
    ("wr", Restored),
    ("ex", Restored),
    ("sh", Restored),
    // may-read/write/exec/share: follow from the mapping's kind and the file's open mode.
    ("mr", Restored),
    ("mw", Restored),
    ("me", Restored),
    ("ms", Restored),
    ("gd", Restored),
    ("pf", Refused("a PFN (device) mapping")),
    ("lo", Restored),
    ("io", Refused("an I/O (device) mapping")),
    // MADV_SEQUENTIAL, MADV_RANDOM.
    ("sr", Restored),
    ("rr", Restored),
    // MADV_DONTFORK.
    ("dc", Restored),
    // Set by drivers and special mappings (the vDSO parts, dumped apart), never by madvise.
    (
        "de",
        Refused("a mapping that cannot be expanded (VM_DONTEXPAND: a driver's)"),
    ),
    ("lf", Restored),
    // Overcommit accounting of a private writable mapping: follows from how it was
    // mapped; restore maps VMAs with pages writable while it fills them, so a read-only
    // one may gain it. Not compared.
    ("ac", Derived),
    // MAP_NORESERVE.
    ("nr", Restored),
    ("ht", Refused("a hugetlb mapping")),
    ("sf", Refused("a MAP_SYNC (DAX) mapping")),
    // VM_ARCH_1 (x86: PAT, on PFN mappings).
    ("ar", Refused("an architecture-specific (PAT) mapping")),
    ("wf", Restored),
    ("dd", Restored),
    ("bt", Refused("an arm64 BTI mapping")),
    // Soft-dirty tracking bit: set on every new VMA; not the process's state.
    ("sd", Derived),
    ("mm", Refused("a mixed (driver) mapping")),
    ("hg", Restored),
    ("nh", Restored),
    ("mg", Restored),
    // userfaultfd registrations: the uffd itself is an fd ckpt refuses.
    ("um", Refused("registered with a userfaultfd")),
    (
        "uw",
        Refused("registered with a userfaultfd (write-protect)"),
    ),
    (
        "ui",
        Refused("registered with a userfaultfd (minor faults)"),
    ),
    ("mt", Refused("an arm64 MTE mapping")),
    ("ss", Refused("a shadow stack")),
    // MAP_DROPPABLE (6.11+).
    ("dp", Restored),
    ("sl", Refused("sealed (mseal); not supported yet")),
];

/// Names the user allowed with `--allow-unknown-state`.
#[derive(Debug, Clone, Default)]
pub struct Allowed(pub Vec<String>);

impl Allowed {
    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }
}

fn lookup(table: &[(&str, Treatment)], name: &str) -> Option<Treatment> {
    table.iter().find(|(n, _)| *n == name).map(|&(_, t)| t)
}

fn unknown(pid: Pid, what: &str, name: &str) -> DumpError {
    refuse(format!(
        "pid {pid}: {what} {name:?} is not known to this ckpt (a newer kernel's?) and would \
         not be restored; dump with --allow-unknown-state {name} to accept losing it"
    ))
}

/// Refuses a mapping with a VmFlags letter that is refused or unknown. The vDSO parts
/// and [vsyscall] are the kernel's own and not checked.
pub fn check_mapping(pid: Pid, m: &Mapping, allowed: &Allowed) -> Result<(), DumpError> {
    if crate::mm::VDSO_PARTS.contains(&m.name.as_str()) || m.name == "[vsyscall]" {
        return Ok(());
    }
    for f in &m.vm_flags {
        match lookup(VM_FLAGS, f) {
            Some(Refused(why)) => {
                return Err(refuse(format!(
                    "pid {pid}: mapping {:#x}-{:#x} {} is {why} (VmFlags {f}); not supported",
                    m.start,
                    m.end,
                    if m.name.is_empty() {
                        "(anonymous)"
                    } else {
                        &m.name
                    }
                )))
            }
            Some(_) => {}
            None if allowed.has(f) => {}
            None => {
                return Err(unknown(
                    pid,
                    &format!("VmFlags letter of mapping {:#x}-{:#x}", m.start, m.end),
                    f,
                ))
            }
        }
    }
    Ok(())
}

/// (field, value) of every line of a /proc/PID/status text.
pub fn status_lines(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k, v.trim()))
        .collect()
}

/// Checks every field of the task's status against the inventory; `own` is ckpt's own
/// /proc/self/status (what a restored process inherits).
pub fn check_status(pid: Pid, text: &str, own: &str, allowed: &Allowed) -> Result<(), DumpError> {
    let own = status_lines(own);
    for (k, v) in status_lines(text) {
        match lookup(STATUS_FIELDS, k) {
            // The namespaces a per-level list names are judged by `ns.rs` and `pidns.rs`.
            Some(Restored | Derived | PerLevel) => {}
            Some(Expect(want)) => {
                if v != want {
                    return Err(refuse(format!(
                        "pid {pid}: {k} is {v:?} in /proc/{pid}/status; only {want:?} is \
                         supported"
                    )));
                }
            }
            Some(SameAsCkpt) => {
                let mine = own.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
                if mine != Some(v) {
                    return Err(refuse(format!(
                        "pid {pid}: {k} is {v:?} (ckpt's own: {:?}); a restored process \
                         would have ckpt's value, and ckpt cannot set it",
                        mine.unwrap_or("absent")
                    )));
                }
            }
            Some(Refused(why)) => {
                return Err(refuse(format!("pid {pid}: {k}: {why}")));
            }
            None if allowed.has(k) => {}
            None => return Err(unknown(pid, "/proc/PID/status field", k)),
        }
    }
    Ok(())
}

/// Every check of this module on the stopped task: its status (`status`, the text of
/// /proc/PID/status as the caller read it) against ckpt's own, each mapping's VmFlags.
pub fn check_task(
    pid: Pid,
    status: &str,
    maps: &[Mapping],
    allowed: &Allowed,
) -> Result<(), DumpError> {
    check_status(pid, status, own_status()?, allowed)?;
    for m in maps {
        check_mapping(pid, m, allowed)?;
    }
    Ok(())
}

/// ckpt's own /proc/self/status, read once per run: the fields compared with it
/// (`SameAsCkpt`: speculation controls, memory nodes, x86 thread features) are set for
/// ckpt before it starts and do not change while it dumps, and every process of a tree
/// is compared with it.
fn own_status() -> Result<&'static str, DumpError> {
    static OWN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(own) = OWN.get() {
        return Ok(own);
    }
    let own = ckpt_sys::proc::read_trimmed("/proc/self/status")?;
    Ok(OWN.get_or_init(|| own))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(flags: &str) -> Mapping {
        let text = format!("5555-6666 rw-p 00000000 00:00 0 \nVmFlags: {flags}\n");
        ckpt_sys::proc::parse_smaps(&text).unwrap().remove(0)
    }

    /// A letter a newer kernel could add is refused by default, named with the override;
    /// allowed by name it passes. Known ones pass or are refused with their reason.
    #[test]
    fn unknown_vm_flag_is_refused_with_its_override() {
        let pid = Pid::from_raw(7);
        let none = Allowed::default();
        check_mapping(pid, &map("rd wr mr mw me ac sr nr dp"), &none).unwrap();
        let e = check_mapping(pid, &map("rd wr mr mw me zq"), &none)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pid 7") && e.contains("\"zq\"") && e.contains("--allow-unknown-state zq"),
            "{e}"
        );
        check_mapping(pid, &map("rd wr zq"), &Allowed(vec!["zq".into()])).unwrap();
        let e = check_mapping(pid, &map("rd wr sl"), &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sealed"), "{e}");
    }

    /// The same for a status field, and the SameAsCkpt / Expect / PerLevel checks.
    #[test]
    fn status_fields_are_checked() {
        let pid = Pid::from_raw(7);
        let none = Allowed::default();
        let own = "Name:\tckpt\nSpeculation_Store_Bypass:\tthread vulnerable\n";
        check_status(
            pid,
            "Name:\tx\nSpeculation_Store_Bypass:\tthread vulnerable\n",
            own,
            &none,
        )
        .unwrap();
        let e = check_status(
            pid,
            "Speculation_Store_Bypass:\tthread force mitigated\n",
            own,
            &none,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("Speculation_Store_Bypass") && e.contains("ckpt's own"),
            "{e}"
        );
        let e = check_status(pid, "Name:\tx\nFancyNewThing:\t1\n", own, &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--allow-unknown-state FancyNewThing"), "{e}");
        check_status(
            pid,
            "FancyNewThing:\t1\n",
            own,
            &Allowed(vec!["FancyNewThing".into()]),
        )
        .unwrap();
        check_status(pid, "NSpid:\t5 3 1\n", own, &none).unwrap();
        assert!(check_status(pid, "CoreDumping:\t1\n", own, &none).is_err());
    }

    /// This kernel's own status and smaps hold nothing the inventory does not know.
    #[test]
    fn this_kernel_is_fully_known() {
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        for (k, _) in status_lines(&own) {
            assert!(
                lookup(STATUS_FIELDS, k).is_some(),
                "status field {k} unknown"
            );
        }
        let me = nix::unistd::getpid();
        for m in ckpt_sys::proc::smaps(me).unwrap() {
            for f in &m.vm_flags {
                assert!(lookup(VM_FLAGS, f).is_some(), "VmFlags {f} unknown");
            }
        }
    }
}
