//! SIGINT, SIGTERM and SIGHUP turned into an orderly abort of a dump or a restore.
//!
//! Dying at once in the middle of a dump leaves the workload with whatever ckpt had
//! changed in it (registers, a blocked mask, a scratch page); dying in the middle of a
//! restore can leave a half-built seed. While `arm`ed, the first of these signals only
//! records itself; the work checks [`check`] at points where stopping is clean (the
//! target in a ptrace-stop, between batches), returns an error and its cleanup guards
//! put everything back. A second signal kills ckpt at once, as before.
//!
//! The handler has no SA_RESTART, so the first signal also makes a blocking waitpid of the
//! main thread return EINTR: [`crate::ptrace::wait_interruptible`] gives up there.
//! Cleanup code that must run to the end whatever happens holds a [`Shield`].

use crate::error::{Error, Result};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::Mutex;

const SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

static ARMED: AtomicBool = AtomicBool::new(false);
/// The first signal received while armed (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// The abort was reported by `check` (so it is not raised again at disarm).
static REPORTED: AtomicBool = AtomicBool::new(false);
static SHIELDS: AtomicUsize = AtomicUsize::new(0);
/// Bit per signal of `SIGNALS` whose handler we installed (ignored ones are left alone).
static INSTALLED: AtomicI32 = AtomicI32::new(0);
/// What the work is doing now, for the error line ("interrupted by SIGHUP while copying
/// memory"): a test can tell from it where its signal landed.
static PHASE: Mutex<&str> = Mutex::new("");

extern "C" fn on_signal(sig: libc::c_int) {
    if RECEIVED
        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        // The second one: die of it. All three are blocked while a handler runs (sa_mask),
        // so the raise takes effect when this handler returns, with the default action.
        // SAFETY: signal(2) and raise(3) are async-signal-safe and take no pointers.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
}

/// Until the returned guard is dropped (or [`disarm`]), SIGINT/SIGTERM/SIGHUP request an
/// abort instead of killing ckpt. A signal that ckpt inherited as ignored (nohup) stays
/// ignored.
pub fn arm() -> Result<Armed> {
    let mut mask = SigSet::empty();
    for s in SIGNALS {
        mask.add(s);
    }
    let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::empty(), mask);
    RECEIVED.store(0, Ordering::SeqCst);
    REPORTED.store(false, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    for (i, s) in SIGNALS.into_iter().enumerate() {
        // SAFETY: the handler only does atomic operations and async-signal-safe calls.
        let old = unsafe { sigaction(s, &action) }
            .map_err(|e| Error::sys(format!("sigaction({s})"), e))?;
        if old.handler() == SigHandler::SigIgn {
            // SAFETY: putting back the ignored disposition we found.
            unsafe { sigaction(s, &old) }.map_err(|e| Error::sys(format!("sigaction({s})"), e))?;
        } else {
            INSTALLED.fetch_or(1 << i, Ordering::SeqCst);
        }
    }
    Ok(Armed(()))
}

/// Armed until dropped.
#[must_use = "dropping it disarms at once"]
pub struct Armed(());

impl Drop for Armed {
    fn drop(&mut self) {
        disarm();
    }
}

/// Back to the default actions. A signal that arrived but was never acted on (it came
/// during a shielded end, or after the last check) is raised again now, with its default
/// action: ckpt then dies of it, with the work done.
pub fn disarm() {
    if !ARMED.swap(false, Ordering::SeqCst) {
        return;
    }
    let installed = INSTALLED.swap(0, Ordering::SeqCst);
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for (i, s) in SIGNALS.into_iter().enumerate() {
        if installed & (1 << i) != 0 {
            // SAFETY: restoring the default disposition installs no handler.
            let _ = unsafe { sigaction(s, &dfl) };
        }
    }
    let sig = RECEIVED.load(Ordering::SeqCst);
    if sig != 0 && !REPORTED.load(Ordering::SeqCst) {
        if let Ok(s) = Signal::try_from(sig) {
            tracing::info!("{s} received earlier: exiting now");
            let _ = nix::sys::signal::raise(s);
        }
    }
}

/// The signal that asked for an abort, if any (ignoring shields).
pub fn requested() -> Option<Signal> {
    if !ARMED.load(Ordering::SeqCst) {
        return None;
    }
    Signal::try_from(RECEIVED.load(Ordering::SeqCst)).ok()
}

/// Names what the work does from now on (e.g. "copying memory"), for the message of
/// [`check`].
pub fn phase(what: &'static str) {
    *PHASE.lock().unwrap_or_else(|e| e.into_inner()) = what;
}

/// An error if an abort was requested and no [`Shield`] is held: call it where stopping is
/// clean.
pub fn check() -> Result<()> {
    if SHIELDS.load(Ordering::SeqCst) != 0 {
        return Ok(());
    }
    match requested() {
        Some(s) => {
            REPORTED.store(true, Ordering::SeqCst);
            let phase = *PHASE.lock().unwrap_or_else(|e| e.into_inner());
            let during = if phase.is_empty() {
                String::new()
            } else {
                format!(" while {phase}")
            };
            Err(Error::Other(format!("interrupted by {s}{during}")))
        }
        None => Ok(()),
    }
}

/// While held, [`check`] passes: for cleanup that must finish (putting a workload back,
/// killing a half-built process).
pub struct Shield(());

impl Shield {
    pub fn new() -> Shield {
        SHIELDS.fetch_add(1, Ordering::SeqCst);
        Shield(())
    }
}

impl Default for Shield {
    fn default() -> Self {
        Shield::new()
    }
}

impl Drop for Shield {
    fn drop(&mut self) {
        SHIELDS.fetch_sub(1, Ordering::SeqCst);
    }
}
