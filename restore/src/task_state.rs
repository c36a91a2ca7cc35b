//! Process-wide state set by injected calls: PR_SET_THP_DISABLE, PR_SET_CHILD_SUBREAPER
//! and the membarrier registrations (dump/src/task_state.rs reads them); the parent death
//! signal is set by the puppet's last batch, after the credentials (which clear it).

use crate::RestoreError;
use ckpt_images::pb;
use ckpt_sys::inject::Remote;

const PR_SET_CHILD_SUBREAPER: u64 = 36;
const PR_SET_THP_DISABLE: u64 = 41;
const PR_FUTEX_HASH: u64 = 78;
const PR_FUTEX_HASH_SET_SLOTS: u64 = 1;
const PR_FUTEX_HASH_GET_SLOTS: u64 = 2;
/// The MEMBARRIER_CMD_REGISTER_* commands, in the order they are issued again:
/// GLOBAL_EXPEDITED, PRIVATE_EXPEDITED, PRIVATE_EXPEDITED_SYNC_CORE,
/// PRIVATE_EXPEDITED_RSEQ.
pub const MEMBARRIER_REGISTER: [u32; 4] = [1 << 2, 1 << 4, 1 << 6, 1 << 8];

/// Refuses registration bits this restore does not know, and a parent death signal that
/// is no signal (checked at load).
pub fn check(core: &pb::ProcessCore) -> Result<(), String> {
    if !(0..=64).contains(&core.pdeath_signal) {
        return Err(format!(
            "parent death signal {} is no signal",
            core.pdeath_signal
        ));
    }
    let known = MEMBARRIER_REGISTER.iter().fold(0, |a, b| a | b);
    if core.membarrier_registrations & !known != 0 {
        return Err(format!(
            "membarrier registrations {:#x} include commands this ckpt does not know",
            core.membarrier_registrations
        ));
    }
    Ok(())
}

/// A root that asked for a signal at its parent's death (PR_SET_PDEATHSIG; LXC's init
/// does, SIGKILL) keeps it only as ckpt's sibling: its parent is then the one that started
/// ckpt (LXC's monitor, runc), which stays. As ckpt's child (or a new pid namespace
/// init's) the signal would come when ckpt exits, so such a restore is refused by name.
pub fn check_root(core: &pb::ProcessCore, sibling: bool) -> Result<(), RestoreError> {
    if core.pdeath_signal == 0 || sibling {
        return Ok(());
    }
    Err(RestoreError::Refused(format!(
        "pid {}: the root asked for signal {} at its parent's death (PR_SET_PDEATHSIG): \
         it is restored only as a sibling of ckpt (CRIU's --restore-sibling), whose parent \
         it then has; as ckpt's child it would get the signal when ckpt exits",
        core.pid, core.pdeath_signal
    )))
}

pub fn restore(remote: &mut Remote, core: &pb::ProcessCore) -> Result<(), RestoreError> {
    if core.thp_disable != 0 {
        // Bit 0 is "disabled"; the bits above are PR_SET_THP_DISABLE's flags (arg3).
        let flags = u64::from(core.thp_disable & !1);
        remote.syscall(
            || format!("prctl(PR_SET_THP_DISABLE, 1, {flags:#x})"),
            libc::SYS_prctl,
            &[PR_SET_THP_DISABLE, 1, flags, 0, 0],
        )?;
    }
    if core.child_subreaper {
        remote.syscall(
            || "prctl(PR_SET_CHILD_SUBREAPER, 1)".into(),
            libc::SYS_prctl,
            &[PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0],
        )?;
    }
    if core.futex_hash_slots != 0 {
        // Set, where the dumped one may have been made by the kernel when the process
        // had threads: the same size, which the kernel then no longer grows by itself
        // if the process makes threads again (a matter of speed only).
        let slots = u64::from(core.futex_hash_slots);
        remote.syscall(
            || format!("prctl(PR_FUTEX_HASH, PR_FUTEX_HASH_SET_SLOTS, {slots})"),
            libc::SYS_prctl,
            &[PR_FUTEX_HASH, PR_FUTEX_HASH_SET_SLOTS, slots, 0, 0],
        )?;
        let got = remote.syscall(
            || "prctl(PR_FUTEX_HASH, PR_FUTEX_HASH_GET_SLOTS)".into(),
            libc::SYS_prctl,
            &[PR_FUTEX_HASH, PR_FUTEX_HASH_GET_SLOTS, 0, 0, 0],
        )?;
        if got != slots {
            return Err(RestoreError::Refused(format!(
                "private futex hash: {got} slots after setting {slots}"
            )));
        }
    }
    for cmd in MEMBARRIER_REGISTER {
        if core.membarrier_registrations & cmd != 0 {
            remote.syscall(
                || format!("membarrier(register {cmd:#x})"),
                libc::SYS_membarrier,
                &[cmd as u64, 0, 0],
            )?;
        }
    }
    Ok(())
}
