//! Points of a dump where an outside caller is told what is happening and may veto it:
//! CRIU's notify scripts (`pre-dump`, `network-lock`, `post-dump`, `network-unlock`), which
//! runc and podman answer over the RPC socket when ckpt stands in for CRIU (the `ckpt-criu`
//! crate installs the hook). A dump runs once per process there, so one hook per process is
//! enough; a plain `ckpt dump` installs none and these calls do nothing.

use crate::{refuse, DumpError};
use std::sync::OnceLock;

/// Where the dump is, in CRIU's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Before anything is stopped.
    PreDump,
    /// The tree is stopped and its network will be locked (its own net namespace, or
    /// established connections taken along).
    NetworkLock,
    /// The images are complete; the tree is still stopped.
    PostDump,
    /// The tree was left running (or put back after a failure): its network may flow again.
    NetworkUnlock,
}

impl Stage {
    /// CRIU's name for the stage (the notify script argument).
    pub fn script(self) -> &'static str {
        match self {
            Stage::PreDump => "pre-dump",
            Stage::NetworkLock => "network-lock",
            Stage::PostDump => "post-dump",
            Stage::NetworkUnlock => "network-unlock",
        }
    }
}

/// The caller's answer to a stage: Err(reason) fails the dump (the tree is put back).
pub type Hook = Box<dyn Fn(Stage) -> Result<(), String> + Send + Sync>;

static HOOK: OnceLock<Hook> = OnceLock::new();

/// Installs the hook for this process's dumps; false if one was installed already.
pub fn install(hook: Hook) -> bool {
    HOOK.set(hook).is_ok()
}

pub(crate) fn run(stage: Stage) -> Result<(), DumpError> {
    match HOOK.get() {
        Some(h) => h(stage).map_err(|e| refuse(format!("{} notification: {e}", stage.script()))),
        None => Ok(()),
    }
}

/// Whether a hook wants to hear of stages at all (network stages are computed only then).
pub(crate) fn installed() -> bool {
    HOOK.get().is_some()
}

/// Whether `pid` is in another network namespace than ckpt.
pub(crate) fn own_net_namespace(pid: ckpt_sys::Pid) -> bool {
    let me = nix::unistd::getpid();
    ckpt_sys::ns::ns_id(pid, "net").ok() != ckpt_sys::ns::ns_id(me, "net").ok()
}
