//! Points of a restore where an outside caller is told what is happening and may veto it:
//! CRIU's notify scripts, in CRIU's order (`pre-restore`, `setup-namespaces`,
//! `post-setup-namespaces`, `post-restore`, `network-unlock`, `pre-resume`,
//! `post-resume`), which runc and podman answer over the RPC socket when ckpt stands in for
//! CRIU (the `ckpt-criu` crate installs the hook). One restore per process there, so one
//! hook per process; a plain `ckpt restore` installs none and these calls do nothing.

use crate::RestoreError;
use std::sync::OnceLock;

/// Where the restore is. The pid is the tree's root as the caller's pid namespace sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Before anything is created.
    PreRestore,
    /// The root exists in its namespaces and has not run.
    SetupNamespaces(i32),
    PostSetupNamespaces,
    /// Every process is rebuilt, still stopped.
    PostRestore(i32),
    NetworkUnlock,
    /// Just before the processes are let go.
    PreResume,
    /// They run.
    PostResume,
}

impl Stage {
    /// CRIU's name for the stage (the notify script argument).
    pub fn script(self) -> &'static str {
        match self {
            Stage::PreRestore => "pre-restore",
            Stage::SetupNamespaces(_) => "setup-namespaces",
            Stage::PostSetupNamespaces => "post-setup-namespaces",
            Stage::PostRestore(_) => "post-restore",
            Stage::NetworkUnlock => "network-unlock",
            Stage::PreResume => "pre-resume",
            Stage::PostResume => "post-resume",
        }
    }

    /// The pid CRIU sends with the stage (0 when none).
    pub fn pid(self) -> i32 {
        match self {
            Stage::SetupNamespaces(p) | Stage::PostRestore(p) => p,
            _ => 0,
        }
    }
}

/// Receives a container console's new master (CRIU's orphan-pts-master notification).
pub type MasterHook = Box<dyn Fn(std::os::fd::BorrowedFd<'_>) -> Result<(), String> + Send + Sync>;

static MASTER_HOOK: OnceLock<MasterHook> = OnceLock::new();

/// Installs the receiver of console masters; false if one was installed already.
pub fn install_master(hook: MasterHook) -> bool {
    MASTER_HOOK.set(hook).is_ok()
}

pub(crate) fn master_hook() -> Option<&'static MasterHook> {
    MASTER_HOOK.get()
}

/// The caller's answer: Err(reason) fails the restore (before the processes ran, it kills
/// what was created).
pub type Hook = Box<dyn Fn(Stage) -> Result<(), String> + Send + Sync>;

static HOOK: OnceLock<Hook> = OnceLock::new();

/// Installs the hook for this process's restores; false if one was installed already.
pub fn install(hook: Hook) -> bool {
    HOOK.set(hook).is_ok()
}

/// Whether a hook is installed (it may look at the tree as a whole at each stage).
pub(crate) fn installed() -> bool {
    HOOK.get().is_some()
}

pub(crate) fn run(stage: Stage) -> Result<(), RestoreError> {
    match HOOK.get() {
        Some(h) => h(stage)
            .map_err(|e| RestoreError::Refused(format!("{} notification: {e}", stage.script()))),
        None => Ok(()),
    }
}

/// post-restore, network-unlock and pre-resume: the tree is rebuilt and about to run.
pub(crate) fn before_resume(root: i32) -> Result<(), RestoreError> {
    run(Stage::PostRestore(root))?;
    run(Stage::NetworkUnlock)?;
    run(Stage::PreResume)
}
