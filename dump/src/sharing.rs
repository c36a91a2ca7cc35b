//! Processes that share what fork would have copied: an fd table (CLONE_FILES), a
//! cwd/root/umask (CLONE_FS), an address space (CLONE_VM) or signal handlers
//! (CLONE_SIGHAND) without being threads of one another. Restore makes every process
//! with its own, so such a pair would come back as two strangers (an fd opened by one
//! unseen by the other): refused by name instead. kcmp orders the objects, so sorting the
//! tree's processes by each kind finds the sharers side by side in n log n calls.

use crate::blockers::Blockers;
use crate::DumpError;
use ckpt_sys::process::{kcmp_order, Shared};
use ckpt_sys::Pid;

/// Adds a blocker for each pair of `pids` (process leaders) sharing one of the objects.
/// A process that is gone by now (an exiting member) is skipped.
pub fn blockers(pids: &[Pid], out: &mut Blockers) {
    let kinds = [
        (Shared::Vm, "its address space (CLONE_VM)"),
        (Shared::Sighand, "its signal handlers (CLONE_SIGHAND)"),
        (Shared::Files, "its fd table (CLONE_FILES)"),
        (Shared::Fs, "its cwd, root and umask (CLONE_FS)"),
    ];
    if pids.len() < 2 {
        return;
    }
    for (kind, what) in kinds {
        // A member that exited meanwhile has nothing left to share (and kcmp fails on it).
        let mut sorted: Vec<Pid> = pids
            .iter()
            .copied()
            .filter(|&p| kcmp_order(p, p, kind).is_ok())
            .collect();
        sorted.sort_by(|&a, &b| kcmp_order(a, b, kind).unwrap_or(std::cmp::Ordering::Equal));
        for w in sorted.windows(2) {
            if kcmp_order(w[0], w[1], kind).ok() == Some(std::cmp::Ordering::Equal) {
                let (a, b) = (w[0].min(w[1]), w[0].max(w[1]));
                out.push(
                    b,
                    format!("shares {what} with pid {a}"),
                    "processes sharing it are not supported: each would be restored with its own",
                );
            }
        }
    }
}

/// `blockers` for a stopped tree: refused if any.
pub fn refuse_shared(pids: &[Pid], root: Pid) -> Result<(), DumpError> {
    let mut out = Blockers::default();
    blockers(pids, &mut out);
    out.refuse_if_any(root)
}
