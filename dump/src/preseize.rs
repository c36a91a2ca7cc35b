//! Seizing a tree a cgroup v1 freezer holds. Its frozen tasks take PTRACE_SEIZE and
//! PTRACE_INTERRUPT but report no stop until the freezer thaws (shared notes); after the
//! thaw each one enters the interrupt's stop before it runs any user code. So, while it
//! is frozen, every thread of every process of the tree is seized and interrupted (the
//! tree cannot fork, exit or reap meanwhile: the listing is final), the freezer is
//! thawed, and the usual walk (`tree.rs`, `seize.rs`, `threads.rs`) then collects the
//! stops: for a task seized here it only waits ([`take`]).
//!
//! Whatever the walk does not take (it failed midway) is waited for and detached when
//! the [`PreSeized`] guard drops, so a failed dump leaves nothing traced.

use crate::freezer::Frozen;
use crate::DumpError;
use ckpt_sys::ptrace::{self, Stop};
use ckpt_sys::{proc, Pid};
use nix::errno::Errno;
use std::collections::HashSet;
use std::sync::Mutex;

/// Tasks seized and interrupted here whose stop nobody has collected yet.
static PENDING: Mutex<Option<HashSet<Pid>>> = Mutex::new(None);

fn pending() -> std::sync::MutexGuard<'static, Option<HashSet<Pid>>> {
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `tid` was seized and interrupted here: the caller only waits for its stop
/// (and owns it from then on).
pub fn take(tid: Pid) -> bool {
    pending().as_mut().is_some_and(|set| set.remove(&tid))
}

/// Whether `tid` was seized here and its stop not collected yet (it is traced by ckpt,
/// not by another process).
pub fn is_pending(tid: Pid) -> bool {
    pending().as_ref().is_some_and(|set| set.contains(&tid))
}

/// The tasks seized while frozen; those not taken by the walk are detached on drop.
pub struct PreSeized {
    tids: Vec<Pid>,
}

/// Seizes and interrupts every thread of `root` and its descendants in the frozen v1
/// freezer, then thaws it (also when the seize fails: the stops must come for the tasks
/// to be detached).
pub fn preseize(root: Pid, frozen: Frozen) -> Result<PreSeized, DumpError> {
    let mut guard = PreSeized { tids: Vec::new() };
    let walked = walk(root, &mut guard);
    frozen.thaw()?;
    walked?;
    tracing::debug!(
        tasks = guard.tids.len(),
        "seized and interrupted while frozen (v1)"
    );
    Ok(guard)
}

fn walk(root: Pid, guard: &mut PreSeized) -> Result<(), DumpError> {
    let mut queue = vec![root];
    let mut seen = HashSet::from([root]);
    while let Some(pid) = queue.pop() {
        if crate::tree::is_dying(pid) {
            // A zombie: nothing to seize, no children to list.
            continue;
        }
        for tid in proc::tasks(pid)? {
            if proc::stat(tid).is_ok_and(|s| matches!(s.state, 'Z' | 'X')) {
                continue;
            }
            match ptrace::seize(tid, crate::threads::options()) {
                Ok(()) => {}
                Err(e) if e.errno() == Some(Errno::ESRCH) => continue,
                Err(e) => return Err(e.into()),
            }
            guard.tids.push(tid);
            pending().get_or_insert_with(HashSet::new).insert(tid);
            ptrace::interrupt(tid)?;
        }
        for c in crate::tree::children(pid)? {
            if seen.insert(c) {
                queue.push(c);
            }
        }
    }
    Ok(())
}

impl Drop for PreSeized {
    fn drop(&mut self) {
        let _finish = ckpt_sys::abort::Shield::new();
        let left: Vec<Pid> = {
            let mut set = pending();
            let set = set.get_or_insert_with(HashSet::new);
            self.tids
                .iter()
                .copied()
                .filter(|t| set.remove(t))
                .collect()
        };
        for tid in left {
            if let Err(e) = let_go(tid) {
                tracing::warn!(%tid, "could not detach a task seized while frozen: {e}");
            }
        }
    }
}

/// Waits for the stop of a task seized while frozen (thawed, it comes before the task
/// runs anything) and detaches it; a signal met on the way is passed on.
fn let_go(tid: Pid) -> Result<(), DumpError> {
    for _ in 0..64 {
        match ptrace::wait(tid)? {
            Stop::Exited(_) | Stop::Killed(_) => return Ok(()),
            Stop::Signal(sig) => {
                ptrace::cont(tid, nix::sys::signal::Signal::try_from(sig).ok())?;
            }
            _ => {
                ptrace::detach(tid)?;
                return Ok(());
            }
        }
    }
    Err(DumpError::Lost(format!(
        "pid {tid}: no stop after 64 signals"
    )))
}
