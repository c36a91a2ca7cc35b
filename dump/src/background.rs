//! The copy of a pre-dump runs while the workload runs, on the same CPUs: it should take
//! what the workload leaves, not the other way round (issue: a pre-dump must not slow
//! the workload by more than 10%). The copying thread lowers its own nice value for the
//! copy; the writer thread it starts inherits it. The frozen part of a dump keeps the
//! caller's priority: there the workload waits for ckpt.

use ckpt_sys::process;
use nix::unistd::gettid;

/// The nice value of a copy made while the tree runs.
const COPY_NICE: i32 = 10;

/// Lowers the calling thread's priority until dropped.
pub struct Background {
    old: i32,
}

impl Background {
    /// `None` when the priority could not be read or changed: the copy then runs at the
    /// caller's priority, which is only slower for the workload.
    pub fn enter() -> Option<Background> {
        let old = process::get_nice(gettid()).ok()?;
        if old >= COPY_NICE {
            return None;
        }
        process::set_nice(COPY_NICE).ok()?;
        Some(Background { old })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Err(e) = process::set_nice(self.old) {
            tracing::debug!("nice value not restored: {e}");
        }
    }
}
